"""nbgrader's exchange with one inbox folder per student (how containers keep students apart):
stock `nbgrader collect`, with InterpLab's collector plugged in through nbgrader's ExchangeFactory."""
from __future__ import annotations

import os
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
         "--ExchangeFactory.collect=interplab.autograder.hub.exchange.PerStudentInboxCollect"],
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


def test_links_and_odd_student_ids_are_refused_at_collect(tmp_path):
    """A submission that links outside itself is never followed: nbgrader's collect, run by the
    instructor, would otherwise copy the linked file (say the source notebook) as the student's."""
    course, exchange = tmp_path / "course", tmp_path / "exchange"
    course.mkdir()
    (course / "nbgrader_config.py").write_text("c = get_config()\nc.CourseDirectory.course_id = 'interplab'\n")
    secret = tmp_path / "source.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("# THE SOLUTION")]), secret)
    inbound = exchange / "interplab" / "inbound"
    later = "2026-11-29 11:00:00.000000 UTC"
    # alice: an honest submission, then a newer one whose notebook is a symlink to the solution
    submission(inbound / "alice", "alice", "alice's honest work")
    submission(inbound / "alice", "alice", "replaced", stamp=later)
    newest = inbound / "alice" / f"alice+mini+{later}+r4nd0m" / "mini.ipynb"
    newest.unlink()
    newest.symlink_to(secret)
    # bob (flat layout): a hard link to the solution
    submission(inbound, "bob", "replaced")
    hard = inbound / f"bob+mini+{STAMP}+r4nd0m" / "mini.ipynb"
    hard.unlink()
    os.link(secret, hard)
    # carol (flat layout): the submission folder itself is a symlink to the source folder
    (tmp_path / "elsewhere").mkdir()
    submission(tmp_path / "elsewhere", "carol", "carol elsewhere")
    (inbound / f"carol+mini+{STAMP}+r4nd0m").symlink_to(tmp_path / "elsewhere" / f"carol+mini+{STAMP}+r4nd0m")
    # dave: his inbox folder is a symlink; "<b>eve" is not a plain name
    submission(tmp_path / "daves", "dave", "dave's")
    (inbound / "dave").symlink_to(tmp_path / "daves")
    submission(inbound, "<b>eve", "eve")
    proc = collect(course, exchange)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log
    submitted = course / "submitted"
    assert sorted(p.name for p in submitted.iterdir()) == ["alice"]
    assert "alice's honest work" in (submitted / "alice" / "mini" / "mini.ipynb").read_text()
    assert not any(p.is_symlink() for p in submitted.rglob("*"))
    assert "THE SOLUTION" not in "".join(p.read_text() for p in submitted.rglob("*.ipynb"))
    assert f"from 'alice': mini.ipynb is a symbolic link (to {str(secret)!r})" in log
    assert "from 'bob': mini.ipynb is a hard link to a file outside the submission" in log
    assert "from 'carol': the submission folder is a symbolic link" in log
    assert "the inbox 'dave' is a symbolic link" in log
    assert "'<b>eve' is not a plain student id" in log
