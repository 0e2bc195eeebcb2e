"""A Jupyter server extension for students' servers: nbgrader's Assignment List in course order.

nbgrader's handler sorts the assignments by name (attribution before circuits). This extension
loads nbgrader's own ``assignment_list`` extension, then swaps its manager for one that orders
each list by the course's schedule, which the hub passes in ``INTERPLAB_COURSE_ORDER``
(comma-separated slugs, from course.toml's ``[schedule]``); unscheduled assignments follow by name.
Enable it instead of ``nbgrader.server_extensions.assignment_list`` (deploy/singleuser)."""
from __future__ import annotations

import os
from typing import Any

from nbgrader.server_extensions.assignment_list import handlers

ORDER_ENV = "INTERPLAB_COURSE_ORDER"


def course_order() -> list[str]:
    return [slug.strip() for slug in os.environ.get(ORDER_ENV, "").split(",") if slug.strip()]


def in_course_order(assignments: list[dict[str, Any]], order: list[str]) -> list[dict[str, Any]]:
    rank = {slug: i for i, slug in enumerate(order)}
    return sorted(assignments, key=lambda a: (a.get("course_id", ""), rank.get(a["assignment_id"], len(rank)), a["assignment_id"]))


class CourseOrderAssignmentList(handlers.AssignmentList):
    """nbgrader's manager, whose answers list the assignments in course order."""

    def list_released_assignments(self, course_id: str | None = None) -> dict[str, Any]:
        return self._ordered(super().list_released_assignments(course_id=course_id))

    def list_submitted_assignments(self, course_id: str | None = None) -> dict[str, Any]:
        return self._ordered(super().list_submitted_assignments(course_id=course_id))

    @staticmethod
    def _ordered(answer: dict[str, Any]) -> dict[str, Any]:
        if answer.get("success") and isinstance(answer.get("value"), list):
            answer["value"] = in_course_order(answer["value"], course_order())
        return answer


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "interplab.autograder.assignment_order"}]


def _load_jupyter_server_extension(server_app: Any) -> None:
    handlers.load_jupyter_server_extension(server_app)
    settings = server_app.web_app.settings
    manager = CourseOrderAssignmentList(parent=server_app)
    manager.root_dir = settings["assignment_list_manager"].root_dir
    settings["assignment_list_manager"] = manager
