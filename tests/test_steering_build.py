"""The steering assignment through the real command line, offline, on a temporary copy of the
course: `interplab build` (whose validation requires the master to score full marks and the
student version to raise nothing but NotImplementedError), then `interplab check` on the solution
notebook (every check passes; the time is printed, the budget is 120 s) and on the student notebook
(fails cleanly, one NotImplementedError row per exercise)."""
from __future__ import annotations

import json
import time

import pytest

from conftest import interplab, make_course

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    course = make_course(tmp_path_factory.mktemp("steering"))
    interplab("build", "--course", str(course), "steering", check=True)
    return course


def _n_exercises(course) -> int:
    return len(json.loads((course / "release" / "steering" / "references.json").read_text())["exercises"])


def test_solution_notebook_passes_every_check(course) -> None:
    n = _n_exercises(course)
    assert n >= 8
    start = time.perf_counter()
    proc = interplab("check", str(course / "source" / "steering" / "steering.ipynb"))
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{n} of {n} exercises pass" in proc.stdout, proc.stdout
    print(f"the solution notebook's self-check took {elapsed:.0f} s")  # measured, not asserted


def test_student_notebook_fails_cleanly(course) -> None:
    n = _n_exercises(course)
    proc = interplab("check", str(course / "release" / "steering" / "steering.ipynb"))
    assert proc.returncode != 0
    assert f"0 of {n} exercises pass" in proc.stdout, proc.stdout
    rows = [line for line in proc.stdout.splitlines() if line.startswith("steering.")]
    assert len(rows) == n and all("NotImplementedError" in row for row in rows), proc.stdout


def test_release_hides_the_known_mistakes(course) -> None:
    released = (course / "release" / "steering" / "checks.py").read_text()
    assert "def _sweep(" not in released and "def _project(" not in released  # near-solutions stay with the instructor
