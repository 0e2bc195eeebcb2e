"""Authenticators for a university: each maps its own notion of "instructor" onto the course groups.

The hub's access rules hang on two groups per course (see jupyterhub_config.py):
``nbgrader-<course>`` (enrolled: may fetch and submit) and ``formgrade-<course>`` (instructors:
may open the formgrader). An LMS says who is who in the LTI 1.3 roles claim; an OAuth identity
provider in a groups claim (INTERPLAB_OAUTH_INSTRUCTOR_GROUP); with the native authenticator
the instructors are listed in INTERPLAB_INSTRUCTORS.
"""
from __future__ import annotations

from ltiauthenticator.lti13.auth import LTI13Authenticator
from traitlets import Unicode

LTI_ROLES_CLAIM = "https://purl.imsglobal.org/spec/lti/claim/roles"
# LIS roles that make someone an instructor of the course (context roles, LTI 1.3 core spec).
LTI_INSTRUCTOR_ROLES = (
    "http://purl.imsglobal.org/vocab/lis/v2/membership#Instructor",
    "http://purl.imsglobal.org/vocab/lis/v2/membership#ContentDeveloper",
    "http://purl.imsglobal.org/vocab/lis/v2/membership/Instructor#TeachingAssistant",
)


def course_groups(course_id: str, instructor: bool) -> list[str]:
    groups = [f"nbgrader-{course_id}"]
    if instructor:
        groups.append(f"formgrade-{course_id}")
    return groups


class CourseLTI13Authenticator(LTI13Authenticator):
    """LTI 1.3 launch from an LMS (Moodle, Canvas, ...): learners and instructors land in the
    course's groups on every launch (requires ``Authenticator.manage_groups = True``)."""

    course_id = Unicode("interplab", config=True, help="nbgrader course id this LMS course maps to")

    async def authenticate(self, handler, data=None):
        user = await super().authenticate(handler, data)
        if not user:
            return user
        roles = (user.get("auth_state") or {}).get(LTI_ROLES_CLAIM, []) or []
        instructor = any(role in LTI_INSTRUCTOR_ROLES for role in roles)
        user["groups"] = course_groups(self.course_id, instructor)
        return user
