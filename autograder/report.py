"""``interplab report ASSIGNMENT``: where the class struggles, after ``interplab grade``.

Reads the grades CSV (totals, ``totals.py``) and each student's verdicts of the last autograde
(``verdicts.py``: per exercise, passed on the hidden inputs, the known mistake a probe matched, the
limit the run hit) and writes, in ``course/reports/``:

- ``<a>.html``: one self-contained page (plots as inline PNG made offline with matplotlib, a CSP
  that forbids every script, every student-derived string escaped): the score distribution, the
  pass rate of each exercise on hidden inputs, the named misconceptions and how many students had
  each, the submissions that hit a limit, the students below the threshold;
- ``<a>.csv``: one row per student (``student_id,score,max_score,percent,below_threshold,limit``);
- ``<a>-exercises.csv``: one row per exercise (``exercise_id,students,passed,pass_rate,mean_hidden_fraction``);
- ``<a>-misconceptions.csv``: ``exercise_id,probe,students``, one row per probe that matched at
  least one student (students = how many distinct students matched it on that exercise).

A student with no verdict for an exercise (a refused or unreadable submission, a missing notebook)
counts as not having passed it; a student not graded (infrastructure error) is left out and listed.
"""
from __future__ import annotations

import argparse
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from interplab.autograder import static_page, verdicts
from interplab.autograder.course import Course, CourseError
from interplab.autograder.executors import LIMIT_KINDS
from interplab.autograder.store import write_atomic
from interplab.autograder.totals import Total, number, read_totals, write_rows
from interplab.checking import CHECKS_FILE, Exercise, exercises_in

MISCONCEPTIONS_HEADER = ["exercise_id", "probe", "students"]
STUDENTS_HEADER = ["student_id", "score", "max_score", "percent", "below_threshold", "limit"]
EXERCISES_HEADER = ["exercise_id", "students", "passed", "pass_rate", "mean_hidden_fraction"]


@dataclass
class ExerciseSummary:
    exercise: Exercise
    students: int
    passed: int
    mean_fraction: float
    probes: dict[str, list[str]]  # probe name -> the distinct students who matched it

    @property
    def pass_rate(self) -> float:
        return self.passed / self.students if self.students else 0.0


@dataclass
class ClassReport:
    assignment: str
    totals: list[Total]          # graded students
    ungraded: list[str]          # infrastructure errors: no score
    exercises: list[ExerciseSummary]
    limits: list[tuple[str, str, str, str]]   # (student, notebook, kind, status)
    threshold: float             # percent

    @property
    def below(self) -> list[Total]:
        return sorted((t for t in self.totals if t.percent < self.threshold), key=lambda t: (t.percent, t.student))

    def limit_of(self, student: str) -> str:
        return ", ".join(sorted({kind for s, _, kind, _ in self.limits if s == student}))


def analyse(course: Course, assignment: str, threshold: float = 50.0) -> ClassReport:
    checks = course.source(assignment) / CHECKS_FILE
    if not checks.is_file():
        raise CourseError(f"assignment {assignment!r} is not built in {course.root}: run `interplab build {assignment}`")
    all_totals = read_totals(course, assignment)
    graded = [t for t in all_totals.values() if t.score is not None]
    records = verdicts.load(course.store, assignment)
    exercises = list(exercises_in(checks).values())
    summaries = []
    for exercise in exercises:
        passed, fractions, probes = 0, [], {}
        for total in graded:
            seen = [nb["exercises"][exercise.id] for nb in records.get(total.student, {}).get("notebooks", {}).values()
                    if exercise.id in nb.get("exercises", {})]
            passed += any(r.get("passed") for r in seen)
            fractions.append(max((float(r.get("fraction", 0)) for r in seen), default=0.0))
            for name in sorted({r["probe"] for r in seen if r.get("probe")}):
                probes.setdefault(name, []).append(total.student)
        summaries.append(ExerciseSummary(exercise, len(graded), passed,
                                         sum(fractions) / len(fractions) if fractions else 0.0, probes))
    limits = sorted((total.student, name, nb["limit"], str(nb.get("status", "")))
                    for total in graded for name, nb in records.get(total.student, {}).get("notebooks", {}).items()
                    if nb.get("limit"))
    return ClassReport(assignment, graded, sorted(t.student for t in all_totals.values() if t.score is None),
                       summaries, limits, threshold)


def misconception_rows(report: ClassReport) -> list[list[Any]]:
    """Per exercise (in the notebook's order), its matched probes, most frequent first."""
    return [[s.exercise.id, name, len(who)] for s in report.exercises
            for name, who in sorted(s.probes.items(), key=lambda item: (-len(item[1]), item[0]))]


def student_rows(report: ClassReport) -> list[list[Any]]:
    below = {t.student for t in report.below}
    return [[t.student, number(t.score), number(t.max_score), round(t.percent, 1), int(t.student in below), report.limit_of(t.student)]
            for t in report.totals]


def exercise_rows(report: ClassReport) -> list[list[Any]]:
    return [[s.exercise.id, s.students, s.passed, round(s.pass_rate, 4), round(s.mean_fraction, 4)] for s in report.exercises]


def distribution_rows(report: ClassReport) -> list[list[Any]]:
    """Students per tenth of the points (the last bin holds 100%)."""
    counts = Counter(min(int(t.percent // 10), 9) for t in report.totals)
    return [[f"{10 * b}-{10 * b + 10}%", counts.get(b, 0)] for b in range(10)]


def _plots(report: ClassReport) -> str:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3))
    ax.hist([t.percent for t in report.totals], bins=list(range(0, 101, 10)), color="#4477aa", edgecolor="white")
    ax.axvline(report.threshold, color="#cc3311", linestyle="--", label=f"threshold {report.threshold:g}%")
    ax.set(xlabel="score (% of the points)", ylabel="students", title="Score distribution")
    ax.legend()
    distribution = static_page.png(fig, "score distribution")
    fig, ax = plt.subplots(figsize=(6, 0.5 + 0.35 * len(report.exercises)))
    names = [s.exercise.id for s in report.exercises][::-1]
    ax.barh(names, [100 * s.pass_rate for s in report.exercises][::-1], color="#228833")
    ax.set(xlim=(0, 100), xlabel="students who passed every hidden input (%)", title="Pass rate per exercise")
    return distribution + "\n" + static_page.png(fig, "pass rate per exercise")


def render(report: ClassReport) -> str:
    esc, table = static_page.esc, static_page.table
    n = len(report.totals)
    percents = sorted(t.percent for t in report.totals)
    median = (percents[(n - 1) // 2] + percents[n // 2]) / 2 if n else 0.0
    parts = [f"<h1>Class report: {esc(report.assignment)}</h1>",
             f"<p>{n} graded submissions; mean {sum(percents) / n if n else 0:.1f}%, median {median:.1f}% of the points"
             + (f"; {len(report.ungraded)} not graded (infrastructure error: grade again): {esc(', '.join(report.ungraded))}"
                if report.ungraded else "") + ".</p>"]
    if n:
        parts.append(_plots(report))
        parts.append(table(["score", "students"], distribution_rows(report), {1}))
    parts += ["<h2>Exercises (hidden inputs)</h2>",
              table(["exercise", "students", "passed", "pass rate", "mean fraction of hidden inputs passed"],
                    [[s.exercise.id, s.students, s.passed, f"{100 * s.pass_rate:.0f}%", f"{s.mean_fraction:.2f}"]
                     for s in report.exercises], {1, 2, 3, 4}),
              "<h2>Misconceptions (known mistakes the probes matched)</h2>"]
    rows = []
    for s in report.exercises:
        for probe in s.exercise.probes:
            who = s.probes.get(probe.name, [])
            rows.append([s.exercise.id, probe.name, probe.message, len(who), ", ".join(who)])
    parts.append(table(["exercise", "probe", "what it means", "students", "who"], rows, {3}) if rows
                 else "<p>No exercise of this assignment has named misconceptions.</p>")
    counts = Counter(kind for _, _, kind, _ in report.limits)
    parts += ["<h2>Submissions that hit a limit</h2>",
              "<p>" + ", ".join(f"{esc(kind)}: {counts.get(kind, 0)}" for kind in LIMIT_KINDS) + "</p>",
              table(["student", "notebook", "limit", "status"], [list(row) for row in report.limits]) if report.limits else "",
              f"<h2>Students below {report.threshold:g}%</h2>",
              table(["student", "score", "max", "percent", "limit"],
                    [[t.student, number(t.score), number(t.max_score), f"{t.percent:.1f}%", report.limit_of(t.student)]
                     for t in report.below], {1, 2, 3}) if report.below else "<p>None.</p>"]
    return static_page.page(f"Class report: {report.assignment}", "\n".join(parts))


def write_report(course: Course, assignment: str, threshold: float = 50.0) -> tuple[ClassReport, dict[str, Path]]:
    report = analyse(course, assignment, threshold)
    folder = course.root / "reports"
    files = {"html": folder / f"{assignment}.html", "students": folder / f"{assignment}.csv",
             "exercises": folder / f"{assignment}-exercises.csv",
             "misconceptions": folder / f"{assignment}-misconceptions.csv"}
    write_rows(files["students"], [STUDENTS_HEADER, *student_rows(report)])
    write_rows(files["exercises"], [EXERCISES_HEADER, *exercise_rows(report)])
    write_rows(files["misconceptions"], [MISCONCEPTIONS_HEADER, *misconception_rows(report)])
    write_atomic(files["html"], render(report))
    return report, files


def report_command(args: argparse.Namespace) -> int:
    if not 0 <= args.threshold <= 100:
        raise CourseError(f"--threshold must be a percentage between 0 and 100, got {args.threshold:g}")
    report, files = write_report(Course.load(args.course), args.assignment, args.threshold)
    print(f"{len(report.totals)} students; {len(report.below)} below {args.threshold:g}%; "
          f"{len(report.limits)} runs hit a limit; {len(misconception_rows(report))} named misconceptions matched")
    for path in files.values():
        print(f"  {path}")
    return 0
