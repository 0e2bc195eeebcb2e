"""Each assignment through the real command line, offline, on a temporary copy of the course:
`interplab build`, whose validation grades the master (full marks, deterministic) and the untouched
student version (0, raising nothing but NotImplementedError) exactly as submissions are graded; the
solution notebook's time is printed against the 120 s budget (measured, never asserted); the
released checks.py keeps the known-mistake probes' names but not their code.

`interplab check` (self-study mode) on a solution and a student notebook is exercised once, on circuits
(test_e2e_circuits.py), and on the test assignment (test_pipeline.py): the mode is the same code for
every assignment, and each extra notebook run here would cost the suite a minute or more.

The assignments are discovered (tests/conftest.py's ``assignment_slugs``) and each is built once per
session by the ``built_course`` fixture, which test_fairness.py and test_e2e_circuits.py share."""
from __future__ import annotations

import json
import re

import pytest

from conftest import SOLUTION_SECONDS, Master, assignment_slugs

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=assignment_slugs())
def built(request, built_course):
    """Every assignment found under assignments/, built once per session (tests/conftest.py)."""
    return request.param, built_course(request.param)


def _graded_exercises(slug: str) -> int:
    return len(Master(slug).exercises)


def test_build_validates_and_reports_the_solution_notebooks_time(built, record_property) -> None:
    slug, course = built
    n = _graded_exercises(slug)
    assert len(json.loads((course / "release" / slug / "references.json").read_text())["exercises"]) == n
    log = (course / "build.log").read_text()
    seconds = re.search(rf"built {slug}: .*solution notebook ([0-9.]+)s", log)
    assert seconds, log
    record_property(SOLUTION_SECONDS, float(seconds.group(1)))  # listed at the end of the run (conftest)


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
