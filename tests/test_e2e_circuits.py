"""End to end on the real `circuits` assignment, on a temporary copy of the course: build ->
self-check -> three submissions (the master, the untouched student notebook, two exercises wrong)
plus a cheater -> `interplab grade` -> exact scores, clean feedback, stock nbgrader afterwards."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from interplab.checking import decode

from conftest import copy_of_build, edit_solution, interplab, read_csv, read_csv_rows, tool_env

pytestmark = pytest.mark.slow

# Two plausible mistakes: the loss is not shifted (predicts the current token), and the
# detector keeps query 0 (which can only attend to itself).
UNSHIFTED_LOSS = '''def per_token_loss(logits, tokens):
    log_probs = logits[:, 1:].log_softmax(dim=-1)
    return -log_probs.gather(dim=-1, index=tokens[:, 1:, None])[..., 0]
'''
QUERY_ZERO_KEPT = '''def attention_score(pattern, target):
    return (pattern * target).sum(-1)[..., target.any(-1)].mean(dim=(0, -1))
'''
# Every comparison helper a naive grader might trust, and `check` itself, patched to pass; the
# functions themselves are wrong.
CHEAT = '''import numpy, torch, torch.testing, interplab, interplab.checking
numpy.allclose = lambda *a, **k: True
torch.allclose = lambda *a, **k: True
torch.testing.assert_close = lambda *a, **k: None
interplab.check = interplab.checking.check = lambda *a, **k: print("\\u2714 passed")
check = interplab.check
def per_token_loss(logits, tokens):
    return torch.zeros(tokens.shape[0], tokens.shape[1] - 1)
'''


def _leaves(value):
    """The arrays and numbers inside a decoded output (lists and dicts walked)."""
    if isinstance(value, dict):
        for item in value.values():
            yield from _leaves(item)
    elif isinstance(value, list):
        for item in value:
            yield from _leaves(item)
    elif value is not None and not isinstance(value, str):
        yield value


@pytest.fixture(scope="module")
def course(built_course, tmp_path_factory):
    """A copy of the run's one build of circuits (tests/conftest.py), graded here."""
    return copy_of_build(built_course("circuits"), tmp_path_factory.mktemp("e2e"))


def _grade_cells(course):
    nb = json.loads((course / "source" / "circuits" / "circuits.ipynb").read_text())
    return {c["metadata"]["nbgrader"]["grade_id"]: c["metadata"]["nbgrader"]["points"] for c in nb["cells"]
            if c["cell_type"] == "code" and c.get("metadata", {}).get("nbgrader", {}).get("grade")}  # autograded


def test_assignment_size(course):
    cells = _grade_cells(course)
    assert len(cells) >= 8 and sum(cells.values()) >= 8


def test_self_check_passes_on_the_master_and_fails_cleanly_on_the_student_version(course):
    master = interplab("check", str(course / "source" / "circuits" / "circuits.ipynb"))
    assert master.returncode == 0, master.stdout + master.stderr
    student = interplab("check", str(course / "release" / "circuits" / "circuits.ipynb"))
    assert student.returncode == 1
    lines = [line for line in student.stdout.splitlines() if line.startswith("circuits.")]
    hidden = json.loads((course / ".interplab" / "circuits" / "references.json").read_text())
    assert len(lines) == len(hidden["exercises"])
    assert all("FAIL" in line and "not implemented" in line for line in lines), student.stdout


def test_grade_three_submissions_and_a_cheater(course):
    source_nb = course / "source" / "circuits" / "circuits.ipynb"
    release_nb = course / "release" / "circuits" / "circuits.ipynb"
    submitted = course / "submitted"
    (submitted / "master" / "circuits").mkdir(parents=True)
    (submitted / "master" / "circuits" / "circuits.ipynb").write_bytes(source_nb.read_bytes())
    (submitted / "untouched" / "circuits").mkdir(parents=True)
    (submitted / "untouched" / "circuits" / "circuits.ipynb").write_bytes(release_nb.read_bytes())
    edit_solution(source_nb, {"impl_per_token_loss": UNSHIFTED_LOSS, "impl_attention_score": QUERY_ZERO_KEPT},
                  submitted / "two_wrong" / "circuits" / "circuits.ipynb")
    edit_solution(source_nb, {"impl_per_token_loss": CHEAT}, submitted / "cheater" / "circuits" / "circuits.ipynb")

    proc = interplab("grade", "circuits", "--course", str(course))
    assert proc.returncode == 0, proc.stdout + proc.stderr

    cells = _grade_cells(course)
    grades = read_csv(course / "grades" / "circuits.csv")
    for grade_id, points in cells.items():
        assert grades[("master", grade_id)] == (points, points), grade_id
        assert grades[("untouched", grade_id)] == (0, points), grade_id
        wrong = grade_id in ("test_per_token_loss", "test_attention_score")
        assert grades[("two_wrong", grade_id)] == (0 if wrong else points, points), grade_id
        # Replacing `check` leaves every later test cell without a check result: 0 everywhere.
        assert grades[("cheater", grade_id)] == (0, points), grade_id
    assert {status for *_, status in read_csv_rows(course / "grades" / "circuits.csv").values()} == {"ok"}

    feedback = (course / "feedback" / "two_wrong" / "circuits" / "circuits.html").read_text()
    assert "circuits.per_token_loss" in feedback and "circuits.attention_score" in feedback

    hidden = json.loads((course / ".interplab" / "circuits" / "references.json").read_text())
    for student in ("master", "untouched", "two_wrong", "cheater"):
        html = (course / "feedback" / student / "circuits" / "circuits.html").read_text()
        for exercise in hidden["exercises"].values():
            for outcome in exercise["hidden"]:
                value = decode(outcome["output"])
                for leaf in _leaves(value):
                    flat = np.ravel(np.asarray(leaf, dtype=np.float64))
                    for x in flat[:6]:
                        if abs(x) > 1e-3:  # zeros and tiny numbers appear in any page
                            assert f"{x:.5f}" not in html, (student, x)

    env = tool_env()
    listing = subprocess.run([sys.executable, "-m", "nbgrader", "db", "student", "list"], cwd=course,
                             capture_output=True, text=True, env=env)
    assert listing.returncode == 0 and "two_wrong" in listing.stdout
    export = subprocess.run([sys.executable, "-m", "nbgrader", "export"], cwd=course, capture_output=True,
                            text=True, env=env)
    assert export.returncode == 0 and "cheater" in (course / "grades.csv").read_text()
