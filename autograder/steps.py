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

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nbformat import NotebookNode
from nbgrader.preprocessors import Execute, NbGraderPreprocessor
from traitlets import Unicode

from interplab.checking import (
    BUNDLE_MIME, FORMAT_VERSION, RESULT_MIME, Exercise, MalformedData, Verdict, exercises_in, judge,
)
from interplab.autograder.store import Store

CHECKS_FILE = "checks.py"


def grading_env(seed: int, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a grading kernel: grading mode and the hidden seed, nothing pointing at
    instructor files."""
    env = dict(os.environ if base is None else base)
    env.pop("INTERPLAB_ASSIGNMENT_DIR", None)
    env.update({"INTERPLAB_MODE": "grading", "INTERPLAB_HIDDEN_SEED": str(seed), "HF_HUB_OFFLINE": "1"})
    return env


def course_root_of(config: Any) -> Path:
    root = config.get("CourseDirectory", {}).get("root") if config is not None else None
    return Path(root) if root else Path.cwd()


class GradingExecute(Execute):
    """nbgrader's Execute, with the kernel in grading mode for the assignment being graded."""

    def preprocess(self, nb: NotebookNode, resources: dict[str, Any], *args: Any, **kwargs: Any):
        assignment = resources["nbgrader"]["assignment"]
        self._kernel_env = grading_env(Store(course_root_of(self.config)).seed(assignment, create=False))
        return super().preprocess(nb, resources, *args, **kwargs)

    def start_new_kernel(self, **kwargs: Any) -> None:
        kwargs["env"] = self._kernel_env
        super().start_new_kernel(**kwargs)


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
    which for a correct answer equal hidden reference values, so they must not reach feedback)."""
    cells_map: dict[str, list[str]] = references["cells"]
    results = []
    for cell in nb.cells:
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
        results.append(CellResult(grade_id, points, score, verdicts))
    return results
