"""Each student's total on an assignment, read from ``course/grades/<a>.csv`` (what ``interplab
grade`` writes): the one reader the class report and the LMS export share; and how the report,
similarity and export commands write their CSV files."""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from interplab.autograder.course import Course, CourseError
from interplab.autograder.store import write_atomic


@dataclass(frozen=True)
class Total:
    student: str
    score: float | None           # None: not graded (an infrastructure error; grade again)
    max_score: float
    status: str

    @property
    def percent(self) -> float | None:
        if self.score is None:
            return None
        return 100.0 * self.score / self.max_score if self.max_score else 0.0


def grades_csv(course: Course, assignment: str) -> Path:
    return course.root / "grades" / f"{assignment}.csv"


def read_totals(course: Course, assignment: str) -> dict[str, Total]:
    """Student id -> total over every row of the grades CSV (autograded and, where present, manually
    graded cells), in student order."""
    path = grades_csv(course, assignment)
    if not path.is_file():
        raise CourseError(f"no grades for {assignment!r} ({path} is missing): run `interplab grade {assignment}` first")
    scores: dict[str, list[float | None]] = {}
    maxima: dict[str, float] = {}
    statuses: dict[str, str] = {}
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"student_id", "score", "max_score"} - set(reader.fieldnames or [])
        if missing:
            raise CourseError(f"{path} lacks the column(s) {', '.join(sorted(missing))}: regrade with `interplab grade {assignment}`")
        for row in reader:
            student = row["student_id"]
            try:
                score = float(row["score"]) if row["score"] != "" else None
                maximum = float(row["max_score"])
            except ValueError as exc:
                raise CourseError(f"{path}: a score of {student!r} is not a number ({exc})") from exc
            scores.setdefault(student, []).append(score)
            maxima[student] = maxima.get(student, 0.0) + maximum
            statuses[student] = row.get("status") or "ok"
    return {s: Total(s, None if None in scores[s] else round(sum(scores[s]), 4), round(maxima[s], 4), statuses[s])
            for s in sorted(scores)}


def number(value: float) -> float | int:
    """A score as a CSV cell: 3 rather than 3.0, at most four decimals."""
    return int(value) if float(value).is_integer() else round(float(value), 4)


def write_rows(path: Path, rows: list[list[object]]) -> None:
    """A CSV file (header first), written atomically."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    write_atomic(path, buffer.getvalue())
