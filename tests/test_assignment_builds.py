"""Each assignment through the real command line, offline, on a temporary copy of the course:
`interplab build` (whose validation requires the master to score full marks in grading mode and the
untouched student version 0, raising nothing but NotImplementedError), then `interplab check` on the
solution notebook (every check passes; its time is printed against the 120 s budget, measured, never
asserted) and on the student notebook (exit 1, one "not implemented yet" row per exercise), and the
released checks.py without the known-mistake probes (near-solutions stay with the instructor).

(circuits goes through the same steps in test_e2e_circuits.py, subliminal in test_subliminal.py.)"""
from __future__ import annotations

import json
import time

import pytest

from conftest import Master, interplab, make_course

pytestmark = pytest.mark.slow

ASSIGNMENTS = {"saes": 16, "steering": 10, "attribution": 11, "tsxai": 14, "discovery": 12}  # graded exercises


@pytest.fixture(scope="module", params=sorted(ASSIGNMENTS))
def built(request, tmp_path_factory):
    slug = request.param
    course = make_course(tmp_path_factory.mktemp(slug))
    interplab("build", "--course", str(course), slug, check=True, timeout=1800)
    return slug, course


def test_solution_notebook_passes_every_check(built) -> None:
    slug, course = built
    n = ASSIGNMENTS[slug]
    assert len(json.loads((course / "release" / slug / "references.json").read_text())["exercises"]) == n
    start = time.perf_counter()
    proc = interplab("check", str(course / "source" / slug / f"{slug}.ipynb"))
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{n} of {n} exercises pass" in proc.stdout, proc.stdout
    print(f"{slug}: the solution notebook's self-check took {elapsed:.0f} s (budget 120 s)")


def test_student_notebook_fails_cleanly(built) -> None:
    slug, course = built
    n = ASSIGNMENTS[slug]
    proc = interplab("check", str(course / "release" / slug / f"{slug}.ipynb"))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"0 of {n} exercises pass" in proc.stdout, proc.stdout
    rows = [line for line in proc.stdout.splitlines() if line.startswith(f"{slug}.")]
    assert len(rows) == n and all("not implemented yet" in row for row in rows), proc.stdout


def test_release_hides_the_known_mistakes(built) -> None:
    from interplab.checking import load_spec_module

    slug, course = built
    release = course / "release" / slug / "checks.py"
    shipped = [p for ex in load_spec_module(release).EXERCISES for p in ex.probes]
    master = [p for ex in Master(slug).exercises.values() for p in ex.probes]
    assert len(shipped) == len(master) > 0  # names and messages are released ...
    assert all(p.fn is None for p in shipped)  # ... their functions are not
    text = release.read_text()
    # top-level probe functions (closures made by a released factory carry nothing of their own)
    named = {p.fn.__name__ for p in master if getattr(p.fn, "__qualname__", "<lambda>") == getattr(p.fn, "__name__", "")}
    assert not [name for name in named if f"def {name}(" in text], "a probe function was released"
