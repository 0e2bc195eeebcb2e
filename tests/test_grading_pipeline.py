"""The grading pipeline's guarantees, with the real CLI, real nbgrader and real sandboxed kernels on
the small `mini` assignment: an infrastructure failure is never a score and never cached; each
student has their own hidden seed (another's is useless) and rotating the course secret changes
every seed; links in a submission are refused unread; bad input gives one line and exit 2."""
from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from interplab.autograder.store import BUILD_STUDENT, Store

from conftest import TEST_ASSIGNMENTS, edit_solution, interplab, make_course, read_csv_rows

SOFTMAX = ("def softmax(x):\n    z = np.exp(x - x.max(axis=-1, keepdims=True))\n"
           "    return z / z.sum(axis=-1, keepdims=True)\n")

# A lookup table of correct answers on the hidden inputs of the student whose seed is SEED (as if
# that student had printed their seed and shared it), zeros on every other input.
TABLE = """
from interplab.checking import exercises_in
_cases = exercises_in("checks.py")["mini.softmax"].cases("hidden", {seed})
def _true(x):
    z = np.exp(x - x.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)
_table = {{c["x"].tobytes(): _true(c["x"]) for c in _cases}}
def softmax(x):
    return _table.get(x.tobytes(), np.zeros_like(x))
"""


# ------------------------------------------------------------------------------------------------
# Without kernels


def test_each_student_has_their_own_seed_and_rotation_changes_all(tmp_path):
    store = Store(tmp_path)
    with pytest.raises(FileNotFoundError):
        store.seed("mini", "alice")
    store.secret(create=True)
    seeds = {s: store.seed("mini", s) for s in ("alice", "bob", BUILD_STUDENT)}
    assert len(set(seeds.values())) == 3
    assert store.seed("mini", "alice") == seeds["alice"]          # stable
    assert store.seed("other", "alice") != seeds["alice"]         # per assignment too
    assert all(0 <= s < 2**62 for s in seeds.values())
    (store.folder("mini", "references") / "k.json").write_text("{}")
    store.rotate_secret()
    assert all(store.seed("mini", s) != seed for s, seed in seeds.items())
    assert not (store.root / "mini" / "references").exists()     # cached references dropped
    assert oct((store.root / "secret").stat().st_mode & 0o777) == "0o600"


# ------------------------------------------------------------------------------------------------
# One line and exit 2 for every mistake a person can make


def _one_line_error(proc, *words: str) -> None:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("interplab ")]
    assert len(lines) == 1 and all(w in lines[0] for w in words), proc.stderr


def test_user_errors_are_one_line(tmp_path):
    assignments = tmp_path / "assignments"
    shutil.copytree(TEST_ASSIGNMENTS / "mini", assignments / "mini")
    course = make_course(tmp_path / "c", assignments)

    _one_line_error(interplab("grade", "nonesuch", "--course", str(course)), "run `interplab build nonesuch`")
    _one_line_error(interplab("secret", "rotate", "--course", str(tmp_path)), "not a course directory")
    _one_line_error(interplab("build", "nonesuch", "--course", str(course)), "unknown assignment")
    _one_line_error(interplab("grade", "mini", "--course", str(tmp_path)), "not a course directory")

    master = assignments / "mini" / "mini.py"
    good_master = master.read_text()
    master.write_text(good_master.replace('role="test"', 'role="tset"', 1))
    _one_line_error(interplab("build", "mini", "--course", str(course)), "mini.py, cell", "role='tset'")
    master.write_text(good_master)

    checks = assignments / "mini" / "checks.py"
    checks.write_text(checks.read_text() + "\ndef broken(:\n")
    _one_line_error(interplab("build", "mini", "--course", str(course)), "checks.py cannot be loaded", "SyntaxError")
    shutil.copy(TEST_ASSIGNMENTS / "mini" / "checks.py", checks)

    toml = course / "course.toml"
    good_toml = toml.read_text()
    toml.write_text(good_toml + "\n[grading\n")
    _one_line_error(interplab("build", "mini", "--course", str(course)), "course.toml is not valid TOML")
    toml.write_text(good_toml.replace('memory_limit = "4GiB"', 'memory_limit = "lots"'))
    Store(course).secret(create=True)
    (course / "source" / "mini").mkdir(parents=True)
    Store(course).save_references("mini", {"cells": {}, "exercises": {}})
    shutil.copy(checks, Store(course).checks_path("mini"))
    (course / "submitted" / "alice" / "mini").mkdir(parents=True)
    _one_line_error(interplab("grade", "mini", "--course", str(course)), "course.toml [grading]", "lots")


# ------------------------------------------------------------------------------------------------
# With kernels: one course, graded three times


@pytest.fixture(scope="module")
def course(tmp_path_factory) -> Path:
    course = make_course(tmp_path_factory.mktemp("pipeline"), TEST_ASSIGNMENTS)
    interplab("build", "--course", str(course), "mini", "--skip-validation", check=True)
    return course


def _submissions(course: Path) -> None:
    source, release = course / "source" / "mini" / "mini.ipynb", course / "release" / "mini" / "mini.ipynb"
    submitted = course / "submitted"
    (submitted / "alice" / "mini").mkdir(parents=True)
    shutil.copy(source, submitted / "alice" / "mini" / "mini.ipynb")
    bob_seed = Store(course).seed("mini", "bob")
    for student in ("bob", "eve"):  # the same notebook: a table of right answers for bob's seed
        edit_solution(release, {"impl_softmax": TABLE.format(seed=bob_seed)}, submitted / student / "mini" / "mini.ipynb")
    (submitted / "mallory" / "mini").mkdir(parents=True)
    (submitted / "mallory" / "mini" / "mini.ipynb").symlink_to(source)
    (submitted / "hardy" / "mini").mkdir(parents=True)
    os.link(source, submitted / "hardy" / "mini" / "mini.ipynb")
    (submitted / "bad name" / "mini").mkdir(parents=True)
    shutil.copy(source, submitted / "bad name" / "mini" / "mini.ipynb")


def read_csv_rows_raw(path: Path) -> dict[tuple[str, str], tuple[str, str]]:
    """(student, grade_id) -> (score as written, status): an infrastructure error has no score."""
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    return {(r[0], r[1]): (r[2], r[4]) for r in rows[1:]}


def _cached_executions(course: Path) -> list[Path]:
    return sorted((course / ".interplab" / "mini").glob("executions/*/*.ipynb"))


def _cached_references(course: Path) -> list[Path]:
    return sorted((course / ".interplab" / "mini").glob("references/*.json"))


def test_infrastructure_failure_is_retried_then_seeds_links_and_rotation(course):
    _submissions(course)
    toml = course / "course.toml"
    good = toml.read_text()
    # A misconfigured grading host: the sandbox refuses to start, since it would show the temp dir
    # that holds every kernel's working directory. Not the students' fault.
    toml.write_text(good.replace("[grading]", f"[grading]\nextra_ro_paths = [{json.dumps(tempfile.gettempdir())}]"))
    proc = interplab("grade", "mini", "--course", str(course))
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "NOT graded because of an infrastructure error" in proc.stdout
    rows = read_csv_rows_raw(course / "grades" / "mini.csv")
    for student in ("alice", "bob", "eve"):
        for grade_id in ("test_softmax", "test_row_norms"):
            score, status = rows[(student, grade_id)]
            assert score == "" and status.startswith("infrastructure error"), (student, score, status)
    assert _cached_executions(course) == [] and _cached_references(course) == []
    assert not (course / "feedback" / "alice").exists()

    toml.write_text(good)
    proc = interplab("grade", "mini", "--course", str(course), "--workers", "1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # One run of the master computes every student's references (each from their own seed: below)
    assert "3 students' hidden references computed in 1 master run(s)" in proc.stdout, proc.stdout
    grades = read_csv_rows(course / "grades" / "mini.csv")
    assert grades[("alice", "test_softmax")] == (2, 2, "ok") and grades[("alice", "test_row_norms")] == (1, 1, "ok")
    # bob's table is right on bob's hidden inputs; for eve, whose seed differs, it is worthless.
    assert grades[("bob", "test_softmax")][0] == 2
    assert grades[("eve", "test_softmax")][0] == 0
    # Links are refused unread: 0, a status saying why, and nothing of the solution anywhere.
    for student, why in (("mallory", "is a symbolic link"), ("hardy", "is a hard link to a file outside")):
        score, _, status = grades[(student, "test_softmax")]
        assert score == 0 and status.startswith("refused, not read") and why in status, status
        assert not (course / "feedback" / student).exists() and not (course / "autograded" / student).exists()
        assert not (course / ".interplab" / "mini" / "executions" / student).exists()
    assert "not a plain name" in grades[("bad name", "test_softmax")][2]
    listing = interplab("grade", "mini", "--course", str(course))  # regrade: all reused, nothing new
    assert listing.returncode == 0 and "0 executed, " in listing.stdout and "0 students' hidden references" in listing.stdout, listing.stdout
    references = _cached_references(course)
    assert len(references) == 3  # alice, bob, eve: one per student

    # A new term: every seed changes, references are recomputed, bob's old table is now worthless.
    rotated = interplab("secret", "rotate", "--course", str(course))
    assert rotated.returncode == 0 and "rotated" in rotated.stdout, rotated.stderr
    assert _cached_references(course) == [] and _cached_executions(course) == []
    proc = interplab("grade", "mini", "--course", str(course))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len(_cached_references(course)) == 3 and set(_cached_references(course)).isdisjoint(references)
    again = read_csv_rows(course / "grades" / "mini.csv")
    assert again[("alice", "test_softmax")] == (2, 2, "ok")
    assert again[("bob", "test_softmax")][0] == 0
