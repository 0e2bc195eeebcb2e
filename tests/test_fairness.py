"""Fairness: every graded exercise of every assignment accepts a correct answer written differently
from the reference.

``tests/alternatives/<slug>.py`` holds ``ALTERNATIVES: dict[str, str]``: the grade_id of each solution
cell (``"impl_<name>"``) -> the complete source of another correct implementation (loops instead of
einsum, another formula, float64 intermediates, numpy, a batch of one ...). For each assignment found
under ``assignments/`` (no hand-kept list: a new assignment without alternatives for all its graded
exercises fails here), each alternative must

(a) pass in self-study mode: match the references of the public inputs;
(b) match the reference on the hidden inputs of many simulated builds (hidden seeds): 10 here, every
    exercise (those judged by a property train a model on each input: a few seconds each),
    ``INTERPLAB_FAIRNESS_SEEDS`` (100 in ``make fairness``) before a term;
(c) score full marks through the real ``interplab grade``, all of an assignment's alternatives in one
    submission, on the session's one build of the assignment (``built_course`` in conftest).

The reference is the master's own solution cells (conftest ``Master``), compared through the real
``judge``, as the grader does. When an alternative fails, fix the check, never the alternative.
"""
from __future__ import annotations

import importlib.util
import os
import re

import pytest

from interplab.checking import PUBLIC_SEED, judge

from conftest import REPO, Master, assignment_slugs, copy_of_build, edit_solution, interplab, read_csv

SEEDS = int(os.environ.get("INTERPLAB_FAIRNESS_SEEDS", "10"))
FIRST_SEED = 1000  # hidden seeds FIRST_SEED .. FIRST_SEED + SEEDS - 1, disjoint from the other tests'
STUDENT = "fairness_alternatives"


def alternatives(slug: str) -> dict[str, str]:
    path = REPO / "tests" / "alternatives" / f"{slug}.py"
    if not path.is_file():
        return {}
    spec = importlib.util.spec_from_file_location(f"alternatives_{slug}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.ALTERNATIVES


def solution_cells(slug: str) -> dict[str, str]:
    """grade_id of each solution cell -> the exercise id its test cell checks."""
    master = Master(slug)
    text = master.path.read_text()
    checked = dict((name, f"{slug}.{exercise}") for exercise, name in re.findall(rf'check\("{slug}\.(\w+)",\s*(\w+)\)', text))
    cells = {}
    for header, source in master.cells():
        if 'role="solution"' in header:
            grade_id = re.search(r'grade_id="(\w+)"', header).group(1)
            name = re.search(r"^def (\w+)", source, flags=re.M).group(1)
            cells[grade_id] = checked[name]
    return cells


CASES = [(slug, grade_id) for slug in assignment_slugs() for grade_id in solution_cells(slug)]


@pytest.mark.parametrize("slug", assignment_slugs())
def test_every_graded_exercise_has_an_alternative(slug: str) -> None:
    missing = set(solution_cells(slug)) - set(alternatives(slug))
    assert not missing, f"tests/alternatives/{slug}.py has no alternative for {sorted(missing)}"
    unknown = set(alternatives(slug)) - set(solution_cells(slug))
    assert not unknown, f"tests/alternatives/{slug}.py names cells the master lacks: {sorted(unknown)}"


_NAMESPACES: dict[str, tuple[Master, dict]] = {}


def _reference(slug: str) -> tuple[Master, dict]:
    """The master and its setup and solution cells run once per session (models load once)."""
    if slug not in _NAMESPACES:
        master = Master(slug)
        _NAMESPACES[slug] = master, master.namespace()
    return _NAMESPACES[slug]


@pytest.mark.parametrize("slug, grade_id", CASES, ids=[f"{s}-{g}" for s, g in CASES])
def test_alternative_matches_the_reference_on_public_and_hidden_inputs(slug: str, grade_id: str) -> None:
    source = alternatives(slug).get(grade_id)
    if source is None:
        pytest.fail(f"tests/alternatives/{slug}.py has no alternative for {grade_id}")
    master, namespace = _reference(slug)
    exercise_id = solution_cells(slug)[grade_id]
    exercise = master.exercises[exercise_id]
    name = re.search(r"^def (\w+)", source, flags=re.M).group(1)
    reference_fn = namespace[name]
    alt_namespace = dict(namespace)  # the other exercises stay the reference's
    exec(compile(source, f"<alternative {slug}:{grade_id}>", "exec"), alt_namespace)
    alternative_fn = alt_namespace[name]
    assert alternative_fn is not reference_fn

    public = {"public": exercise.run(reference_fn, "public", PUBLIC_SEED)}
    verdict = judge(exercise, {"public": exercise.run(alternative_fn, "public", PUBLIC_SEED)}, public,
                    scored_split="public")
    assert verdict.passed, f"self-study: {verdict.message}"

    failures = []
    for seed in range(FIRST_SEED, FIRST_SEED + SEEDS):
        references = {"hidden": exercise.run(reference_fn, "hidden", seed)}
        assert all("output" in o for o in references["hidden"]), references
        verdict = judge(exercise, {"hidden": exercise.run(alternative_fn, "hidden", seed)}, references)
        if not verdict.passed:
            failures.append(f"seed {seed}: {verdict.message}")
    assert not failures, f"{len(failures)} of {SEEDS} builds reject the alternative:\n" + "\n".join(failures[:5])


@pytest.mark.slow
@pytest.mark.parametrize("slug", assignment_slugs())
def test_alternatives_score_full_marks_through_interplab_grade(slug: str, built_course, tmp_path) -> None:
    course = copy_of_build(built_course(slug), tmp_path)
    source = course / "source" / slug / f"{slug}.ipynb"
    edit_solution(source, alternatives(slug), course / "submitted" / STUDENT / slug / f"{slug}.ipynb")
    proc = interplab("grade", slug, "--course", str(course), timeout=1800)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    grades = {grade_id: score for (student, grade_id), score in read_csv(course / "grades" / f"{slug}.csv").items()
              if student == STUDENT}
    assert grades and all(score == points for score, points in grades.values()), \
        {g: s for g, s in grades.items() if s[0] != s[1]}
