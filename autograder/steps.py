"""Our steps in nbgrader's autograde pipeline (``Autograde.autograde_preprocessors``).

- :class:`ReplayExecution` puts in the outputs of the execution ``interplab grade``'s executors
  already made of exactly this notebook (``cache.ExecutionCache``), if any, so the next step skips it.
- :class:`GradingExecute` is nbgrader's ``Execute`` with the kernel started in grading mode (and the
  student's hidden seed in its environment): the kernel emits raw outputs, it judges nothing.
- :class:`VerifyChecks` runs right after it, in the grader's process: it reads the check bundles of
  every test cell, judges them against the student's hidden references (``cache.ReferenceCache``), removes the
  bundles from the notebook, and rewrites each test cell's outputs so that stock nbgrader scores it
  (error -> 0, ``execute_result`` number -> partial credit, plain text -> full marks).

The course's ``nbgrader_config.py`` puts both in the pipeline, so any autograde of this course (the
``interplab grade`` command, stock ``nbgrader autograde``, the formgrader's button) is tamper-proof.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from queue import Empty
from typing import Any, Sequence

from nbclient.exceptions import CellExecutionComplete, DeadKernelError
from nbformat import NotebookNode
from nbgrader.preprocessors import Execute, NbGraderPreprocessor
from traitlets import Enum, Unicode

from interplab.autograder import verdicts as verdict_log
from interplab.autograder.cache import ExecutionCache, ReferenceCache
from interplab.autograder.executors import run_problem
from interplab.autograder.notebooks import is_released_file, is_test_cell
from interplab.autograder.sandbox import OutputBudget, SandboxPolicy, kernel_manager_for
from interplab.autograder.store import Store
from interplab.checking import (
    BUNDLE_MIME,
    CHECKS_FILE,
    FORMAT_VERSION,
    RESULT_MIME,
    Exercise,
    MalformedData,
    Verdict,
    exercises_in,
    judge,
)


def grading_env(seed: int | Sequence[int], base: dict[str, str] | None = None, mode: str = "grading") -> dict[str, str]:
    """The environment of a grading kernel: grading (or, for students' references, reference) mode
    and the hidden seed (reference mode: one or several), nothing pointing at instructor files."""
    env = dict(os.environ if base is None else base)
    env.pop("INTERPLAB_ASSIGNMENT_DIR", None)
    seeds = ",".join(str(s) for s in ([seed] if isinstance(seed, int) else seed))
    env.update({"INTERPLAB_MODE": mode, "INTERPLAB_HIDDEN_SEED": seeds, "HF_HUB_OFFLINE": "1"})
    # One thread per kernel: the executor already runs one kernel per core, and oversubscribed
    # BLAS threads make cells many times slower on a busy machine.
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env.setdefault(var, "1")
    return env


def course_root_of(config: Any) -> Path:
    root = config.get("CourseDirectory", {}).get("root") if config is not None else None
    return Path(root) if root else Path.cwd()


class KernelStartError(RuntimeError):
    """The grading kernel could not be started (sandbox, bwrap or fork server): an infrastructure
    failure, never the student's score."""


class GradingExecute(Execute):
    """nbgrader's Execute, with the kernel in grading mode for the assignment being graded.

    Beyond stock Execute: the limits of the course's policy (``SandboxedKernelManager.grading_settings``,
    course.toml's ``[grading]``): a per-cell and a per-notebook time limit and the output budget
    (autograder/sandbox/output.py: the kernel is stopped at a cap); a dead or stopped kernel ends
    the run with a clear error in the cell it broke in and "not run" in the cells after it. A
    notebook :class:`ReplayExecution` filled is not run.

    A cell's outputs may arrive long after its reply on a loaded grading machine (the kernel's iopub
    thread waits for a core): stock Execute gives them 4 s and then ends the whole run, which would
    zero every later exercise of a correct submission. Here they get the cell's time limit; only a
    dropped iopub connection (a message over every cap) ends the wait at once."""

    # A grading kernel gets no grace period to run its atexit hooks once the last cell is done: the
    # sandbox is torn down at once (saves ~0.2 s of idle waiting per notebook).
    shutdown_kernel = Enum(["graceful", "immediate"], default_value="immediate").tag(config=True)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Every grading kernel runs in the sandbox (autograder/sandbox/): own uid, no network,
        # limits, only its working directory visible.
        chosen = "kernel_manager_class" in kwargs
        super().__init__(*args, **kwargs)
        self.policy = SandboxPolicy.from_settings(self.config.get("SandboxedKernelManager", {}).get("grading_settings", {}))
        self.timeout = self.iopub_timeout = self.policy.cell_timeout
        if not chosen:
            self.kernel_manager_class = kernel_manager_for(self.policy, self.log)

    @property
    def started_cells(self) -> bool:
        """Whether the kernel became ready and a cell started (else a failure is not the student's)."""
        return getattr(self, "_cell_index", -1) >= 0

    def preprocess(self, nb: NotebookNode, resources: dict[str, Any], *args: Any, **kwargs: Any):
        nbg = resources["nbgrader"]
        ours = resources.get("interplab", {})
        if ours.get("replayed"):
            return nb, resources
        seed = ours.get("seed")
        fresh = None
        if seed is None:  # run by stock `nbgrader autograde` on the course, not by our executors
            root = course_root_of(self.config)
            seed = Store(root).seed(nbg["assignment"], nbg["student"])
            fresh = fresh_workdir(root, nbg["assignment"])
            resources = {**resources, "metadata": {**resources.get("metadata", {}), "path": fresh.name}}
        self._kernel_env = grading_env(seed, ours.get("env"), ours.get("mode", "grading"))
        self._cell_index = -1
        self._budget = OutputBudget(self.policy)
        self._stopped: str | None = None
        timer = threading.Timer(self.policy.notebook_timeout, self._stop,
                                (f"the notebook ran longer than its time limit ({self.policy.notebook_timeout} s) "
                                 "and was stopped",))
        timer.daemon = True
        timer.start()
        try:
            super().preprocess(nb, resources, *args, **kwargs)
        except DeadKernelError as exc:
            if self._cell_index < 0 and not self._stopped:  # no student code ran: not the student's doing
                raise KernelStartError(f"the grading kernel died before running any cell ({exc})") from exc
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
        if self._stopped:
            raise DeadKernelError(self._stopped)
        result = super().preprocess_cell(cell, resources, index)
        if self.kc is not None and self.kc.dropped():  # zmq refused a message larger than every cap: iopub is lost
            self._stop(self._budget.message_too_large(index))
        if self._stopped:
            raise DeadKernelError(self._stopped)
        return result

    async def _async_poll_output_msg(self, parent_msg_id: str, cell: NotebookNode, cell_index: int) -> None:
        """nbclient's collection of a cell's outputs (nbclient 0.11, pinned), which also ends when the
        iopub connection was dropped: no idle status will come, and :meth:`preprocess_cell` stops
        the kernel."""
        while True:
            try:
                msg = await self.kc.iopub_channel.get_msg(timeout=1)
            except Empty:
                if self.kc.dropped():
                    return
                continue
            if msg["parent_header"].get("msg_id") == parent_msg_id:
                try:
                    self.process_message(msg, cell, cell_index)
                except CellExecutionComplete:
                    return

    def process_message(self, msg: dict[str, Any], cell: NotebookNode, cell_index: int):
        """Charge every message to the output budget as it arrives, before nbclient keeps it."""
        verdict = self._budget.charge(msg, cell_index, is_test_cell(cell))
        if verdict == "stop":
            self._stop(self._budget.exceeded)
        if verdict != "keep":
            return None
        return super().process_message(msg, cell, cell_index)

    def _stop(self, why: str | None) -> None:
        """Kill the kernel (time limit, output cap); the run ends with ``why`` in the cell it broke."""
        self._stopped = self._stopped or why
        process = getattr(getattr(self.km, "provisioner", None), "process", None)
        if process is not None:
            process.kill()

    def _mark_dead(self, nb: NotebookNode) -> None:
        ename = "KernelDied"
        why = "the kernel died (out of memory, a process limit, or the code exited or killed it)"
        broken = self._cell_index
        if self._budget.exceeded:
            ename, why, broken = "OutputLimit", self._budget.exceeded, self._budget.exceeded_cell
        elif self._stopped:
            why = self._stopped
        for index, cell in enumerate(nb.cells):
            if cell.cell_type != "code" or index < broken:
                continue
            text = why if index == broken else f"not run: {why} in an earlier cell"
            cell.outputs = [o for o in cell.get("outputs", []) if index == broken]
            cell.outputs.append(NotebookNode(output_type="error", ename=ename, evalue=text,
                                             traceback=[f"{ename}: {text}"]))


def fresh_workdir(course_root: Path, assignment: str) -> tempfile.TemporaryDirectory:
    """A new folder holding only the assignment's released files (the instructor's copies): a
    grading kernel never runs inside the course directory."""
    fresh = tempfile.TemporaryDirectory(prefix=f"interplab-{assignment}-")
    source = Path(course_root) / "source" / assignment
    for path in source.rglob("*"):
        if is_released_file(path, source):
            target = Path(fresh.name) / path.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
    return fresh


class ReplayExecution(NbGraderPreprocessor):
    """Fill the notebook with the execution ``interplab grade``'s executors saved for exactly this
    notebook, seed and files (``cache.ExecutionCache``); :class:`GradingExecute` then skips it.
    Without one (stock ``nbgrader autograde``, the formgrader) it changes nothing."""

    def preprocess(self, nb: NotebookNode, resources: dict[str, Any]):
        nbg = resources["nbgrader"]
        cache = ExecutionCache.of(course_root_of(self.config), nbg["assignment"])
        cached = cache.load(nbg["student"], nbg["notebook"], cache.key(nbg["student"], nb))
        if cached is None:
            return nb, resources
        self.log.info("Using the execution made by the grading executor for %s", nbg["student"])
        for cell, done in zip(nb.cells, cached.executed.cells):
            if cell.cell_type == "code":
                cell.outputs, cell.execution_count = done.get("outputs", []), done.get("execution_count")
        return nb, {**resources, "interplab": {**resources.get("interplab", {}), "replayed": True}}


class VerifyChecks(NbGraderPreprocessor):
    """Judge the check bundles against hidden references, outside the student's kernel."""

    checks_path = Unicode(
        "", help="checks.py to judge with (default: the course's source/<assignment>/checks.py)"
    ).tag(config=True)

    def preprocess(self, nb: NotebookNode, resources: dict[str, Any]):
        from interplab.autograder.course import Course

        assignment, student = resources["nbgrader"]["assignment"], resources["nbgrader"]["student"]
        root = course_root_of(self.config)
        course = Course.load(root)
        references = ReferenceCache.of(course, assignment).get(student)
        checks = Path(self.checks_path) if self.checks_path else root / "source" / assignment / CHECKS_FILE
        exercises = exercises_in(checks)
        limit = run_problem(nb, course.policy)  # before the test cells' outputs are rewritten
        results = verify_notebook(nb, references, exercises)
        for result in results:
            self.log.info("%s: %s/%s", result.grade_id, result.score, result.points)
        # what the class report reads (verdicts.py): per exercise, the probe matched, the limit hit
        records = {v.exercise: verdict_log.exercise_record(exercises[v.exercise], v) for r in results for v in r.verdicts}
        try:
            verdict_log.save(course.store, assignment, student, resources["nbgrader"]["notebook"], limit, records)
        except OSError as exc:  # analytics must never cost a grade
            self.log.warning("the verdicts of %s for the class report were not recorded: %s", student, exc)
        return nb, resources


@dataclass
class CellResult:
    grade_id: str
    points: float
    score: float
    verdicts: list[Verdict] = field(default_factory=list)


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
        if not is_test_cell(cell):
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
