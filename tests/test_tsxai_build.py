"""The tsxai assignment through the real commands: the build validates it (the master scores full
marks in grading mode, the student version 0 with nothing but NotImplementedError), the solution
notebook passes every self-check offline, and the student version fails with one line per exercise."""
from __future__ import annotations

import json

import pytest

from conftest import interplab, make_course

pytestmark = pytest.mark.slow


def test_tsxai_builds_self_checks_and_fails_cleanly(tmp_path):
    course = make_course(tmp_path)
    interplab("build", "--course", str(course), "tsxai", check=True, timeout=1800)
    exercises = json.loads((course / "release" / "tsxai" / "references.json").read_text())["exercises"]
    assert len(exercises) >= 10
    solved = interplab("check", str(course / "source" / "tsxai" / "tsxai.ipynb"), timeout=900)
    assert solved.returncode == 0, solved.stdout + solved.stderr
    assert f"{len(exercises)} of {len(exercises)} exercises pass" in solved.stdout
    student = interplab("check", str(course / "release" / "tsxai" / "tsxai.ipynb"), timeout=900)
    assert student.returncode == 1
    lines = [line for line in student.stdout.splitlines() if line.startswith("tsxai.")]
    assert len(lines) == len(exercises) and all("not implemented" in line for line in lines), student.stdout
