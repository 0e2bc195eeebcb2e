"""``interplab grade ASSIGNMENT``: grade every submission, in parallel, with one gradebook writer.

The steps, in order:

1. ``discover``  submissions in ``submitted/*/<a>/``; unknown students are added to the gradebook;
2. ``sanitize``  each notebook with nbgrader's own sanitize preprocessors (locked and test cells
                 restored from the gradebook), in this process: reads only;
3. ``execute``   every sanitized notebook in grading mode on the executor (a local process pool or
                 a dask cluster), results cached in the instructor store as they finish, so a killed
                 run resumes where it stopped;
4. ``record``    nbgrader's own Autograde and GenerateFeedback converters (through its Python API,
                 in this process, the only gradebook writer), one student at a time, as soon as all
                 of that student's notebooks are executed, so recording overlaps the execution of
                 the others; Autograde's GradingExecute step replays the cached executions and its
                 VerifyChecks step judges them;
5. ``export``    ``course/grades/<a>.csv``: student_id, grade_id, score, max_score, status.

Submissions are never modified: nbgrader reads ``submitted/`` and writes ``autograded/``.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import io
import json
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
from nbgrader.api import Gradebook, MissingEntry
from nbgrader.converters import Autograde, GenerateFeedback
from nbgrader.preprocessors import CheckCellMetadata, ClearOutput, DeduplicateIds, OverwriteCells, OverwriteKernelspec
from nbgrader.utils import capture_log
from sqlalchemy.exc import SAWarning
from tqdm import tqdm
from traitlets.config import Config

from interplab.autograder import executors
from interplab.autograder.course import Course, CourseError
from interplab.autograder.executors import Job, JobResult
from interplab.autograder.sandbox import ForkServerKernelManager, banner, kernel_manager_for, require_isolation
from interplab.autograder.steps import execution_key, execution_path
from interplab.autograder.store import write_atomic

CSV_HEADER = ["student_id", "grade_id", "score", "max_score", "status"]
SANITIZE = [ClearOutput, DeduplicateIds, OverwriteKernelspec, OverwriteCells, CheckCellMetadata]


@dataclass
class Submission:
    student: str
    status: str = "ok"
    jobs: list[Job] = field(default_factory=list)


def discover_submissions(course: Course, assignment: str) -> list[str]:
    """Student ids with a folder ``submitted/<student>/<assignment>/``."""
    if not course.submitted.is_dir():
        return []
    return sorted(p.parent.name for p in course.submitted.glob(f"*/{assignment}") if p.is_dir())


def register_students(course: Course, students: list[str]) -> list[str]:
    """Add students found in submitted/ but unknown to the gradebook; returns the added ids."""
    added = []
    with Gradebook(course.db_url, course.id) as gb:
        for student in students:
            try:
                gb.find_student(student)
            except MissingEntry:
                gb.add_student(student)
                added.append(student)
    return added


def assignment_notebooks(course: Course, assignment: str) -> list[str]:
    with Gradebook(course.db_url, course.id) as gb:
        return sorted(nb.name for nb in gb.find_assignment(assignment).notebooks)


def released_files(course: Course, assignment: str) -> dict[str, bytes]:
    """The files a grading kernel gets beside the notebook: the assignment's source files (the
    instructor's copies, never the student's), without notebooks."""
    source = course.source(assignment)
    return {str(p.relative_to(source)): p.read_bytes() for p in sorted(source.rglob("*"))
            if p.is_file() and p.suffix != ".ipynb" and "__pycache__" not in p.parts}


def sanitize(course: Course, assignment: str, student: str, notebook: str, nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """nbgrader's sanitize steps, exactly as its Autograde converter runs them."""
    config = Config({"CourseDirectory": {"root": str(course.root)}})
    resources = {"nbgrader": {"student": student, "assignment": assignment, "notebook": notebook,
                              "db_url": course.db_url}}
    for step in SANITIZE:
        nb, resources = step(config=config).preprocess(nb, resources)
    return nb


def test_cells_in(nb: nbformat.NotebookNode) -> set[str]:
    return {c.metadata["nbgrader"]["grade_id"] for c in nb.cells
            if c.get("metadata", {}).get("nbgrader", {}).get("grade") and c.cell_type == "code"}


def expected_test_cells(course: Course, assignment: str, notebook: str) -> set[str]:
    with Gradebook(course.db_url, course.id) as gb:
        return {cell.name for cell in gb.find_notebook(notebook, assignment).grade_cells if cell.cell_type == "code"}


def job_key(nb: nbformat.NotebookNode, files: dict[str, bytes], seed: int) -> str:
    digest = hashlib.sha256(execution_key(nb).encode())
    for name, content in sorted(files.items()):
        digest.update(name.encode() + b"\0" + hashlib.sha256(content).digest())
    digest.update(str(seed).encode())
    return digest.hexdigest()


def prepare(course: Course, assignment: str, student: str, notebooks: dict[str, set[str]], files: dict[str, bytes],
            seed: int) -> Submission:
    """Sanitize one student's notebooks into jobs; ``notebooks`` maps each notebook's name to the
    grade ids of its test cells (from the gradebook)."""
    folder = course.submitted / student / assignment
    submission = Submission(student)
    present = sorted(p.name for p in folder.glob("*.ipynb"))
    problems = []
    if not any(folder.iterdir()):
        submission.status = "empty submission folder"
        return submission
    for notebook in notebooks:
        path = folder / f"{notebook}.ipynb"
        if not path.is_file():
            others = [p for p in present if p != f"{notebook}.ipynb"]
            problems.append(f"no {notebook}.ipynb" + (f" (found {', '.join(others)}: notebooks must keep their names)" if others else ""))
            continue
        try:
            nb = nbformat.read(path, as_version=4)
        except Exception as exc:
            problems.append(f"{notebook}.ipynb is not a valid notebook ({type(exc).__name__})")
            continue
        try:
            nb = sanitize(course, assignment, student, notebook, nb)
        except Exception as exc:
            problems.append(f"{notebook}.ipynb could not be sanitized ({type(exc).__name__}: {str(exc)[:120]})")
            continue
        missing = sorted(notebooks[notebook] - test_cells_in(nb))
        if missing:
            problems.append(f"{notebook}.ipynb lacks test cell(s) {', '.join(missing)} (deleted or their metadata edited): 0 there")
        submission.jobs.append(Job(
            assignment=assignment, student=student, notebook=notebook, sanitized=nbformat.writes(nb), files=files,
            seed=seed, key=job_key(nb, files, seed), policy=course.policy))
    if problems:
        submission.status = "; ".join(problems)
    return submission


def cache_dir(course: Course, assignment: str) -> Path:
    return course.store.assignment_dir(assignment) / "executions"


def cached(cache: Path, job: Job) -> dict | None:
    meta = execution_path(cache, job.student, job.notebook).with_suffix(".json")
    if meta.is_file():
        data = json.loads(meta.read_text())
        if data.get("key") == job.key and execution_path(cache, job.student, job.notebook).is_file():
            return data
    return None


def save_result(cache: Path, result: JobResult) -> None:
    path = execution_path(cache, result.student, result.notebook)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(path, result.executed or "", mode=0o600)
    write_atomic(path.with_suffix(".json"), json.dumps(
        {"key": result.key, "status": result.status, "seconds": round(result.seconds, 3)}), mode=0o600)


def grade_rows(course: Course, assignment: str, submissions: dict[str, Submission], statuses: dict[str, str]) -> list[list]:
    """Every grade cell of every submission; a submission nbgrader could not grade gets 0 on each."""
    rows = []
    with Gradebook(course.db_url, course.id) as gb:
        grade_cells = [(nb.name, cell.name, cell.max_score) for nb in gb.find_assignment(assignment).notebooks
                       for cell in nb.grade_cells if cell.cell_type == "code"]
        for student in sorted(submissions):
            status = statuses.get(student, "ok")
            scores = {}
            try:
                for notebook in gb.find_submission(assignment, student).notebooks:
                    for grade in notebook.grades:
                        scores[(notebook.name, grade.name)] = grade.score
            except MissingEntry:
                pass
            for notebook, cell, max_score in grade_cells:
                score = scores.get((notebook, cell))
                rows.append([student, cell, _num(score if score is not None else 0), _num(max_score), status])
    return sorted(rows, key=lambda r: (r[0], r[1]))


def _num(value: float) -> float | int:
    return int(value) if float(value).is_integer() else round(float(value), 4)


def write_csv(path: Path, rows: list[list]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    writer.writerows(rows)
    write_atomic(path, buffer.getvalue())


@dataclass
class GradeReport:
    csv_path: Path
    statuses: dict[str, str]
    executed: int
    reused: int
    kernel_seconds: float


def grade_assignment(course: Course, assignment: str, executor: str = "local", workers: int | None = None,
                     scheduler: str | None = None, log=print) -> GradeReport:
    if not course.store.references_path(assignment).is_file() or not course.source(assignment).is_dir():
        raise CourseError(f"assignment {assignment!r} is not built in {course.root}: run `interplab build {assignment}`")
    students = discover_submissions(course, assignment)
    if not students:
        raise CourseError(f"no submissions found in {course.submitted}/*/{assignment}/")
    for student in register_students(course, students):
        log(f"note: student {student!r} was not in the gradebook; added (submission found in submitted/)")

    if executor == "local":  # Dask workers check their own machine (the sandbox refuses there)
        require_isolation(course.policy)
    log(banner(course.policy))
    forked = kernel_manager_for(course.policy) is ForkServerKernelManager
    log("  [on]  fork server: kernels fork from a warm sandboxed server (imports done once)" if forked
        else "  [off] fork server: every kernel starts from scratch (see course.toml fork_server)")
    notebooks = {nb: expected_test_cells(course, assignment, nb) for nb in assignment_notebooks(course, assignment)}
    files = released_files(course, assignment)
    seed = course.store.seed(assignment, create=False)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    submissions = {s: prepare(course, assignment, s, notebooks, files, seed) for s in students}
    timings["sanitize"] = time.perf_counter() - started

    cache = cache_dir(course, assignment)
    jobs = [job for sub in submissions.values() for job in sub.jobs]
    todo = [job for job in jobs if cached(cache, job) is None]
    waiting: dict[str, set[str]] = {student: set() for student in submissions}  # notebooks not yet executed
    for job in todo:
        waiting[job.student].add(job.notebook)
    recorder = Recorder(course, assignment, cache)
    kernel_seconds = 0.0
    failures = 0
    started = time.perf_counter()
    with tqdm(total=len(jobs), initial=len(jobs) - len(todo), desc=f"grade {assignment}", unit="notebook") as bar:
        results = executors.run(todo, executor, workers, scheduler)  # starts executing
        for student in sorted(s for s, left in waiting.items() if not left):
            recorder.record(student)  # executions reused from an earlier run, or nothing to execute
        for result in results:
            save_result(cache, result)
            kernel_seconds += result.seconds
            failures += result.status != "ok"
            bar.update(1)
            bar.set_postfix(failures=failures)
            waiting[result.student].discard(result.notebook)
            if not waiting[result.student]:
                recorder.record(result.student)
    timings["execute+record"] = time.perf_counter() - started
    timings["record (overlapped)"] = recorder.seconds
    log("timings: " + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in timings.items()))

    statuses = {}
    for student, sub in submissions.items():
        problems = [sub.status] if sub.status != "ok" else []
        for job in sub.jobs:
            meta = cached(cache, job)
            if meta and meta["status"] != "ok":
                problems.append(f"{job.notebook}: {meta['status']}")
        if not problems and student in recorder.failed:
            problems.append(recorder.failed[student])
        statuses[student] = "; ".join(problems) or "ok"
    csv_path = course.root / "grades" / f"{assignment}.csv"
    write_csv(csv_path, grade_rows(course, assignment, submissions, statuses))
    return GradeReport(csv_path, statuses, len(todo), len(jobs) - len(todo), kernel_seconds)


def grade_command(args: argparse.Namespace) -> int:
    from interplab.errors import UserError

    try:
        course = Course.load(args.course)
        if getattr(args, "allow_unsandboxed", False):
            course.policy = dataclasses.replace(course.policy, allow_unsandboxed=True)
        report = grade_assignment(course, args.assignment, args.executor, args.workers, args.scheduler)
    except (CourseError, ValueError) as exc:
        raise UserError(str(exc)) from exc
    problems = {s: st for s, st in report.statuses.items() if st != "ok"}
    for student, status in sorted(problems.items()):
        print(f"{student}: {status}")
    print(f"graded {len(report.statuses)} submissions ({report.executed} executed, {report.reused} reused from an "
          f"earlier run; {len(problems)} with problems); grades in {report.csv_path}; "
          f"feedback in {course.root / 'feedback'}")
    return 0


class Recorder:
    """nbgrader's own Autograde then GenerateFeedback converters for one student at a time, in this
    process, with the course's ``nbgrader_config.py``: what ``nbgrader autograde --student S`` and
    ``nbgrader generate_feedback --student S`` do (and what ``NbGraderAPI.autograde`` does), without
    starting a process, and importing the assignment's checks, for each. GradingExecute replays the
    executions in ``cache``."""

    def __init__(self, course: Course, assignment: str, cache: Path) -> None:
        import logging

        from nbgrader.coursedir import CourseDirectory
        from traitlets.config import LoggingConfigurable

        config = Config()
        config.merge(course.nbgrader_config())
        config.merge(Config({"CourseDirectory": {"root": str(course.root)},
                             "GradingExecute": {"replay_dir": str(cache)},
                             "HTMLExporter": {"template_name": "feedback"}}))
        quiet = logging.getLogger(f"interplab.grade.nbgrader.{assignment}")
        quiet.propagate = False
        quiet.setLevel(logging.INFO)
        self.host = LoggingConfigurable(config=config, log=quiet)
        self.coursedir = CourseDirectory(config=config, assignment_id=assignment)
        self.assignment = assignment
        self.failed: dict[str, str] = {}
        self.seconds = 0.0

    def record(self, student: str) -> None:
        started = time.perf_counter()
        self.coursedir.student_id = student
        autograde = Autograde(coursedir=self.coursedir, parent=self.host)
        autograde.force, autograde.create_student = True, True
        with warnings.catch_warnings():  # nbgrader's own, harmless, on a submission's first autograde
            warnings.filterwarnings("ignore", category=SAWarning)
            result = capture_log(autograde)
        if result.get("success"):
            feedback = GenerateFeedback(coursedir=self.coursedir, parent=self.host)
            feedback.force = True
            result = capture_log(feedback)
        if not result.get("success"):
            errors = [line for line in str(result.get("log", "")).splitlines() if line.startswith(("[ERROR]", "[CRITICAL]"))]
            self.failed[student] = "nbgrader could not record this submission" + (f" ({errors[-1][:200]})" if errors else "")
        self.seconds += time.perf_counter() - started
