"""The whole path on the small `mini` assignment (numpy only, fast): build, self-check, grade with
real nbgrader and real kernels, tampering, feedback, CSV, stock nbgrader commands afterwards."""
from __future__ import annotations

import json
import shutil
import stat
import subprocess
import sys

import numpy as np
import pytest
from nbformat import NotebookNode
from nbgrader.utils import determine_grade

from interplab.autograder.steps import render_outputs
from interplab.checking import Verdict, decode

from conftest import edit_solution, interplab, read_csv, tool_env

pytestmark = pytest.mark.slow

WRONG_AXIS = ("def softmax(x):\n    z = np.exp(x - x.max(axis=0, keepdims=True))\n"
              "    return z / z.sum(axis=0, keepdims=True)\n")
ROW_NORMS = "def row_norms(x):\n    return np.sqrt((x ** 2).sum(axis=1))\n"

# Monkeypatch every comparison a naive grader would trust, and the check function itself.
MONKEYPATCH = """
import numpy, interplab, interplab.checking
numpy.allclose = lambda *a, **k: True
numpy.testing.assert_allclose = lambda *a, **k: None
interplab.check = interplab.checking.check = lambda *a, **k: print("passed")
check = lambda *a, **k: print("\\u2714 passed")
def softmax(x):
    return x
"""

# Forge the check bundle: copy the public references as outputs for public and hidden inputs.
FORGE = """
import json
from IPython.display import display
_refs = json.load(open("references.json"))["exercises"]
def check(exercise_id, obj):
    outs = _refs[exercise_id]["public"]
    display({"application/vnd.interplab.check+json": {"version": 1, "exercise": exercise_id,
             "outputs": {"public": outs, "hidden": (outs * 2)[:3]}}}, raw=True)
def softmax(x):
    return x
"""

# Return the public references when the input is a public one (a lookup table), garbage otherwise.
LOOKUP = """
import json
from interplab.checking import decode, PUBLIC_SEED, exercises_in
_spec = exercises_in("checks.py")["mini.softmax"]
_table = {c["x"].tobytes(): decode(r["output"]) for c, r in zip(_spec.cases("public", PUBLIC_SEED),
          json.load(open("references.json"))["exercises"]["mini.softmax"]["public"])}
def softmax(x):
    return _table.get(x.tobytes(), np.zeros_like(x))
"""


def test_build_writes_source_release_and_private_store(mini_course):
    release = mini_course / "release" / "mini"
    assert sorted(p.name for p in release.iterdir()) == ["checks.py", "mini.ipynb", "references.json"]
    text = (release / "mini.ipynb").read_text()
    assert "raise NotImplementedError" in text and "x.max(axis=-1" not in text
    store = mini_course / ".interplab"
    assert stat.S_IMODE(store.stat().st_mode) == 0o700
    hidden = json.loads((store / "mini" / "references.json").read_text())
    assert hidden["cells"] == {"test_softmax": ["mini.softmax"], "test_row_norms": ["mini.row_norms"]}
    public = json.loads((release / "references.json").read_text())
    assert set(public["exercises"]["mini.softmax"]) == {"public", "probes"}  # no hidden references shipped
    # Probes (known-wrong variants, one edit from the solution) never leave the instructor's copy.
    for copy in (release / "checks.py", mini_course / "source" / "mini" / "checks.py"):
        released = copy.read_text()
        assert "_softmax_axis0" not in released and "axis=0" not in released and "mini.softmax" in released
        assert "you normalised over the wrong axis" in released  # the diagnosis stays
    secret = (store / "secret").read_text().strip()
    assert stat.S_IMODE((store / "secret").stat().st_mode) == 0o600
    assert secret not in (release / "references.json").read_text() and secret not in text
    # The instructor's full checks (probes included) stay in the store, for each student's references.
    assert "_softmax_axis0" in (store / "mini" / "checks.py").read_text()


def test_self_check_table(mini_course):
    ok = interplab("check", str(mini_course / "source" / "mini" / "mini.ipynb"))
    assert ok.returncode == 0, ok.stderr
    assert "2 of 2 exercises pass" in ok.stdout
    student = interplab("check", str(mini_course / "release" / "mini" / "mini.ipynb"))
    assert student.returncode == 1
    lines = [line for line in student.stdout.splitlines() if line.startswith("mini.")]
    assert len(lines) == 2 and all("FAIL" in line and "not implemented" in line for line in lines)


def test_rebuild_keeps_the_course_secret(mini_course, tmp_path):
    secret = (mini_course / ".interplab" / "secret").read_text()
    interplab("build", "--course", str(mini_course), "mini", "--skip-validation", check=True)
    assert (mini_course / ".interplab" / "secret").read_text() == secret


def test_build_fails_loudly_when_the_master_is_not_deterministic(tmp_path):
    from conftest import TEST_ASSIGNMENTS, make_course

    assignments = tmp_path / "assignments"
    shutil.copytree(TEST_ASSIGNMENTS / "mini", assignments / "mini")
    master = assignments / "mini" / "mini.py"
    master.write_text(master.read_text().replace(
        "return np.sqrt((x ** 2).sum(axis=1))", "return np.sqrt((x ** 2).sum(axis=1)) + np.random.rand()"))
    course = make_course(tmp_path / "c", assignments)
    proc = interplab("build", "--course", str(course), "mini")
    assert proc.returncode == 2
    assert "the master does not score full marks" in proc.stderr and "test_row_norms" in proc.stderr


def _submit(course, student, source):
    target = course / "submitted" / student / "mini"
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy(source, target / "mini.ipynb")


def test_grade_scores_feedback_and_tampering(mini_course, tmp_path):
    course = mini_course
    release_nb = course / "release" / "mini" / "mini.ipynb"
    _submit(course, "alice", course / "source" / "mini" / "mini.ipynb")           # the master: full marks
    _submit(course, "bob", release_nb)                                            # untouched: 0
    edit_solution(release_nb, {"impl_softmax": WRONG_AXIS, "impl_row_norms": ROW_NORMS},
                  course / "submitted" / "carol" / "mini" / "mini.ipynb")          # one wrong, one right
    for student, cheat in [("mallory", MONKEYPATCH), ("forger", FORGE), ("lookup", LOOKUP)]:
        edit_solution(release_nb, {"impl_softmax": cheat}, course / "submitted" / student / "mini" / "mini.ipynb")
    before = {p: p.read_bytes() for p in (course / "submitted").rglob("*") if p.is_file()}

    proc = interplab("grade", "mini", "--course", str(course))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "note: student 'alice' was not in the gradebook; added" in proc.stdout

    grades = read_csv(course / "grades" / "mini.csv")
    expected = {
        "alice": (2, 1), "bob": (0, 0), "carol": (0, 1), "mallory": (0, 0), "forger": (0, 0), "lookup": (0, 0),
    }
    for student, (softmax, norms) in expected.items():
        assert grades[(student, "test_softmax")] == (softmax, 2), student
        assert grades[(student, "test_row_norms")] == (norms, 1), student
    assert len(grades) == 2 * len(expected)

    # Submissions are never modified.
    assert before == {p: p.read_bytes() for p in (course / "submitted").rglob("*") if p.is_file()}

    # Feedback says what failed and why, and holds no hidden reference value.
    carol = (course / "feedback" / "carol" / "mini" / "mini.html").read_text()
    assert "you normalised over the wrong axis" in carol and "\u2714 mini.row_norms: passed" in carol
    hidden = json.loads((course / ".interplab" / "mini" / "references.json").read_text())
    for student in expected:
        html = (course / "feedback" / student / "mini" / "mini.html").read_text()
        graded = json.loads((course / "autograded" / student / "mini" / "mini.ipynb").read_text())
        assert not [o for c in graded["cells"] for o in c.get("outputs", []) if "vnd.interplab" in json.dumps(o)]
        for exercise in hidden["exercises"].values():
            for outcome in exercise["hidden"]:
                assert outcome["output"]["__nd__"]["b64"][:24] not in html
                for value in np.ravel(decode(outcome["output"]))[:8]:
                    assert f"{value:.4f}" not in html, (student, value)
    assert not list((course / "feedback").rglob(".interplab"))

    # Stock nbgrader still works on the course afterwards.
    env = tool_env()
    listing = subprocess.run([sys.executable, "-m", "nbgrader", "db", "student", "list"], cwd=course,
                             capture_output=True, text=True, env=env)
    assert listing.returncode == 0 and all(s in listing.stdout for s in expected), listing.stderr
    export = subprocess.run([sys.executable, "-m", "nbgrader", "export"], cwd=course, capture_output=True,
                            text=True, env=env)
    assert export.returncode == 0, export.stderr
    exported = (course / "grades.csv").read_text()
    assert "alice" in exported and "mallory" in exported

    # Grading again gives the same grades (idempotent).
    assert interplab("grade", "mini", "--course", str(course)).returncode == 0
    assert read_csv(course / "grades" / "mini.csv") == grades


def test_grade_uses_the_gradebook_nbgrader_is_configured_with(tmp_path):
    """A course whose nbgrader_config.py points CourseDirectory.db_url elsewhere (as a Postgres URL
    would): build, grading and the CSV all use that gradebook, and no other one is created."""
    from nbgrader.api import Gradebook

    from conftest import TEST_ASSIGNMENTS, make_course

    course = make_course(tmp_path, TEST_ASSIGNMENTS)
    elsewhere = tmp_path / "db" / "grades.sqlite"
    elsewhere.parent.mkdir()
    with open(course / "nbgrader_config.py", "a") as config:
        config.write(f'\nc.CourseDirectory.db_url = "sqlite:///{elsewhere}"\n')
    interplab("build", "--course", str(course), "mini", "--skip-validation", check=True)
    _submit(course, "alice", course / "source" / "mini" / "mini.ipynb")
    proc = interplab("grade", "mini", "--course", str(course))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    grades = read_csv(course / "grades" / "mini.csv")
    assert grades == {("alice", "test_softmax"): (2, 2), ("alice", "test_row_norms"): (1, 1)}
    assert not (course / "gradebook.db").exists()
    with Gradebook(f"sqlite:///{elsewhere}", "interplab") as gb:
        assert gb.find_submission("mini", "alice").score == 3


def test_partial_credit_reaches_nbgrader():
    verdicts = [Verdict("mini.a", False, 2 / 3, "1 of 3 hidden inputs wrong"), Verdict("mini.b", True, 1.0, "")]
    cell = NotebookNode(cell_type="code", metadata={"nbgrader": {"grade": True, "solution": False, "points": 3,
                                                                  "grade_id": "t"}}, outputs=[], source="")
    cell.outputs, score = render_outputs(verdicts, 3, 1)
    assert score == pytest.approx(2.5)
    assert determine_grade(cell) == (pytest.approx(2.5), 3.0)
    cell.outputs, score = render_outputs([Verdict("mini.a", False, 0.0, "wrong")], 3, 1)
    assert score == 0 and determine_grade(cell) == (0, 3.0)
    cell.outputs, score = render_outputs([Verdict("mini.a", True, 1.0, "")], 3, 1)
    assert score == 3 and determine_grade(cell) == (3.0, 3.0)


def test_grade_without_build_or_submissions_says_what_to_do(tmp_path):
    from conftest import TEST_ASSIGNMENTS, make_course

    course = make_course(tmp_path, TEST_ASSIGNMENTS)
    proc = interplab("grade", "mini", "--course", str(course))
    assert proc.returncode == 2 and "run `interplab build mini`" in proc.stderr
    proc = interplab("build", "--course", str(course), "nonesuch")
    assert proc.returncode == 2 and "unknown assignment" in proc.stderr
