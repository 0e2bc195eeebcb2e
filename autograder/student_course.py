"""A Jupyter server extension for students' servers: the course as the hub passed it.

The hub puts ``INTERPLAB_STUDENT_COURSE`` in every student's server environment, whatever the
spawner (``landing.course_environment``): JSON with the course page and each assignment in course
order with its week and this student's due date. At start this extension

- writes the page as ``COURSE.md`` into the server's root directory, before JupyterLab opens it
  (the hub's ``default_url``); in a container or a batch job the hub cannot write the home itself;
- serves the assignments at ``<base_url>/interplab/course-schedule``, which our JupyterLab
  extension (``labextension/``) reads to show "week N, due <date>" in nbgrader's Assignment List;
- loads nbgrader's own ``assignment_list`` extension and swaps its manager for one that lists the
  assignments in course order (nbgrader sorts by name: attribution before circuits); unscheduled
  ones follow by name.

Enable it instead of ``nbgrader.server_extensions.assignment_list`` (deploy/singleuser)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from nbgrader.server_extensions.assignment_list import handlers
from tornado import web

COURSE_ENV = "INTERPLAB_STUDENT_COURSE"
PAGE_NAME = "COURSE.md"
SCHEDULE_PATH = "interplab/course-schedule"
SETTINGS_KEY = "interplab_course_schedule"
LABEXTENSIONS = Path(__file__).resolve().parent / "labextension"  # our prebuilt JupyterLab extension


class StudentCourseError(ValueError):
    """The hub's ``INTERPLAB_STUDENT_COURSE`` is not what ``landing.student_course`` makes."""


def from_environment() -> dict[str, Any]:
    """The hub's data from the environment; empty (no page, no assignments) where there is none,
    as in a server started outside the hub."""
    raw = os.environ.get(COURSE_ENV, "")
    if not raw:
        return {"page": "", "assignments": []}
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise StudentCourseError(f"{COURSE_ENV} is not JSON ({exc})") from None
    if not (isinstance(data, dict) and isinstance(data.get("page"), str) and isinstance(data.get("assignments"), list)):
        raise StudentCourseError(f"{COURSE_ENV} needs a 'page' string and an 'assignments' list")
    return data


def write_page(root: Path, page: str) -> Path | None:
    """``COURSE.md`` in ``root``, replaced whole (a reader never sees half a page); none without a page."""
    if not page:
        return None
    target = root / PAGE_NAME
    partial = root / f".{PAGE_NAME}.partial"
    partial.write_text(page, encoding="utf-8")
    partial.replace(target)
    return target


def in_course_order(assignments: list[dict[str, Any]], order: list[str]) -> list[dict[str, Any]]:
    rank = {slug: i for i, slug in enumerate(order)}
    return sorted(assignments, key=lambda a: (a.get("course_id", ""), rank.get(a["assignment_id"], len(rank)), a["assignment_id"]))


class CourseOrderAssignmentList(handlers.AssignmentList):
    """nbgrader's manager, whose answers list the assignments in ``order`` (slugs, course order)."""

    order: list[str] = []

    def list_released_assignments(self, course_id: str | None = None) -> dict[str, Any]:
        return self._ordered(super().list_released_assignments(course_id=course_id))

    def list_submitted_assignments(self, course_id: str | None = None) -> dict[str, Any]:
        return self._ordered(super().list_submitted_assignments(course_id=course_id))

    def _ordered(self, answer: dict[str, Any]) -> dict[str, Any]:
        if answer.get("success") and isinstance(answer.get("value"), list):
            answer["value"] = in_course_order(answer["value"], self.order)
        return answer


class ScheduleHandler(APIHandler):
    """The student's assignments in course order: ``[{"assignment", "week", "due"}]``."""

    @web.authenticated
    def get(self) -> None:
        self.finish(json.dumps(self.settings[SETTINGS_KEY]))


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "interplab.autograder.student_course"}]


def _load_jupyter_server_extension(server_app: Any) -> None:
    try:
        course = from_environment()
    except StudentCourseError as exc:  # the student still gets a working server, without the page
        server_app.log.error("%s", exc)
        course = {"page": "", "assignments": []}
    try:
        written = write_page(Path(server_app.root_dir), course["page"])
        server_app.log.info("course page: %s", written or f"none ({COURSE_ENV} is empty)")
    except OSError as exc:  # a read-only or full home: the Assignment List still works
        server_app.log.error("course page not written to %s: %s", server_app.root_dir, exc)
    handlers.load_jupyter_server_extension(server_app)
    settings = server_app.web_app.settings
    manager = CourseOrderAssignmentList(parent=server_app)
    manager.root_dir = settings["assignment_list_manager"].root_dir
    manager.order = [a["assignment"] for a in course["assignments"]]
    settings["assignment_list_manager"] = manager
    settings[SETTINGS_KEY] = course["assignments"]
    route = url_path_join(settings["base_url"], SCHEDULE_PATH)
    server_app.web_app.add_handlers(".*$", [(route, ScheduleHandler)])
