"""nbgrader's exchange with one inbox folder per student (how containers keep students apart):
stock `nbgrader collect`, with InterpLab's collector plugged in through nbgrader's ExchangeFactory."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from conftest import tool_env

pytestmark = pytest.mark.slow  # runs the nbgrader command line

STAMP = "2026-11-29 10:00:00.000000 UTC"


def submission(folder: Path, claimed: str, marker: str, stamp: str = STAMP) -> None:
    sub = folder / f"{claimed}+mini+{stamp}+r4nd0m"
    sub.mkdir(parents=True)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(f"# {marker}")])
    nbformat.write(nb, sub / "mini.ipynb")
    (sub / "timestamp.txt").write_text(stamp)


def collect(course: Path, exchange: Path) -> subprocess.CompletedProcess:
    env = tool_env()
    return subprocess.run(
        [sys.executable, "-m", "nbgrader", "collect", "mini", "--update",
         f"--Exchange.root={exchange}", f"--CourseDirectory.root={course}",
         "--CourseDirectory.course_id=interplab",
         "--ExchangeFactory.collect=interplab.autograder.hub_exchange.PerStudentInboxCollect"],
        cwd=course, env=env, capture_output=True, text=True, timeout=300,
    )


def test_per_student_inboxes_are_collected_and_forged_names_refused(tmp_path):
    course, exchange = tmp_path / "course", tmp_path / "exchange"
    course.mkdir()
    (course / "nbgrader_config.py").write_text("c = get_config()\nc.CourseDirectory.course_id = 'interplab'\n")
    inbound = exchange / "interplab" / "inbound"
    submission(inbound / "alice", "alice", "alice wrote this")          # per-student inbox (containers)
    submission(inbound / "mallory", "bob", "mallory pretending to be bob")  # forged: not mallory's name
    submission(inbound, "carol", "carol, flat layout")                   # nbgrader's own layout (local hub)
    proc = collect(course, exchange)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    submitted = course / "submitted"
    assert sorted(p.name for p in submitted.iterdir()) == ["alice", "carol"]
    assert "alice wrote this" in (submitted / "alice" / "mini" / "mini.ipynb").read_text()
    assert "carol, flat layout" in (submitted / "carol" / "mini" / "mini.ipynb").read_text()
    assert "submitted as 'bob' from the inbox of 'mallory'" in proc.stdout + proc.stderr
