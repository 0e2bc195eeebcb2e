"""Deadlines: the course's schedule (weeks, due dates), its late-penalty policy and per-student
extensions, applied through nbgrader's own late-submission machinery.

Data flow: ``course.toml`` (``[schedule]``: week and due date per assignment, in course order;
``[late_policy]``) and ``extensions.json`` (written by ``interplab extend``) -> the gradebook
(the assignment's ``duedate``, each student's ``extension``: what nbgrader's
``SubmittedAssignment.total_seconds_late`` reads) -> nbgrader's ``AssignLatePenalties`` step,
configured in ``nbgrader_config.py`` with :class:`CourseLatePenalty` -> each notebook's
``late_submission_penalty`` -> the ``late_penalty`` row of ``course/grades/<a>.csv``.
So stock ``nbgrader autograde`` and the formgrader apply the same penalties as ``interplab grade``.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from nbgrader.api import Gradebook, MissingEntry
from nbgrader.plugins import LateSubmissionPlugin
from traitlets import Float

from interplab.autograder.course import Course, CourseError
from interplab.autograder.store import write_atomic

EXTENSIONS_FILE = "extensions.json"
PENALTY_ROW = "late_penalty"  # the grade_id of the CSV row that shows a submission's late penalty
DAY = 86400.0


@dataclass(frozen=True)
class LatePolicy:
    """``[late_policy]`` of course.toml: after ``grace_minutes``, ``per_day`` of the notebook's
    score is lost per started day late; from ``zero_after_days`` on, the whole score."""

    grace_minutes: float = 0.0
    per_day: float = 0.0
    zero_after_days: float = math.inf

    @classmethod
    def from_settings(cls, table: dict[str, Any], where: str = "course.toml") -> "LatePolicy":
        known = {"grace_minutes", "per_day", "zero_after_days"}
        unknown = sorted(set(table) - known)
        if unknown:
            raise CourseError(f"{where}: [late_policy] has unknown key(s) {unknown}; known: {sorted(known)}")
        values = {}
        for key, value in table.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise CourseError(f"{where}: [late_policy] {key} must be a number >= 0, got {value!r}")
            values[key] = float(value)
        if values.get("per_day", 0) > 1:
            raise CourseError(f"{where}: [late_policy] per_day is a fraction of the score (0.1 = 10 %), got {values['per_day']}")
        return cls(**values)

    def penalty(self, score: float, seconds_late: float) -> float:
        """Points taken from a notebook that scored ``score`` and came ``seconds_late`` late."""
        late = seconds_late - 60 * self.grace_minutes
        if late <= 0 or score <= 0:
            return 0.0
        days = math.ceil(late / DAY)
        if days >= self.zero_after_days:
            return float(score)
        return round(min(1.0, self.per_day * days) * score, 4)

    def describe(self) -> str:
        parts = []
        if self.grace_minutes:
            parts.append(f"{self.grace_minutes:g} minutes of grace")
        parts.append(f"{100 * self.per_day:g} % of the score per started day late" if self.per_day else "no penalty per day")
        if math.isfinite(self.zero_after_days):
            parts.append(f"0 points from {self.zero_after_days:g} days late on")
        return ", ".join(parts)


@dataclass(frozen=True)
class Due:
    assignment: str
    week: int
    due: dt.datetime  # timezone-aware

    def local(self) -> str:
        return self.due.strftime("%a %d %b %Y, %H:%M %Z")


@dataclass(frozen=True)
class Schedule:
    """``[schedule]`` of course.toml: the course's assignments in course order, each with its week
    and due date (a local time in ``timezone`` unless it names an offset)."""

    timezone: ZoneInfo
    start: dt.date | None
    items: tuple[Due, ...]
    policy: LatePolicy

    @classmethod
    def of(cls, course: Course) -> "Schedule":
        where = str(course.root / "course.toml")
        table = dict(course.settings.get("schedule", {}))
        policy = LatePolicy.from_settings(course.settings.get("late_policy", {}), where)
        try:
            zone = ZoneInfo(str(table.pop("timezone", "UTC")))
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise CourseError(f"{where}: [schedule] timezone is not a time zone name: {exc}") from exc
        start = table.pop("start", None)
        if start is not None and not isinstance(start, dt.date):
            raise CourseError(f"{where}: [schedule] start must be a date (2027-02-01), got {start!r}")
        items = []
        for assignment, entry in table.items():
            if not isinstance(entry, dict) or set(entry) != {"week", "due"}:
                raise CourseError(f"{where}: [schedule.{assignment}] needs exactly week = N and due = 2027-02-08T23:59")
            due = entry["due"]
            if isinstance(due, dt.date) and not isinstance(due, dt.datetime):
                due = dt.datetime.combine(due, dt.time(23, 59))
            if not isinstance(due, dt.datetime) or not isinstance(entry["week"], int):
                raise CourseError(f"{where}: [schedule.{assignment}] week must be an integer and due a date-time, "
                                  f"got {entry['week']!r}, {entry['due']!r}")
            items.append(Due(assignment, entry["week"], due if due.tzinfo else due.replace(tzinfo=zone)))
        items.sort(key=lambda d: (d.week, d.due))  # course order: by week, the file's order within one
        return cls(zone, start, tuple(items), policy)

    def get(self, assignment: str) -> Due | None:
        return next((d for d in self.items if d.assignment == assignment), None)

    def order(self, assignments: list[str]) -> list[str]:
        """``assignments`` in course order; those not on the schedule last, alphabetically."""
        rank = {d.assignment: i for i, d in enumerate(self.items)}
        return sorted(assignments, key=lambda a: (rank.get(a, len(rank)), a))



def load_extensions(course: Course) -> dict[str, dict[str, dt.datetime]]:
    """assignment -> student -> the extended due date (``extensions.json``, kept by ``interplab extend``)."""
    path = course.root / EXTENSIONS_FILE
    if not path.is_file():
        return {}
    try:
        raw = json.loads(path.read_text())
        return {a: {s: dt.datetime.fromisoformat(until) for s, until in students.items()} for a, students in raw.items()}
    except (ValueError, AttributeError, TypeError) as exc:
        raise CourseError(f"{path} is not a valid extensions file ({exc}); fix or delete it") from exc


def _utc_naive(moment: dt.datetime) -> dt.datetime:
    """How nbgrader's gradebook stores times."""
    return moment.astimezone(dt.timezone.utc).replace(tzinfo=None)


def apply_deadlines(course: Course, assignment: str, students: list[str] | None = None) -> None:
    """Write the assignment's due date and the extensions of ``students`` (default: every student
    with one) into the gradebook, where nbgrader's late-submission step reads them."""
    due = Schedule.of(course).get(assignment)
    extensions = load_extensions(course).get(assignment, {})
    with Gradebook(course.db_url, course.id) as gb:
        try:
            record = gb.find_assignment(assignment)
        except MissingEntry:
            return  # not released yet: the build applies it
        record.duedate = _utc_naive(due.due) if due else None
        gb.db.commit()
        for student in (students if students is not None else sorted(extensions)):
            until = extensions.get(student)
            extension = (until - due.due) if (until and due) else None
            if extension is None:
                try:  # a revoked extension is removed, a submission without one left alone
                    submission = gb.find_submission(assignment, student)
                except MissingEntry:
                    continue
                submission.extension = None
                gb.db.commit()
                continue
            try:
                gb.find_student(student)
            except MissingEntry:
                gb.add_student(student)
            gb.update_or_create_submission(assignment, student, extension=extension)


def penalty_status(submission: Any, penalty: float, policy: LatePolicy) -> str:
    """The ``status`` of a student's ``late_penalty`` row (nbgrader's ``SubmittedAssignment``):
    ok, or how late, against which due date, and the rule that applied."""
    late = submission.total_seconds_late
    if late <= 60 * policy.grace_minutes:
        return "ok"
    hours = late / 3600
    when = f"{hours / 24:.1f} days" if hours >= 24 else f"{hours:.1f} hours"
    extended = ", with an extension" if submission.extension else ""
    return f"late by {when} (due {submission.duedate:%Y-%m-%d %H:%M} UTC{extended}): -{penalty:g} points; {policy.describe()}"


class CourseLatePenalty(LateSubmissionPlugin):
    """nbgrader's late-submission plugin with the course's ``[late_policy]`` (set from course.toml
    in ``nbgrader_config.py``)."""

    grace_minutes = Float(0.0).tag(config=True)
    per_day = Float(0.0).tag(config=True)
    zero_after_days = Float(math.inf).tag(config=True)

    def late_submission_penalty(self, student_id: str, score: float, total_seconds_late: float) -> float:
        return LatePolicy(self.grace_minutes, self.per_day, self.zero_after_days).penalty(score or 0.0, total_seconds_late)


def policy_config(course_toml: str | Path) -> dict[str, float]:
    """The plugin's settings from a course.toml (for ``nbgrader_config.py``)."""
    course = Course.load(Path(course_toml).parent)
    policy = Schedule.of(course).policy
    return {"grace_minutes": policy.grace_minutes, "per_day": policy.per_day, "zero_after_days": policy.zero_after_days}


def parse_until(text: str, zone: ZoneInfo) -> dt.datetime:
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError as exc:
        raise CourseError(f"--until {text!r} is not a date or date-time (2027-02-10 or 2027-02-10T23:59)") from exc
    if len(text) <= 10:  # a date alone: the end of that day
        moment = moment.replace(hour=23, minute=59)
    return moment if moment.tzinfo else moment.replace(tzinfo=zone)


def extend_command(args: argparse.Namespace) -> int:
    """``interplab extend ASSIGNMENT STUDENT --until WHEN`` (or ``--revoke``)."""
    from interplab.autograder.submissions import valid_student_id

    course = Course.load(args.course)
    schedule = Schedule.of(course)
    due = schedule.get(args.assignment)
    if due is None:
        raise CourseError(f"{args.assignment!r} has no due date in [schedule] of {course.root / 'course.toml'}")
    if not valid_student_id(args.student):
        raise CourseError(f"{args.student!r} is not a plain student id")
    extensions = load_extensions(course)
    mine = extensions.setdefault(args.assignment, {})
    if args.revoke:
        mine.pop(args.student, None)
        message = f"{args.student}: extension of {args.assignment} revoked (due {due.local()})"
    else:
        until = parse_until(args.until, schedule.timezone)
        if until <= due.due:
            raise CourseError(f"--until {until.isoformat()} is not after the due date {due.due.isoformat()}")
        mine[args.student] = until
        message = f"{args.student}: {args.assignment} due {until.astimezone(schedule.timezone):%a %d %b %Y, %H:%M %Z} (was {due.local()})"
    text = json.dumps({a: {s: t.isoformat() for s, t in sorted(st.items())} for a, st in sorted(extensions.items()) if st},
                      indent=1)
    write_atomic(course.root / EXTENSIONS_FILE, text + "\n")
    apply_deadlines(course, args.assignment, [args.student])
    print(message)
    return 0
