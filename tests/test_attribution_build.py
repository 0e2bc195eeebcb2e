"""The attribution assignment through the real command line, offline, on a temporary copy of the
course: `interplab build` (whose validation requires the master to score full marks and the student
version to raise nothing but NotImplementedError), then `interplab check` on the solution notebook
(every check passes; its time is printed against the 120 s budget) and on the student notebook
(fails cleanly, every row NotImplementedError)."""
from __future__ import annotations

import time

import pytest

from conftest import interplab, make_course

pytestmark = pytest.mark.slow
N_EXERCISES = 11


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    course = make_course(tmp_path_factory.mktemp("attribution"))
    interplab("build", "--course", str(course), "attribution", check=True)
    return course


def test_solution_notebook_passes_every_check_within_budget(course) -> None:
    start = time.perf_counter()
    proc = interplab("check", str(course / "source" / "attribution" / "attribution.ipynb"))
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{N_EXERCISES} of {N_EXERCISES} exercises pass" in proc.stdout, proc.stdout
    print(f"the solution notebook's self-check took {elapsed:.0f} s")  # measured, not asserted


def test_student_notebook_fails_cleanly(course) -> None:
    proc = interplab("check", str(course / "release" / "attribution" / "attribution.ipynb"))
    assert proc.returncode != 0
    assert f"0 of {N_EXERCISES} exercises pass" in proc.stdout, proc.stdout
    rows = [line for line in proc.stdout.splitlines() if line.startswith("attribution.")]
    assert len(rows) == N_EXERCISES and all("NotImplementedError" in row for row in rows), proc.stdout
