"""``interplab grade ASSIGNMENT``: grade every submission, in parallel, with one gradebook writer.

The steps, in order:

1. ``discover``  submissions in ``submitted/*/<a>/``; a submission that is not a plain folder of
                 regular files, or whose student id is not a plain name, is refused unread
                 (``submissions.py``); unknown students are added to the gradebook;
2. ``sanitize``  each notebook with the sanitize steps of nbgrader's Autograde (as the course's
                 nbgrader config sets them), in this process: reads only;
3. ``execute``   every sanitized notebook in grading mode, and, for each student whose hidden
                 references are not cached yet, the master in reference mode with that student's
                 hidden seed, on the executor (a local process pool or a dask cluster); results are
                 cached in the instructor store as they finish (``cache.py``), so a killed run
                 resumes where it stopped; an infrastructure failure is never cached;
4. ``record``    nbgrader's own Autograde and GenerateFeedback converters (through its Python API,
                 in this process, the only gradebook writer), one student at a time, as soon as all
                 of that student's jobs are done, so recording overlaps the execution of the others;
                 Autograde's ReplayExecution step puts in the cached executions and its VerifyChecks
                 step judges them against that student's references;
5. ``export``    ``course/grades/<a>.csv``: student_id, grade_id, score, max_score, status (the
                 autograded cells, the written answers graded by hand in the formgrader, and a
                 ``late_penalty`` row per student where the assignment has a due date).

A student whose grading failed for a reason that is not their code (the sandbox did not start, a
worker was lost) is not recorded: the CSV says ``infrastructure error`` with no score, the command
exits 3, and the next run retries exactly those jobs.

Submissions are never modified: nbgrader reads ``submitted/`` and writes ``autograded/``.
"""
from __future__ import annotations

import argparse
import dataclasses
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
from nbgrader.api import Gradebook, MissingEntry
from nbgrader.converters import Autograde, GenerateFeedback
from nbgrader.utils import capture_log
from sqlalchemy.exc import SAWarning
from tqdm import tqdm
from traitlets.config import Config
from traitlets.utils.importstring import import_item

from interplab.autograder import executors, verdicts
from interplab.autograder.cache import ExecutionCache, InfrastructureError, ReferenceCache, make_job
from interplab.autograder.course import Course, CourseError
from interplab.autograder.deadlines import PENALTY_ROW, Schedule, apply_deadlines, penalty_status
from interplab.autograder.executors import Job
from interplab.autograder.notebooks import released_files, test_cell_ids
from interplab.autograder.sandbox import ForkServerKernelManager, banner, kernel_manager_for, require_isolation
from interplab.autograder.store import SECRET_FILE
from interplab.autograder.submissions import refusal
from interplab.autograder.totals import number, write_rows

CSV_HEADER = ["student_id", "grade_id", "score", "max_score", "status"]
INFRASTRUCTURE = "infrastructure error"
EXIT_INFRASTRUCTURE = 3  # some submissions could not be graded for reasons that are not theirs


@dataclass
class Submission:
    student: str
    status: str = "ok"
    refused: bool = False         # never read, never recorded: 0 on every cell
    jobs: list[Job] = field(default_factory=list)
    infrastructure: list[str] = field(default_factory=list)  # why grading it failed this run


def discover_submissions(course: Course, assignment: str) -> list[str]:
    """Student ids with a folder (or anything) ``submitted/<student>/<assignment>``."""
    if not course.submitted.is_dir():
        return []
    return sorted(p.parent.name for p in course.submitted.glob(f"*/{assignment}") if p.exists() or p.is_symlink())


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


class Sanitizer:
    """The sanitize steps of nbgrader's Autograde (``Autograde.sanitize_preprocessors``, as the
    course's nbgrader config sets them), run as Autograde runs them."""

    def __init__(self, course: Course) -> None:
        configured = course.nbgrader_config().get("Autograde", {}).get("sanitize_preprocessors")
        steps = configured if configured is not None else Autograde.class_traits()["sanitize_preprocessors"].default()
        config = Config({"CourseDirectory": {"root": str(course.root)}})
        config.merge(course.nbgrader_config())
        self.course = course
        self.steps = [(import_item(s) if isinstance(s, str) else s)(config=config) for s in steps]

    def __call__(self, assignment: str, student: str, notebook: str, nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
        resources = {"nbgrader": {"student": student, "assignment": assignment, "notebook": notebook,
                                  "db_url": self.course.db_url}}
        for step in self.steps:
            nb, resources = step.preprocess(nb, resources)
        return nb


def expected_test_cells(course: Course, assignment: str, notebook: str) -> set[str]:
    with Gradebook(course.db_url, course.id) as gb:
        return {cell.name for cell in gb.find_notebook(notebook, assignment).grade_cells if cell.cell_type == "code"}


def prepare(course: Course, assignment: str, student: str, notebooks: dict[str, set[str]], cache: ExecutionCache,
            sanitize: Sanitizer) -> Submission:
    """Sanitize one student's notebooks into jobs; ``notebooks`` maps each notebook's name to the
    grade ids of its test cells (from the gradebook)."""
    folder = course.submitted / student / assignment
    submission = Submission(student)
    refused = refusal(folder, student)
    if refused:
        submission.status, submission.refused = refused, True
        return submission
    present = sorted(p.name for p in folder.glob("*.ipynb"))
    problems = []
    if not any(folder.iterdir()):
        submission.status = "empty submission folder"
        return submission
    seed = cache.store.seed(assignment, student)
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
            nb = sanitize(assignment, student, notebook, nb)
        except Exception as exc:
            problems.append(f"{notebook}.ipynb could not be sanitized ({type(exc).__name__}: {str(exc)[:120]})")
            continue
        missing = sorted(notebooks[notebook] - test_cell_ids(nb))
        if missing:
            problems.append(f"{notebook}.ipynb lacks test cell(s) {', '.join(missing)} (deleted or their metadata edited): 0 there")
        submission.jobs.append(make_job(course.policy, assignment, student, notebook, nb,
                                        cache.files, seed, cache.key(student, nb)))
    if problems:
        submission.status = "; ".join(problems)
    return submission


def grade_rows(course: Course, assignment: str, submissions: dict[str, Submission], statuses: dict[str, str]) -> list[list]:
    """Every autograded cell of every submission (a submission nbgrader could not grade gets 0 on
    each, one whose grading failed for infrastructure reasons no score), every written answer an
    instructor has graded in the formgrader (status ``graded by hand``; ungraded answers are not
    listed yet), and, where the assignment has a due date, a ``late_penalty`` row per student
    (the points the late policy takes, as a negative score)."""
    schedule = Schedule.of(course)
    due = schedule.get(assignment)
    rows = []
    with Gradebook(course.db_url, course.id) as gb:
        grade_cells = [(nb.name, cell.name, cell.max_score, cell.cell_type == "code")
                       for nb in gb.find_assignment(assignment).notebooks for cell in nb.grade_cells]
        for student in sorted(submissions):
            status = statuses.get(student, "ok")
            scores, manual, penalty, late = {}, {}, 0.0, "ok"
            if not submissions[student].refused:
                try:
                    submission = gb.find_submission(assignment, student)
                    penalty = float(submission.late_submission_penalty or 0)
                    late = penalty_status(submission, penalty, schedule.policy)
                    for notebook in submission.notebooks:
                        for grade in notebook.grades:
                            scores[(notebook.name, grade.name)] = grade.score
                            manual[(notebook.name, grade.name)] = grade.manual_score
                except MissingEntry:
                    pass
            infrastructure = bool(submissions[student].infrastructure)
            for notebook, cell, max_score, autograded in grade_cells:
                score = scores.get((notebook, cell))
                if autograded:
                    shown = "" if infrastructure else number(score if score is not None else 0)
                    rows.append([student, cell, shown, number(max_score), status])
                elif manual.get((notebook, cell)) is not None and not infrastructure:
                    rows.append([student, cell, number(manual[(notebook, cell)]), number(max_score), "graded by hand"])
            if due is not None and not infrastructure:
                rows.append([student, PENALTY_ROW, number(-penalty), 0, late])
    return sorted(rows, key=lambda r: (r[0], r[1]))


@dataclass
class GradeReport:
    csv_path: Path
    statuses: dict[str, str]
    executed: int                 # notebooks executed in this run
    reused: int                   # notebooks whose execution an earlier run cached
    references: int               # students whose hidden references this run computed ...
    reference_runs: int           # ... in this many runs of the master
    kernel_seconds: float         # wall time of the students' kernels
    reference_seconds: float      # wall time of the masters' reference runs (each serves a batch of students)
    infrastructure_errors: int = 0


def grade_assignment(course: Course, assignment: str, executor: str = "local", workers: int | None = None,
                     scheduler: str | None = None, log=print) -> GradeReport:
    store = course.store
    built = [store.references_path(assignment), store.checks_path(assignment), store.root / SECRET_FILE, course.source(assignment)]
    if not all(path.exists() for path in built):
        raise CourseError(f"assignment {assignment!r} is not built in {course.root} (or by an older version): "
                          f"run `interplab build {assignment}`")
    students = discover_submissions(course, assignment)
    if not students:
        raise CourseError(f"no submissions found in {course.submitted}/*/{assignment}/")
    for student in register_students(course, [s for s in students if refusal(course.submitted / s / assignment, s) is None]):
        log(f"note: student {student!r} was not in the gradebook; added (submission found in submitted/)")
    apply_deadlines(course, assignment)  # due date and extensions, read by nbgrader's late-submission step

    if executor == "local":  # Dask workers check their own machine (the sandbox refuses there)
        require_isolation(course.policy)
    log(banner(course.policy))
    forked = kernel_manager_for(course.policy) is ForkServerKernelManager
    log("  [on]  fork server: kernels fork from a warm sandboxed server (imports done once)" if forked
        else "  [off] fork server: every kernel starts from scratch (see course.toml fork_server)")
    notebooks = {nb: expected_test_cells(course, assignment, nb) for nb in assignment_notebooks(course, assignment)}
    cache = ExecutionCache(course.store, assignment, released_files(course.source(assignment)))
    references = ReferenceCache.of(course, assignment)
    sanitize = Sanitizer(course)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    submissions = {s: prepare(course, assignment, s, notebooks, cache, sanitize) for s in students}
    verdicts.forget(course.store, assignment, students)  # the class report's records: remade by this run
    timings["sanitize"] = time.perf_counter() - started

    jobs = [job for sub in submissions.values() for job in sub.jobs]
    fresh = [job for job in jobs if cache.load(job.student, job.notebook, job.key) is None]
    reference_jobs = {job.key: (job, batch) for job, batch in references.jobs(
        [s for s, sub in submissions.items() if sub.jobs and references.load(s) is None],
        workers or executors.default_workers())}
    todo = fresh + [job for job, _ in reference_jobs.values()]
    waiting: dict[str, set[str]] = {student: set() for student in submissions}  # keys of jobs not yet done
    for job in fresh:
        waiting[job.student].add(job.key)
    for key, (_, batch) in reference_jobs.items():
        for student in batch:
            waiting[student].add(key)
    recorder = Recorder(course, assignment)
    kernel_seconds = reference_seconds = 0.0  # the students' kernels; the masters' reference runs
    failures = 0
    started = time.perf_counter()
    with tqdm(total=len(jobs) + len(reference_jobs), initial=len(jobs) - len(fresh), desc=f"grade {assignment}",
              unit="job") as bar:
        results = executors.run(todo, executor, workers, scheduler)  # starts executing
        for student in sorted(s for s, left in waiting.items() if not left and not submissions[s].refused):
            recorder.record(student)  # executions reused from an earlier run, or nothing to execute
        for result in results:
            if result.key in reference_jobs:
                reference_seconds += result.seconds
                served = reference_jobs[result.key][1]
                try:
                    references.save(result, served)
                except InfrastructureError as exc:
                    for student in served:
                        submissions[student].infrastructure.append(f"hidden references: {exc}")
            else:
                kernel_seconds += result.seconds
                served = [result.student]
                if result.infrastructure_error is not None:
                    submissions[result.student].infrastructure.append(f"{result.notebook}: {result.infrastructure_error}")
                else:
                    cache.save(result)
            failures += result.status != "ok" or result.infrastructure_error is not None
            bar.update(1)
            bar.set_postfix(failures=failures)
            for student in served:
                waiting[student].discard(result.key)
                if not waiting[student] and not submissions[student].infrastructure:
                    recorder.record(student)
    timings["execute+record"] = time.perf_counter() - started
    timings["record (overlapped)"] = recorder.seconds
    log("timings: " + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in timings.items()))

    statuses = {}
    for student, sub in submissions.items():
        if sub.infrastructure:
            statuses[student] = (f"{INFRASTRUCTURE} (not graded, nothing cached; run `interplab grade {assignment}` "
                                 "again): " + "; ".join(sub.infrastructure))
            continue
        problems = [sub.status] if sub.status != "ok" else []
        for job in sub.jobs:
            done = cache.load(job.student, job.notebook, job.key)
            if done is not None and done.status != "ok":
                problems.append(f"{job.notebook}: {done.status}")
        if not problems and student in recorder.failed:
            problems.append(recorder.failed[student])
        statuses[student] = "; ".join(problems) or "ok"
    csv_path = course.root / "grades" / f"{assignment}.csv"
    write_rows(csv_path, [CSV_HEADER, *grade_rows(course, assignment, submissions, statuses)])
    return GradeReport(csv_path, statuses, len(fresh), len(jobs) - len(fresh),
                       sum(len(batch) for _, batch in reference_jobs.values()), len(reference_jobs),
                       kernel_seconds, reference_seconds, sum(bool(s.infrastructure) for s in submissions.values()))


def awaiting_hand_grading(course: Course, assignment: str) -> int:
    """Written answers (markdown grade cells) of recorded submissions with no manual grade yet."""
    with Gradebook(course.db_url, course.id) as gb:
        return sum(1 for submission in gb.find_assignment(assignment).submissions for notebook in submission.notebooks
                   for grade in notebook.grades if grade.cell.cell_type == "markdown" and grade.manual_score is None)


def grade_command(args: argparse.Namespace) -> int:
    course = Course.load(args.course)
    if getattr(args, "allow_unsandboxed", False):
        course.policy = dataclasses.replace(course.policy, allow_unsandboxed=True)
    report = grade_assignment(course, args.assignment, args.executor, args.workers, args.scheduler)
    problems = {s: st for s, st in report.statuses.items() if st != "ok"}
    for student, status in sorted(problems.items()):
        print(f"{student}: {status}")
    print(f"graded {len(report.statuses)} submissions ({report.executed} executed, {report.reused} reused from an earlier "
          f"run, {report.references} students' hidden references computed in {report.reference_runs} master "
          f"run(s); {len(problems)} with problems; kernels {report.kernel_seconds:.1f} s, reference runs "
          f"{report.reference_seconds:.1f} s); "
          f"grades in {report.csv_path}; "
          f"feedback in {course.root / 'feedback'}")
    written = awaiting_hand_grading(course, args.assignment)
    if written:
        print(f"{written} written answer(s) await grading by hand in the formgrader; run `interplab grade "
              f"{args.assignment}` again afterwards to put them in the CSV")
    if report.infrastructure_errors:
        print(f"{report.infrastructure_errors} submission(s) NOT graded because of an infrastructure error (not the "
              f"students' code; nothing cached): fix the cause and run `interplab grade {args.assignment}` again")
        return EXIT_INFRASTRUCTURE
    return 0


class Recorder:
    """nbgrader's own Autograde then GenerateFeedback converters for one student at a time, in this
    process, with the course's ``nbgrader_config.py``: what ``nbgrader autograde --student S`` and
    ``nbgrader generate_feedback --student S`` do (and what ``NbGraderAPI.autograde`` does), without
    starting a process, and importing the assignment's checks, for each. ReplayExecution puts in
    the executions cached by the executors, so nothing runs twice."""

    def __init__(self, course: Course, assignment: str) -> None:
        import logging

        from nbgrader.coursedir import CourseDirectory
        from traitlets.config import LoggingConfigurable

        config = Config()
        config.merge(course.nbgrader_config())
        config.merge(Config({"CourseDirectory": {"root": str(course.root)},
                             "HTMLExporter": {"template_name": "feedback"}}))
        quiet = logging.getLogger(f"interplab.grade.nbgrader.{assignment}")
        quiet.propagate = False
        quiet.setLevel(logging.INFO)
        self.host = LoggingConfigurable(config=config, log=quiet)
        self.coursedir = CourseDirectory(config=config, assignment_id=assignment)
        self.assignment = assignment
        self.submitted = course.submitted
        self.failed: dict[str, str] = {}
        self.seconds = 0.0

    def record(self, student: str) -> None:
        started = time.perf_counter()
        refused = refusal(self.submitted / student / self.assignment, student)
        if refused:  # changed since it was sanitized: nbgrader must not read it
            self.failed[student] = refused
            return
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
