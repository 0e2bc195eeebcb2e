"""What the course says about itself, read from its single sources of truth: each master's opening
cell (title, learning objectives, readings), its graded cells (points), and course.toml's
``[schedule]`` (weeks, due dates, course order). The students' first page (``landing.py``) and
the course site (``site.py``) render it; neither keeps a copy of any of it."""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path

from interplab.autograder.course import Course
from interplab.autograder.deadlines import Due, Schedule, load_extensions

_HEADER = re.compile(r'^# %%.*role="(test|answer)".*points=(\d+(?:\.\d+)?)', re.M)


@dataclass(frozen=True)
class AssignmentInfo:
    slug: str
    title: str
    objectives: str       # markdown list, as written in the master
    readings: str         # markdown list, as written in the master
    autograded_points: float
    written_points: float
    due: Due | None


def _opening_cell(master: Path) -> list[str]:
    """The master's first markdown cell, without the ``# `` comment prefix."""
    lines = master.read_text().split("\n")
    start = next(i for i, line in enumerate(lines) if line.startswith("# %% [markdown]")) + 1
    cell = []
    for line in lines[start:]:
        if line.startswith("# %%") or not line.startswith("#"):
            break
        cell.append(line[2:] if line.startswith("# ") else "")
    return cell


def _block(cell: list[str], opener: str) -> str:
    """The paragraph(s) after the line starting with ``opener`` up to the next bold lead-in."""
    try:
        start = next(i for i, line in enumerate(cell) if line.startswith(opener))
    except StopIteration:
        return ""
    block = []
    for line in cell[start + 1:]:
        if line.startswith("**") and block:
            break
        block.append(line)
    return "\n".join(block).strip()


def assignment_info(course: Course, slug: str, schedule: Schedule | None = None) -> AssignmentInfo:
    master = course.assignments_dir / slug / f"{slug}.py"
    cell = _opening_cell(master)
    title = next((line[2:].strip() for line in cell if line.startswith("# ")), slug)
    points = {"test": 0.0, "answer": 0.0}
    for role, value in _HEADER.findall(master.read_text()):
        points[role] += float(value)
    return AssignmentInfo(slug, title, _block(cell, "**After this"), _block(cell, "**Read first"),
                          points["test"], points["answer"], (schedule or Schedule.of(course)).get(slug))


def course_assignments(course: Course) -> list[AssignmentInfo]:
    """Every assignment of the course, in course order (scheduled first, by week)."""
    schedule = Schedule.of(course)
    return [assignment_info(course, slug, schedule) for slug in schedule.order(course.known_assignments())]


def due_for(course: Course, info: AssignmentInfo, student: str | None) -> dt.datetime | None:
    """The due date that applies to ``student`` (their extension, if any), in the course's time zone."""
    if info.due is None:
        return None
    schedule = Schedule.of(course)
    until = load_extensions(course).get(info.slug, {}).get(student or "")
    return (until or info.due.due).astimezone(schedule.timezone)


def when(moment: dt.datetime | None) -> str:
    """A due date as pages show it, in the time zone it carries."""
    return moment.strftime("%a %d %b %Y, %H:%M %Z") if moment else "no due date"


def points_text(info: AssignmentInfo) -> str:
    written = f" + {info.written_points:g} written" if info.written_points else ""
    return f"{info.autograded_points:g} autograded{written}"
