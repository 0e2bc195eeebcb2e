"""Our steps in nbgrader's autograde pipeline (``Autograde.autograde_preprocessors``).

- :class:`GradingExecute` is nbgrader's ``Execute`` with the kernel started in grading mode (and the
  hidden seed in its environment): the kernel emits raw outputs, it judges nothing.
- :class:`VerifyChecks` runs right after it, in the grader's process: it reads the check bundles of
  every test cell, judges them against the hidden references from the instructor store, removes the
  bundles from the notebook, and rewrites each test cell's outputs so that stock nbgrader scores it
  (error -> 0, ``execute_result`` number -> partial credit, plain text -> full marks).

The course's ``nbgrader_config.py`` puts both in the pipeline, so any autograde of this course (the
``interplab grade`` command, stock ``nbgrader autograde``, the formgrader's button) is tamper-proof.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat
from nbclient.exceptions import DeadKernelError
from nbformat import NotebookNode
from nbgrader.preprocessors import Execute, NbGraderPreprocessor
from traitlets import Bool, Enum, Integer, Unicode

from interplab.checking import (
    BUNDLE_MIME, FORMAT_VERSION, RESULT_MIME, Exercise, MalformedData, Verdict, exercises_in, judge,
)
from interplab.autograder.sandbox import SandboxedKernelManager, SandboxPolicy, probe
from interplab.autograder.store import Store

CHECKS_FILE = "checks.py"


def grading_env(seed: int, base: dict[str, str] | None = None) -> dict[str, str]:  # noqa: D401
    """The environment of a grading kernel: grading mode and the hidden seed, nothing pointing at
    instructor files."""
    env = dict(os.environ if base is None else base)
    env.pop("INTERPLAB_ASSIGNMENT_DIR", None)
    env.update({"INTERPLAB_MODE": "grading", "INTERPLAB_HIDDEN_SEED": str(seed), "HF_HUB_OFFLINE": "1"})
    # One thread per kernel: the executor already runs one kernel per core, and oversubscribed
    # BLAS threads make cells many times slower on a busy machine.
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env.setdefault(var, "1")
    return env


def course_root_of(config: Any) -> Path:
    root = config.get("CourseDirectory", {}).get("root") if config is not None else None
    return Path(root) if root else Path.cwd()


class GradingExecute(Execute):
    """nbgrader's Execute, with the kernel in grading mode for the assignment being graded.

    Beyond stock Execute: a per-notebook time limit, a cap on the output a cell may produce (check
    results are always kept), a dead kernel ends the run with a clear error in the cell it died in
    and "not run" in the cells after it, and, when ``replay_dir`` (or ``$INTERPLAB_EXECUTION_CACHE``)
    holds an execution of exactly this sanitized notebook done by the parallel executor, its outputs
    are used instead of running the notebook again."""

    notebook_timeout = Integer(900, help="seconds for the whole notebook").tag(config=True)
    max_cell_output_bytes = Integer(2_000_000, help="output kept per cell (check results always kept)").tag(config=True)
    replay_dir = Unicode("", help="cache of executions made by `interplab grade`'s executors").tag(config=True)

    fork_server = Bool(True, help="fork kernels from a warm sandboxed server (autograder/forkserver.py)").tag(config=True)
    # A grading kernel gets no grace period to run its atexit hooks once the last cell is done: the
    # sandbox is torn down at once (saves ~0.2 s of idle waiting per notebook).
    shutdown_kernel = Enum(["graceful", "immediate"], default_value="immediate").tag(config=True)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Every grading kernel runs in the sandbox (autograder/sandbox.py): own uid, no network,
        # limits, only its working directory visible. Where a protection is unavailable the
        # sandbox says so loudly and grading goes on.
        chosen = "kernel_manager_class" in kwargs
        super().__init__(*args, **kwargs)
        if not chosen:
            settings = self.config.get("SandboxedKernelManager", {}).get("grading_settings", {})
            self.kernel_manager_class = kernel_manager_for(settings, self.fork_server, self.log)

    def preprocess(self, nb: NotebookNode, resources: dict[str, Any], *args: Any, **kwargs: Any):
        nbg = resources["nbgrader"]
        replay = self.replay_dir or os.environ.get("INTERPLAB_EXECUTION_CACHE", "")
        if replay:
            cached = load_execution(Path(replay), nbg["student"], nbg["notebook"], nb)
            if cached is not None:
                self.log.info("Using the execution made by the grading executor for %s", nbg["student"])
                for cell, done in zip(nb.cells, cached.cells):
                    if cell.cell_type == "code":
                        cell.outputs, cell.execution_count = done.get("outputs", []), done.get("execution_count")
                return nb, resources
        seed = resources.get("interplab", {}).get("seed")
        fresh = None
        if seed is None:  # run by stock `nbgrader autograde` on the course, not by our executors
            root = course_root_of(self.config)
            seed = Store(root).seed(nbg["assignment"], create=False)
            fresh = fresh_workdir(root, nbg["assignment"])
            resources = {**resources, "metadata": {**resources.get("metadata", {}), "path": fresh.name}}
        self._kernel_env = grading_env(seed, resources.get("interplab", {}).get("env"))
        self._cell_index = -1
        self._cell_bytes: dict[int, int] = {}
        self._timed_out = False
        timer = threading.Timer(self.notebook_timeout, self._notebook_time_up)
        timer.daemon = True
        timer.start()
        try:
            super().preprocess(nb, resources, *args, **kwargs)
        except DeadKernelError:
            self._mark_dead(nb)
        finally:
            timer.cancel()
            if fresh is not None:
                fresh.cleanup()
        return nb, resources

    def start_new_kernel(self, **kwargs: Any) -> None:
        kwargs["env"] = self._kernel_env
        super().start_new_kernel(**kwargs)

    def preprocess_cell(self, cell: NotebookNode, resources: dict[str, Any], index: int):
        self._cell_index = index
        if self._timed_out:
            raise DeadKernelError("notebook time limit reached")
        return super().preprocess_cell(cell, resources, index)

    def _notebook_time_up(self) -> None:
        self._timed_out = True
        process = getattr(getattr(self.km, "provisioner", None), "process", None)
        if process is not None:
            process.kill()

    def _mark_dead(self, nb: NotebookNode) -> None:
        if self._timed_out:
            why = f"the notebook ran longer than its time limit ({self.notebook_timeout} s) and was stopped"
        else:
            why = "the kernel died (out of memory, a process limit, or the code exited or killed it)"
        for index, cell in enumerate(nb.cells):
            if cell.cell_type != "code" or index < self._cell_index:
                continue
            text = why if index == self._cell_index else f"not run: {why} in an earlier cell"
            cell.outputs = [o for o in cell.get("outputs", []) if index == self._cell_index]
            cell.outputs.append(NotebookNode(output_type="error", ename="KernelDied", evalue=text,
                                             traceback=[f"KernelDied: {text}"]))

    def output(self, outs: list[NotebookNode], msg: dict[str, Any], display_id: str | None, cell_index: int):
        content = msg.get("content", {})
        if BUNDLE_MIME in content.get("data", {}):
            return super().output(outs, msg, display_id, cell_index)
        size = len(str(content.get("text", ""))) + sum(len(str(v)) for v in content.get("data", {}).values())
        used = self._cell_bytes.get(cell_index, 0)
        self._cell_bytes[cell_index] = used + size
        if used + size <= self.max_cell_output_bytes:
            return super().output(outs, msg, display_id, cell_index)
        if used <= self.max_cell_output_bytes:
            outs.append(NotebookNode(output_type="stream", name="stdout",
                                     text=f"\n[output truncated: more than {self.max_cell_output_bytes} bytes]\n"))
        return None


FORK_SERVER_MIN_MEMORY = 3 * 2**30  # a forked kernel inherits ~1.6 GiB of preloaded modules


def kernel_manager_for(settings: dict[str, Any], want_fork: bool, log: Any = None) -> type:
    """The fork-server kernel manager where it can give the same protections (root, bubblewrap,
    setpriv, memory for the preloaded modules), else the plain sandbox, saying why."""
    if not want_fork:
        return SandboxedKernelManager
    caps = probe()
    policy = SandboxPolicy.from_settings(settings)
    missing = [name for name, ok in (("root", caps.root), ("bubblewrap", caps.bwrap), ("setpriv", caps.setpriv),
                                     ("memory_limit >= 3GiB", policy.memory >= FORK_SERVER_MIN_MEMORY)) if not ok]
    if missing:
        if log is not None:
            log.warning("fork server off (needs %s): every kernel starts from scratch", ", ".join(missing))
        return SandboxedKernelManager
    from interplab.autograder.forkserver import ForkServerKernelManager

    return ForkServerKernelManager


def fresh_workdir(course_root: Path, assignment: str) -> tempfile.TemporaryDirectory:
    """A new folder holding only the assignment's released files (the instructor's copies): a
    grading kernel never runs inside the course directory."""
    fresh = tempfile.TemporaryDirectory(prefix=f"interplab-{assignment}-")
    source = Path(course_root) / "source" / assignment
    for path in source.rglob("*"):
        if path.is_file() and path.suffix != ".ipynb" and "__pycache__" not in path.parts:
            target = Path(fresh.name) / path.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
    return fresh


def execution_key(nb: NotebookNode) -> str:
    """What a cached execution must match: the sanitized cells' types and sources, in order."""
    digest = hashlib.sha256()
    for cell in nb.cells:
        digest.update(cell.get("cell_type", "").encode() + b"\0" + cell.get("source", "").encode() + b"\1")
    return digest.hexdigest()


def execution_path(cache: Path, student: str, notebook: str) -> Path:
    return cache / student / f"{notebook}.ipynb"


def load_execution(cache: Path, student: str, notebook: str, sanitized: NotebookNode) -> NotebookNode | None:
    path = execution_path(cache, student, notebook)
    if not path.is_file():
        return None
    try:
        done = nbformat.reads(path.read_text(), as_version=4)
    except Exception:
        return None
    if done.metadata.get("interplab", {}).get("execution_key") != execution_key(sanitized):
        return None
    return done


class VerifyChecks(NbGraderPreprocessor):
    """Judge the check bundles against hidden references, outside the student's kernel."""

    checks_path = Unicode(
        "", help="checks.py to judge with (default: the course's source/<assignment>/checks.py)"
    ).tag(config=True)

    def preprocess(self, nb: NotebookNode, resources: dict[str, Any]):
        assignment = resources["nbgrader"]["assignment"]
        root = course_root_of(self.config)
        references = Store(root).load_references(assignment)
        checks = Path(self.checks_path) if self.checks_path else root / "source" / assignment / CHECKS_FILE
        results = verify_notebook(nb, references, exercises_in(checks))
        for result in results:
            self.log.info("%s: %s/%s", result.grade_id, result.score, result.points)
        return nb, resources


@dataclass
class CellResult:
    grade_id: str
    points: float
    score: float
    verdicts: list[Verdict] = field(default_factory=list)


def _is_test_cell(cell: NotebookNode) -> bool:
    meta = cell.get("metadata", {}).get("nbgrader", {})
    return cell.get("cell_type") == "code" and bool(meta.get("grade")) and not meta.get("solution")


def _kernel_error(outputs: list[Any]) -> str:
    for output in outputs:
        if output.get("output_type") == "error":
            return f"{str(output.get('ename', 'Error'))[:80]}: {str(output.get('evalue', ''))[:300]}"
    return ""


def _valid_bundle(bundle: Any) -> bool:
    return (isinstance(bundle, dict) and bundle.get("version") == FORMAT_VERSION
            and isinstance(bundle.get("exercise"), str) and isinstance(bundle.get("outputs"), dict))


def judge_cell(exercise_ids: list[str], bundles: list[Any], exercises: dict[str, Exercise],
               references: dict[str, Any], kernel_error: str) -> list[Verdict]:
    """One verdict per exercise the test cell checks. A missing, malformed or duplicated bundle
    gives 0 for that exercise."""
    verdicts = []
    for exercise_id in exercise_ids:
        mine = [b for b in bundles if isinstance(b, dict) and b.get("exercise") == exercise_id]
        exercise = exercises[exercise_id]
        if not mine:
            why = f" (the test cell raised {kernel_error})" if kernel_error else ""
            verdicts.append(Verdict(exercise_id, False, 0.0, f"no check result{why}"))
            continue
        if len(mine) > 1:
            verdicts.append(Verdict(exercise_id, False, 0.0, "the check result appeared more than once, so none counts"))
            continue
        bundle = mine[0]
        ref = references["exercises"][exercise_id]
        try:
            if not _valid_bundle(bundle):
                raise MalformedData("bad bundle header")
            verdict = judge(exercise, bundle["outputs"], {"public": ref["public"], "hidden": ref["hidden"]},
                            ref.get("probes", {}), scored_split="hidden")
        except (MalformedData, KeyError, TypeError, ValueError) as exc:
            verdict = Verdict(exercise_id, False, 0.0, f"malformed check result ({str(exc)[:200]})")
        verdicts.append(verdict)
    return verdicts


def render_outputs(verdicts: list[Verdict], points: float, execution_count: int | None) -> tuple[list[NotebookNode], float]:
    """The test cell's new outputs, in the form stock nbgrader scores, and the score they mean."""
    fraction = sum(v.fraction for v in verdicts) / len(verdicts) if verdicts else 0.0
    score = round(points * fraction, 4)
    lines = []
    for v in verdicts:
        if v.passed:
            lines.append(f"\u2714 {v.exercise}: passed")
        else:
            lines.append(f"\u2718 {v.exercise}: {v.message} (credit {v.fraction:.0%})")
    text = "\n".join(lines)
    if verdicts and all(v.passed for v in verdicts):
        return [NotebookNode(output_type="stream", name="stdout", text=text + "\n")], points
    if score <= 0:
        return [NotebookNode(output_type="error", ename="CheckFailed", evalue=text,
                             traceback=[f"CheckFailed: {line}" for line in lines])], 0.0
    return [
        NotebookNode(output_type="stream", name="stdout", text=text + "\n"),
        NotebookNode(output_type="execute_result", execution_count=execution_count, metadata={},
                     data={"text/plain": f"{score}"}),
    ], score


def verify_notebook(nb: NotebookNode, references: dict[str, Any], exercises: dict[str, Exercise]) -> list[CellResult]:
    """Judge every test cell of an executed grading-mode notebook and rewrite its outputs in place.

    Check bundles are removed from every cell (they hold the student's outputs on hidden inputs,
    which for a correct answer equal hidden reference values, so they must not reach feedback).
    Each test cell's verdicts are kept in its metadata (``interplab.verdicts``) for the feedback's
    table of exercises."""
    cells_map: dict[str, list[str]] = references["cells"]
    results = []
    for cell in nb.cells:
        cell.get("metadata", {}).pop("interplab", None)  # verdicts come from here only, never from the submission
        if cell.get("cell_type") != "code":
            continue
        outputs = list(cell.get("outputs", []))
        bundles = [o["data"][BUNDLE_MIME] for o in outputs
                   if o.get("output_type") in ("display_data", "execute_result") and BUNDLE_MIME in o.get("data", {})]
        cell.outputs = [o for o in outputs if not (o.get("output_type") in ("display_data", "execute_result")
                                                   and ({BUNDLE_MIME, RESULT_MIME} & set(o.get("data", {}))))]
        if not _is_test_cell(cell):
            continue
        meta = cell.metadata.nbgrader
        grade_id = meta.get("grade_id")
        if grade_id not in cells_map:
            continue
        points = float(meta.get("points", 0))
        verdicts = judge_cell(cells_map[grade_id], bundles, exercises, references, _kernel_error(outputs))
        cell.outputs, score = render_outputs(verdicts, points, cell.get("execution_count"))
        cell.metadata["interplab"] = {"verdicts": verdict_records(verdicts, points)}
        results.append(CellResult(grade_id, points, score, verdicts))
    return results


def verdict_records(verdicts: list[Verdict], points: float) -> list[dict[str, Any]]:
    """What the feedback's table shows of each exercise of a test cell (its points split evenly)."""
    share = points / len(verdicts) if verdicts else 0.0
    return [{"exercise": v.exercise, "points": round(share, 4), "score": round(share * v.fraction, 4),
             "passed": v.passed, "message": v.message, "mistake": v.mistake} for v in verdicts]
