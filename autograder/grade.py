"""``interplab grade ASSIGNMENT``: every submission through stock nbgrader autograde (with our
GradingExecute + VerifyChecks steps, from the course's nbgrader_config.py), then feedback and a CSV.

Submissions are never modified: nbgrader reads ``submitted/`` and writes ``autograded/``.
"""
from __future__ import annotations

import argparse
import csv
import io
import time
from dataclasses import dataclass
from pathlib import Path

from nbgrader.api import Gradebook, MissingEntry
from tqdm import tqdm

from interplab.autograder.course import Course, CourseError
from interplab.autograder.store import write_atomic

CSV_HEADER = ["student_id", "grade_id", "score", "max_score"]


@dataclass
class Outcome:
    student: str
    ok: bool
    seconds: float
    error: str = ""


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


def autograde_one(course: Course, assignment: str, student: str) -> Outcome:
    start = time.perf_counter()
    proc = course.nbgrader("autograde", assignment, f"--student={student}", "--force", check=False)
    ok = proc.returncode == 0
    error = "" if ok else (proc.stdout + proc.stderr).strip().splitlines()[-1:][0] if (proc.stdout + proc.stderr).strip() else "failed"
    return Outcome(student, ok, time.perf_counter() - start, error)


def grade_rows(course: Course, assignment: str, students: list[str]) -> list[list]:
    rows = []
    with Gradebook(course.db_url, course.id) as gb:
        for student in students:
            try:
                submission = gb.find_submission(assignment, student)
            except MissingEntry:
                continue
            for notebook in submission.notebooks:
                for grade in notebook.grades:
                    if grade.cell_type != "code":
                        continue
                    rows.append([student, grade.name, _num(grade.score), _num(grade.max_score)])
    return sorted(rows, key=lambda r: (r[0], r[1]))


def _num(value: float | None) -> float | int | str:
    if value is None:
        return ""
    return int(value) if float(value).is_integer() else round(float(value), 4)


def write_csv(path: Path, rows: list[list]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    writer.writerows(rows)
    write_atomic(path, buffer.getvalue())


def grade_assignment(course: Course, assignment: str, log=print) -> tuple[list[Outcome], Path]:
    if not course.store.references_path(assignment).is_file() or not course.source(assignment).is_dir():
        raise CourseError(f"assignment {assignment!r} is not built in {course.root}: run `interplab build {assignment}`")
    students = discover_submissions(course, assignment)
    if not students:
        raise CourseError(f"no submissions found in {course.submitted}/*/{assignment}/")
    for student in register_students(course, students):
        log(f"note: student {student!r} was not in the gradebook; added (submission found in submitted/)")
    outcomes = []
    with tqdm(total=len(students), desc=f"grade {assignment}", unit="submission") as bar:
        for student in students:
            outcome = autograde_one(course, assignment, student)
            outcomes.append(outcome)
            bar.update(1)
            bar.set_postfix(failures=sum(not o.ok for o in outcomes))
    course.nbgrader("generate_feedback", assignment, "--force", check=False)
    csv_path = course.root / "grades" / f"{assignment}.csv"
    write_csv(csv_path, grade_rows(course, assignment, students))
    return outcomes, csv_path


def grade_command(args: argparse.Namespace) -> int:
    from interplab.errors import UserError

    if args.executor != "local":
        raise UserError("only the local executor is available in this version")
    try:
        course = Course.load(args.course)
        outcomes, csv_path = grade_assignment(course, args.assignment)
    except CourseError as exc:
        raise UserError(str(exc)) from exc
    failed = [o for o in outcomes if not o.ok]
    for o in failed:
        print(f"grading failed for {o.student}: {o.error}")
    print(f"graded {len(outcomes) - len(failed)} of {len(outcomes)} submissions; grades in {csv_path}; "
          f"feedback in {course.root / 'feedback'}")
    return 1 if failed else 0
