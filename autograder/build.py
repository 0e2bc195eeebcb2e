"""``interplab build``: master -> source -> references -> release -> validation.

The pipeline is a list of named steps (nbgrader's converter style); each is a small function of a
:class:`Build` and can be tested alone:

1. ``source``      jupytext master -> ``course/source/<a>/<a>.ipynb`` with nbgrader cell metadata,
                   plus ``checks.py`` and the assignment's data files;
2. ``seed``        the course secret in the instructor store (drawn once, kept across rebuilds; a
                   new term rotates it with ``interplab secret rotate``) and the build's own hidden
                   seed derived from it (each student's is derived the same way, see store.py);
3. ``execute``     run the master in reference mode and, for the validation, in grading mode, both
                   at once (two kernels of one thread each: the build takes one master's time);
4. ``references``  from the reference run: public references (with the probes' outputs) next to
                   the notebook, the build's hidden references in the store (each student's are
                   computed at grade time, cache.ReferenceCache);
5. ``release``     stock ``nbgrader generate_assignment`` -> ``course/release/<a>/``, and the
                   assignment's due date (course.toml ``[schedule]``) into the gradebook;
6. ``validate``    the master's grading run scores full marks (so it is deterministic) and the
                   student version scores 0 and raises nothing but NotImplementedError, both graded
                   exactly as submissions are.
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import json
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import nbformat
from tqdm import tqdm

from interplab.autograder.course import Course, CourseError
from interplab.autograder.deadlines import apply_deadlines
from interplab.autograder.notebooks import error_outputs, execute_concurrently, is_test_cell, master_to_notebook
from interplab.autograder.steps import grading_env, verify_notebook
from interplab.autograder.store import BUILD_STUDENT, write_atomic
from interplab.checking import FORMAT_VERSION, REFERENCES_FILE, exercises_in, iter_bundles

# Never released: caches, and notes meant for instructors only.
SKIP_FILES = {"__pycache__", ".ipynb_checkpoints", "NOTE.md", "instructor"}


class BuildError(CourseError):
    """A build that fails validation fails loudly with this."""


@dataclass
class Build:
    course: Course
    assignment: str
    validate: bool = True
    timings: dict[str, float] = field(default_factory=dict)
    seed: int | None = None
    executed: dict[str, nbformat.NotebookNode] = field(default_factory=dict)  # mode -> the master run

    @property
    def master(self) -> Path:
        return self.course.assignments_dir / self.assignment / f"{self.assignment}.py"

    @property
    def checks(self) -> Path:
        return self.course.assignments_dir / self.assignment / "checks.py"

    @property
    def source_dir(self) -> Path:
        return self.course.source(self.assignment)

    @property
    def source_notebook(self) -> Path:
        return self.source_dir / f"{self.assignment}.ipynb"

    @property
    def timeout(self) -> int:
        return self.course.policy.cell_timeout


def strip_probes(source: str) -> str:
    """The released copy of a ``checks.py``: every ``Probe``'s function replaced by None, then the
    private top-level helpers nothing else uses any more removed (repeatedly). Known-wrong variants
    are often one edit away from the solution, so they stay in the instructor's copy; the release
    keeps their names and messages, and their outputs travel as data in the references."""
    tree = ast.parse(source)

    class DropProbeFunctions(ast.NodeTransformer):
        def visit_Call(self, node: ast.Call) -> ast.Call:
            self.generic_visit(node)
            name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", None)
            if name == "Probe":
                if len(node.args) >= 2:
                    node.args[1] = ast.Constant(None)
                for keyword in node.keywords:
                    if keyword.arg == "fn":
                        keyword.value = ast.Constant(None)
            return node

    tree = DropProbeFunctions().visit(tree)

    def defined_name(stmt: ast.stmt) -> str | None:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            return stmt.name
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            return stmt.targets[0].id
        return None

    changed = True
    while changed:
        changed = False
        for stmt in list(tree.body):
            name = defined_name(stmt)
            if not name or not name.startswith("_") or name.startswith("__"):
                continue
            used = any(isinstance(node, ast.Name) and node.id == name and isinstance(node.ctx, ast.Load)
                       for other in tree.body if other is not stmt for node in ast.walk(other))
            if not used:
                tree.body.remove(stmt)
                changed = True
    header = "# Released copy of this assignment's checks (built by `interplab build`; probes removed).\n"
    return header + ast.unparse(ast.fix_missing_locations(tree)) + "\n"


def step_source(build: Build) -> None:
    if not build.master.is_file() or not build.checks.is_file():
        raise BuildError(f"assignment {build.assignment!r} needs {build.master} and {build.checks}")
    nb = master_to_notebook(build.master)
    try:
        exercises = exercises_in(build.checks)
    except Exception as exc:  # the instructor's code: say where, in one line
        raise BuildError(f"{build.checks} cannot be loaded: {type(exc).__name__}: {exc}") from exc
    wrong = [e for e in exercises if not e.startswith(f"{build.assignment}.")]
    if wrong:
        raise BuildError(f"{build.checks}: exercise ids {wrong} do not start with '{build.assignment}.'")
    if build.source_dir.exists():
        shutil.rmtree(build.source_dir)
    build.source_dir.mkdir(parents=True)
    for item in build.master.parent.iterdir():
        if item.name in SKIP_FILES or item == build.master or item.suffix == ".ipynb":
            continue
        (shutil.copytree if item.is_dir() else shutil.copy2)(item, build.source_dir / item.name)
    (build.source_dir / "checks.py").write_text(strip_probes(build.checks.read_text()))
    build.course.store.assignment_dir(build.assignment)
    write_atomic(build.course.store.checks_path(build.assignment), build.checks.read_text(), mode=0o600)
    nbformat.write(nb, build.source_notebook)


def step_seed(build: Build) -> None:
    build.seed = build.course.store.seed(build.assignment, BUILD_STUDENT, create=True)


def _run_copies(runs: list[tuple[Path, str, dict[str, str], dict[str, Path]]],
                timeout: int) -> list[tuple[nbformat.NotebookNode, float]]:
    """Execute notebooks at once, each in a scratch copy of its folder, so nothing they write lands
    in the course: (folder, notebook name, environment, files to put over the copy, e.g. the
    instructor's full checks.py); each executed notebook with its wall time."""
    with contextlib.ExitStack() as stack:
        executions = []
        for directory, notebook_name, env, overlay in runs:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="interplab-build-"))) / directory.name
            shutil.copytree(directory, work)
            for name, path in overlay.items():
                shutil.copy2(path, work / name)
            executions.append((nbformat.read(work / notebook_name, as_version=4), work, env))
        return execute_concurrently(executions, timeout)


def collect_references(nb: nbformat.NotebookNode, assignment: str, seed: int) -> dict[str, Any]:
    """Hidden references of ``seed`` from a master executed in reference mode (with that seed among
    others): per exercise the outputs on public and hidden inputs and the probes' outputs; per test
    cell the exercises it checks."""
    cells: dict[str, list[str]] = {}
    exercises: dict[str, Any] = {}
    for index, cell in enumerate(nb.cells):
        meta = cell.get("metadata", {}).get("nbgrader", {})
        bundles = [b for b in iter_bundles(cell.get("outputs", [])) if b.get("seed") == seed] if cell.cell_type == "code" else []
        is_test = is_test_cell(cell)
        if bundles and not is_test:
            raise BuildError(f"cell {index + 1} calls check() but is not a test cell (role=\"test\")")
        if not is_test:
            continue
        if not bundles:
            raise BuildError(f"test cell {meta['grade_id']!r} produced no check result in the master")
        cells[meta["grade_id"]] = []
        for bundle in bundles:
            ex = bundle["exercise"]
            if ex in exercises:
                raise BuildError(f"exercise {ex} is checked twice in the master")
            for split in ("public", "hidden"):
                for i, outcome in enumerate(bundle["outputs"][split]):
                    if "error" in outcome:
                        err = outcome["error"]
                        raise BuildError(f"the master solution of {ex} raised {err['ename']}: {err['evalue']} "
                                         f"on {split} input {i + 1}")
            exercises[ex] = {"public": bundle["outputs"]["public"], "hidden": bundle["outputs"]["hidden"],
                             "probes": bundle.get("probes", {})}
            cells[meta["grade_id"]].append(ex)
    return {"version": FORMAT_VERSION, "assignment": assignment, "cells": cells, "exercises": exercises}


def public_references(references: dict[str, Any]) -> dict[str, Any]:
    """What ships with the release: public inputs' references and the probes' public outputs."""
    return {"version": FORMAT_VERSION, "assignment": references["assignment"], "exercises": {
        ex: {"public": data["public"], "probes": {name: p["public"] for name, p in data["probes"].items()}}
        for ex, data in references["exercises"].items()}}


def step_execute(build: Build) -> None:
    full_checks = {"checks.py": build.checks}
    # The build's seed second: its references then come from a run that computed another seed's
    # first, as a student's may at grade time, and the validation's run of the build's seed alone
    # must still score full marks: a check whose outputs depend on earlier checks fails the build.
    seeds = [build.seed ^ 1, build.seed]
    runs = {"reference": (build.source_dir, build.source_notebook.name, grading_env(seeds, mode="reference"), full_checks)}
    if build.validate:
        runs["grading"] = (build.source_dir, build.source_notebook.name, grading_env(build.seed), {})
    done = dict(zip(runs, _run_copies(list(runs.values()), build.timeout)))
    build.executed = {mode: nb for mode, (nb, _) in done.items()}
    build.timings["solution notebook"] = round(done["reference"][1], 2)  # a student's run, probes aside


def step_references(build: Build) -> None:
    nb = build.executed["reference"]
    errors = error_outputs(nb)
    if errors:
        index, ename, evalue = errors[0]
        raise BuildError(f"the master notebook raised {ename}: {evalue} in cell {index + 1}")
    references = collect_references(nb, build.assignment, build.seed)
    declared = set(exercises_in(build.checks))
    unchecked = declared - set(references["exercises"])
    if unchecked:
        raise BuildError(f"exercises declared in checks.py but never checked in the notebook: {sorted(unchecked)}")
    build.course.store.save_references(build.assignment, references)
    (build.source_dir / REFERENCES_FILE).write_text(json.dumps(public_references(references)))


def step_release(build: Build) -> None:
    build.course.nbgrader("generate_assignment", build.assignment, "--force")
    apply_deadlines(build.course, build.assignment)  # the due date of [schedule], in the gradebook


def verify_in_process(course: Course, assignment: str, raw: nbformat.NotebookNode) -> tuple[list, list]:
    """Verify a notebook executed in grading mode as the autograder does (no gradebook), and
    cross-check each score with stock nbgrader's reading of the outputs."""
    from nbgrader.utils import determine_grade

    errors = error_outputs(raw)  # the kernel's own errors, before verification writes its verdicts
    references = course.store.load_references(assignment)
    results = verify_notebook(raw, references, exercises_in(course.source(assignment) / "checks.py"))
    for cell in raw.cells:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        for result in results:
            if meta.get("grade_id") == result.grade_id:
                score, _ = determine_grade(cell)
                if abs(score - result.score) > 1e-9:
                    raise BuildError(f"{result.grade_id}: nbgrader reads {score}, verify gave {result.score}")
    return results, errors


def step_validate(build: Build) -> None:
    course, a = build.course, build.assignment
    results, errors = verify_in_process(course, a, build.executed["grading"])
    short = [f"{r.grade_id}: {r.score}/{r.points} ({'; '.join(v.message for v in r.verdicts)})"
             for r in results if r.score != r.points]
    if short or errors:
        raise BuildError("the master does not score full marks (is it deterministic, and independent of the "
                         "checks run before each?): "
                         + "; ".join(short + [f"cell {i + 1} raised {e}: {v}" for i, e, v in errors]))
    (student, _), = _run_copies([(course.release(a), f"{a}.ipynb", grading_env(build.seed), {})], build.timeout)
    results, errors = verify_in_process(course, a, student)
    scored = [f"{r.grade_id}: {r.score}" for r in results if r.score != 0]
    if scored:
        raise BuildError(f"the unmodified student version scores points: {scored}")
    other = [f"cell {i + 1} raised {e}: {v}" for i, e, v in errors if e != "NotImplementedError"]
    if other:
        raise BuildError("the student version raises more than NotImplementedError: " + "; ".join(other))


STEPS: list[tuple[str, Callable[[Build], None]]] = [
    ("source", step_source),
    ("seed", step_seed),
    ("execute", step_execute),
    ("references", step_references),
    ("release", step_release),
    ("validate", step_validate),
]


def build_assignment(course: Course, assignment: str, validate: bool = True, progress: tqdm | None = None) -> Build:
    build = Build(course, assignment, validate)
    for name, step in STEPS:
        if name == "validate" and not validate:
            continue
        if progress is not None:
            progress.set_postfix_str(f"{assignment}: {name}")
        start = time.perf_counter()
        step(build)
        build.timings[name] = round(time.perf_counter() - start, 2)
        if progress is not None:
            progress.update(1)
    return build


def build_command(args: argparse.Namespace) -> int:
    course = Course.load(args.course)
    assignments = list(args.assignments) or course.known_assignments()
    known = course.known_assignments()
    unknown = [a for a in assignments if a not in known]
    if unknown:
        raise CourseError(f"unknown assignment(s) {unknown}; found in {course.assignments_dir}: {known}")
    validate = not getattr(args, "skip_validation", False)
    n_steps = len(STEPS) - (0 if validate else 1)
    with tqdm(total=n_steps * len(assignments), desc="build", unit="step") as progress:
        for assignment in assignments:
            build = build_assignment(course, assignment, validate, progress)
            tqdm.write(f"built {assignment}: " + ", ".join(f"{k} {v}s" for k, v in build.timings.items()))
    return 0
