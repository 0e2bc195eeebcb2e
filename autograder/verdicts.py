"""What each student's last autograde found, per exercise, kept for class analytics.

nbgrader's gradebook keeps a score per test cell; the class report (``interplab report``) needs more:
per exercise whether it passed on the student's hidden inputs, the fraction of hidden inputs that
passed, the known mistake (probe) the outputs matched, and which limit the run hit (time, memory,
kernel death, output, disk). ``VerifyChecks`` (``steps.py``) writes it as it judges, one JSON file
per student in the instructor store, ``.interplab/<a>/verdicts/<student>.json``::

    {"student": "alice", "notebooks": {"mini": {"limit": null, "status": "ok",
        "exercises": {"mini.softmax": {"passed": false, "fraction": 0.0, "probe": "axis0"}}}}}

Everything in it is computed by the grader (verdicts, probe names from the instructor's checks, our
own status words); nothing is copied from the student's notebook but what the grader judged.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from interplab.autograder.store import Store, write_atomic
from interplab.autograder.submissions import valid_student_id
from interplab.checking import Exercise, Verdict


def probe_name(exercise: Exercise, verdict: Verdict) -> str:
    """The name of the probe whose message the verdict quotes (``Verdict.mistake``), or ''."""
    if not verdict.mistake:
        return ""
    return next((p.name for p in exercise.probes if p.message == verdict.mistake), "")


def exercise_record(exercise: Exercise, verdict: Verdict) -> dict[str, Any]:
    return {"passed": verdict.passed, "fraction": round(verdict.fraction, 4), "probe": probe_name(exercise, verdict)}


def path(store: Store, assignment: str, student: str) -> Path:
    return store.root / assignment / "verdicts" / f"{student}.json"


def save(store: Store, assignment: str, student: str, notebook: str, limit: tuple[str, str] | None,
         exercises: dict[str, dict[str, Any]]) -> None:
    """Record one notebook of one student (replacing that notebook's earlier record)."""
    if not valid_student_id(student):  # a file name in the store: plain names only (refused earlier anyway)
        return
    target = path(store, assignment, student)
    record = load_one(target) or {"student": student, "notebooks": {}}
    record["notebooks"][notebook] = {"limit": limit[0] if limit else None, "status": limit[1] if limit else "ok",
                                     "exercises": exercises}
    store.folder(assignment, "verdicts")
    write_atomic(target, json.dumps(record, sort_keys=True), mode=0o600)


def forget(store: Store, assignment: str, students: list[str]) -> None:
    """Drop these students' records before they are graded again: a record never outlives the
    submission it was made from (a later refused or incomplete one records nothing)."""
    for student in students:
        if valid_student_id(student):
            path(store, assignment, student).unlink(missing_ok=True)


def load_one(file: Path) -> dict[str, Any] | None:
    try:
        record = json.loads(file.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("notebooks"), dict) else None


def load(store: Store, assignment: str) -> dict[str, dict[str, Any]]:
    """Every student's record of ``assignment``: student id -> record."""
    folder = store.root / assignment / "verdicts"
    records = {}
    for file in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        record = load_one(file)
        if record is not None:
            records[file.stem] = record
    return records
