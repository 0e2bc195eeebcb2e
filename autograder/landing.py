"""The student's first page: JupyterLab opens on ``COURSE.md``, made by the hub at each start of
the student's server, so it is always current: this week's assignment, the schedule with the due
dates that apply to this student (their extension included), how checks and grading work and
where feedback appears. Its facts come from the masters and course.toml (``syllabus.py``). The
hub passes it, with each assignment's week and due date, in the server's environment
(``course_environment``), which every spawner forwards, local process, container, pod or batch
job alike; the server writes the page and shows the dates in its Assignment List
(``student_course.py``)."""
from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any, Callable

from interplab.autograder.course import Course
from interplab.autograder.deadlines import Schedule
from interplab.autograder.student_course import PAGE_NAME
from interplab.autograder.syllabus import course_assignments, due_for, points_text, when


def course_page(course: Course, student: str | None, now: dt.datetime, released: set[str] | None = None,
                infos: list[Any] | None = None) -> str:
    """The page as markdown. ``released``: assignments students can fetch now (None: all);
    ``infos``: ``course_assignments(course)`` when the caller has it already."""
    schedule = Schedule.of(course)
    infos = course_assignments(course) if infos is None else infos
    scheduled = [info for info in infos if info.due]  # of this course's assignments only
    current = next((info for info in scheduled if info.due.due >= now), None)  # the first one not yet due
    lines = [f"# Welcome to {course.id}" + (f", {student}" if student else ""), ""]
    if current is not None:
        info = current
        lines += [f"## This week: week {info.due.week}, `{info.slug}`", "", f"**{info.title}**", "",
                  f"Due **{when(due_for(course, info, student))}** ({points_text(info)} points).", ""]
        if info.objectives:
            lines += ["After it you will be able to:", "", info.objectives, ""]
        lines += ["Open *Nbgrader > Assignment List* (menu bar), press **Fetch** next to "
                  f"`{info.slug}`, then open `{info.slug}/{info.slug}.ipynb` in the file browser.", ""]
    elif scheduled:
        lines += ["## The schedule is over", "", "Every assignment's due date has passed.", ""]
    lines += ["## Schedule", "", "| week | assignment | due | points |", "| --- | --- | --- | --- |"]
    for info in infos:
        week = str(info.due.week) if info.due else "self-study"
        name = f"`{info.slug}`" + ("" if released is None or info.slug in released else " (not released yet)")
        lines.append(f"| {week} | {name}: {info.title} | {when(due_for(course, info, student))} | {points_text(info)} |")
    policy = schedule.policy
    lines += [
        "", f"Times are {schedule.timezone.key} time. Late submissions: {policy.describe()}. "
        "Ask your instructor for an extension before the due date; it shows in this table.", "",
        "## How checks and grading work", "",
        "- Each exercise ends with a test cell `check(\"<assignment>.<exercise>\", your_function)`. Run it: "
        "it prints one pass line, or says what is wrong (shape, dtype, which value, a known mistake by name).",
        "- Passing the checks here means your function is right on the *public* inputs. Your grade comes "
        "from the same checks on *hidden* inputs, drawn for you alone, when the instructor grades the "
        "submission: a function that is right in general passes both.",
        "- Questions marked *Answer in the cell below* are graded by hand: write your answer in that cell.",
        "- Submit with **Submit** in the Assignment List; you may submit again: your latest submission is "
        "graded (after the due date, with the late penalty below the schedule).",
        "",
        "## Where feedback appears", "",
        "When the instructor releases feedback, press **Fetch Feedback** next to the submitted assignment "
        "in the Assignment List: it opens a page with a table of your exercises (points, pass or fail, "
        "the reason), and is saved as `<assignment>/feedback/<time>/<assignment>.html` in your files.",
        "",
        f"*This page ({PAGE_NAME}) is rewritten each time your server starts; your notes belong elsewhere.*",
        "",
    ]
    return "\n".join(lines)


def released_assignments(exchange: Path, course_id: str) -> set[str]:
    outbound = exchange / course_id / "outbound"
    return {p.name for p in outbound.iterdir() if p.is_dir()} if outbound.is_dir() else set()


def student_course(course: Course, student: str | None, now: dt.datetime, released: set[str] | None = None) -> dict[str, Any]:
    """What the hub passes to ``student``'s server (``student_course.py``): the course page, and
    each assignment in course order with its week and the due date that applies to this student."""
    infos = course_assignments(course)  # reads every master: once for the page and the list
    assignments = [{"assignment": info.slug, "week": info.due.week if info.due else None,
                    "due": when(due_for(course, info, student)) if info.due else None}
                   for info in infos]
    return {"page": course_page(course, student, now, released, infos), "assignments": assignments}


def course_environment(course_root: Path, exchange: Path) -> Callable[[Any], str]:
    """A ``Spawner.environment`` value (JupyterHub calls it with the spawner at each start, on
    every spawner class): ``student_course`` as one line of ASCII JSON, the same through a pod
    manifest, a container's env, sbatch's --export and a Unix process environment. Empty when
    the course cannot be read: the server still starts, without the page (the hub logs why)."""

    def value(spawner: Any) -> str:
        try:
            course = Course.load(course_root)
            data = student_course(course, spawner.user.name, dt.datetime.now(dt.timezone.utc),
                                  released_assignments(exchange, course.id))
        except Exception:  # a student's server starts even when the page cannot be made
            spawner.log.exception("no course page for %s", spawner.user.name)
            return ""
        return json.dumps(data, ensure_ascii=True, separators=(",", ":"))

    return value
