"""``interplab export ASSIGNMENT --format canvas|moodle|csv``: the assignment's grades as a file the
university's LMS imports, ``course/grades/<a>-<format>.csv``.

Totals come from ``course/grades/<a>.csv`` (``totals.py``: the sum of every row of a student). The
hub knows students by their hub user names; the LMS by its own ids. The mapping is a CSV,
``course/lms_users.csv`` by default (``--mapping FILE``), with a ``hub_user`` column and any of
``name``, ``lms_id``, ``sis_id``, ``login``, ``email``, ``section``. Without a mapping file the
hub user name is taken as the LMS login (a hub whose users log in with the university's accounts,
through LTI or OAuth). With one, every graded student must be in it: an LMS skips rows it cannot
match, silently, so an unmapped student is an error here instead.

Formats, as each LMS documents its grade import:

- ``canvas`` (Grades > Import): the columns of Canvas's own gradebook export, ``Student, ID, SIS
  User ID, SIS Login ID, Section``, then one column per assignment named by its title (a title of an
  existing Canvas assignment, ``Name (1234)``, updates it; a new title creates one), and a second
  row ``Points Possible``;
- ``moodle`` (Grades > Import > CSV file): one identifier column per user field Moodle can map
  from (``Username``, ``ID number``, ``Email address``) and one grade column; at import choose the
  identifier ("Map from" / "Map to") and the grade item the column goes to;
- ``csv``: ``student_id,score,max_score,percent`` with hub user names.

A student with no score (an infrastructure error while grading) stops the export: grade again first.
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

from interplab.autograder.course import Course, CourseError
from interplab.autograder.totals import Total, grades_csv, number, read_totals, write_rows

FORMATS = ("canvas", "moodle", "csv")
MAPPING_FIELDS = ("name", "lms_id", "sis_id", "login", "email", "section")
DEFAULT_MAPPING = "lms_users.csv"


def read_mapping(path: Path) -> dict[str, dict[str, str]]:
    """Hub user name -> the student's LMS fields."""
    try:
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            if "hub_user" not in (reader.fieldnames or []):
                raise CourseError(f"{path}: the student id mapping needs a hub_user column "
                                  f"(and any of {', '.join(MAPPING_FIELDS)})")
            mapping = {}
            for row in reader:
                user = (row.get("hub_user") or "").strip()
                if user in mapping:
                    raise CourseError(f"{path}: hub user {user!r} appears twice")
                if user:
                    mapping[user] = {f: (row.get(f) or "").strip() for f in MAPPING_FIELDS}
            return mapping
    except (OSError, UnicodeDecodeError) as exc:
        raise CourseError(f"the student id mapping {path} cannot be read ({exc})") from exc


def lms_fields(totals: list[Total], mapping: dict[str, dict[str, str]] | None) -> dict[str, dict[str, str]]:
    if mapping is None:
        return {t.student: {**dict.fromkeys(MAPPING_FIELDS, ""), "login": t.student} for t in totals}
    unmapped = [t.student for t in totals if t.student not in mapping]
    if unmapped:
        raise CourseError(f"{len(unmapped)} graded student(s) missing from the id mapping (an LMS would skip them "
                          f"silently): {', '.join(unmapped[:10])}{' ...' if len(unmapped) > 10 else ''}")
    return {t.student: mapping[t.student] for t in totals}


def rows(fmt: str, totals: list[Total], fields: dict[str, dict[str, str]], title: str) -> list[list[object]]:
    if fmt == "csv":
        return [["student_id", "score", "max_score", "percent"],
                *[[t.student, number(t.score), number(t.max_score), round(t.percent, 2)] for t in totals]]
    if fmt == "canvas":
        maximum = max((t.max_score for t in totals), default=0)
        return [["Student", "ID", "SIS User ID", "SIS Login ID", "Section", title],
                ["Points Possible", "", "", "", "", number(maximum)],
                *[[fields[t.student]["name"], fields[t.student]["lms_id"], fields[t.student]["sis_id"],
                   fields[t.student]["login"], fields[t.student]["section"], number(t.score)] for t in totals]]
    if fmt == "moodle":
        return [["Username", "ID number", "Email address", title],
                *[[fields[t.student]["login"], fields[t.student]["sis_id"], fields[t.student]["email"], number(t.score)]
                  for t in totals]]
    raise CourseError(f"unknown format {fmt!r}: choose {', '.join(FORMATS)}")


def export(course: Course, assignment: str, fmt: str, mapping_path: Path | None = None, title: str | None = None) -> Path:
    if fmt not in FORMATS:
        raise CourseError(f"unknown format {fmt!r}: choose {', '.join(FORMATS)}")
    totals = list(read_totals(course, assignment).values())
    ungraded = [t.student for t in totals if t.score is None]
    if ungraded:
        raise CourseError(f"{len(ungraded)} student(s) have no score in {grades_csv(course, assignment)} (an infrastructure "
                          f"error while grading): run `interplab grade {assignment}` again first ({', '.join(ungraded[:10])})")
    default = course.root / DEFAULT_MAPPING
    if mapping_path is not None and not mapping_path.is_file():
        raise CourseError(f"no student id mapping at {mapping_path}")
    mapping_path = mapping_path or (default if default.is_file() else None)
    fields = lms_fields(totals, read_mapping(mapping_path) if mapping_path else None)
    path = course.root / "grades" / f"{assignment}-{fmt}.csv"
    write_rows(path, rows(fmt, totals, fields, title or assignment))
    return path


def export_command(args: argparse.Namespace) -> int:
    path = export(Course.load(args.course), args.assignment, args.format, args.mapping, args.title)
    print(f"interplab export: {args.format} gradebook of {args.assignment} in {path}")
    return 0
