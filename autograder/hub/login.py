"""Authenticators for a university: each maps its own notion of "instructor" onto the course groups.

The hub's access rules hang on two groups per course (see jupyterhub_config.py):
``nbgrader-<course>`` (enrolled: may fetch and submit) and ``formgrade-<course>`` (instructors:
may open the formgrader). An LMS says who is who in the LTI 1.3 roles claim; an OAuth identity
provider in a groups claim (INTERPLAB_OAUTH_INSTRUCTOR_GROUP); with the native authenticator
the instructors are listed in INTERPLAB_INSTRUCTORS.
"""
from __future__ import annotations

import ipaddress
import json
import os
import secrets
from pathlib import Path

from jupyterhub.auth import Authenticator
from jupyterhub.handlers.login import LoginHandler as HubLoginHandler
from ltiauthenticator.lti13.auth import LTI13Authenticator
from nativeauthenticator import NativeAuthenticator
from nativeauthenticator.handlers import LoginHandler as NativeLoginHandler
from tornado.escape import url_escape
from tornado.httputil import url_concat
from traitlets import Dict, List, Unicode

DEMO_INSTRUCTOR = "instructor"
DEMO_STUDENTS = ("alice", "bob", "carol")

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


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an IP or name as given to ``JupyterHub.ip``) only listens on loopback."""
    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def demo_accounts(data_dir: Path, students: tuple[str, ...] = DEMO_STUDENTS) -> dict[str, str]:
    """The demo logins (name -> password), made once per data directory and kept in it (0600)."""
    path = Path(data_dir) / "demo-accounts.json"
    accounts: dict[str, str] = json.loads(path.read_text()) if path.is_file() else {}
    wanted = (DEMO_INSTRUCTOR, *students)
    if any(name not in accounts for name in wanted):
        for name in wanted:
            accounts.setdefault(name, secrets.token_urlsafe(9))
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(accounts, f, indent=1)
    return {name: accounts[name] for name in wanted}


class DemoAuthenticator(Authenticator):
    """Fixed demo accounts with generated passwords; only for a hub bound to loopback.

    jupyterhub_config.py refuses to start with it on any other address, and the check is repeated
    here so a copied config cannot expose it."""

    accounts = Dict(Unicode(), config=True, help="name -> password")
    bind_host = Unicode("127.0.0.1", config=True, help="the host the hub's proxy listens on")

    def check_allow_config(self) -> None:
        if not is_loopback(self.bind_host):
            raise ValueError(
                f"the demo login only runs on loopback, but the hub binds {self.bind_host!r}: "
                "set INTERPLAB_AUTH=native|oauth|lti13 for a public hub"
            )
        super().check_allow_config()

    async def authenticate(self, handler, data):
        name = (data or {}).get("username", "")
        password = (data or {}).get("password", "")
        expected = self.accounts.get(name)
        if expected is not None and secrets.compare_digest(expected, password):
            return name
        return None


class CourseNativeLoginHandler(NativeLoginHandler):
    """nativeauthenticator 1.3's login page on JupyterHub 6. Its ``post`` times the login with the
    handlers' ``statsd``, which JupyterHub 6 removed (every login answered HTTP 500), and its
    ``_render`` refuses the extra arguments JupyterHub 6 passes when it shows an error on the form."""

    def _render(self, login_error: str | None = None, username: str | None = None, sync: bool = False, **_):
        if sync:  # an error shown while handling the form: only JupyterHub's own templates load synchronously
            return HubLoginHandler._render(self, login_error=login_error, username=username, sync=True)
        return self.render_template(
            "native-login.html",
            next=url_escape(self.get_argument("next", default="")),
            username=username,
            login_error=login_error,
            custom_html=self.authenticator.custom_html,
            login_url=self.settings["login_url"],
            enable_signup=self.authenticator.enable_signup,
            two_factor_auth=self.authenticator.allow_2fa,
            authenticator_login_url=url_concat(self.authenticator.login_url(self.hub.base_url),
                                               {"next": self.get_argument("next", "")}),
        )

    async def post(self) -> None:
        data = {arg: self.get_argument(arg, strip=False) for arg in self.request.arguments}
        user = await self.login_user(data)
        if user:
            self._jupyterhub_user = user
            self.redirect(self.get_next_url(user))
            return
        error = "Invalid username or password."
        username = data.get("username", "")
        info = self.authenticator.get_user(username)
        if info is not None and info.is_valid_password(data.get("password", "")) and not info.is_authorized:
            error = f"User {username} has not been authorized by an administrator yet."
        self.finish(await self._render(login_error=error, username=username))


class CourseNativeAuthenticator(NativeAuthenticator):
    """NativeAuthenticator (sign-up, approval by an admin, login) working with JupyterHub 6. Everyone
    it lets in is enrolled in the course, the listed instructors also as its instructors (requires
    ``Authenticator.manage_groups = True``): approval by an admin is the enrolment."""

    course_id = Unicode("interplab", config=True, help="nbgrader course id the approved users enrol in")
    instructors = List(Unicode(), config=True, help="user names that are the course's instructors")

    async def authenticate(self, handler, data):
        name = await super().authenticate(handler, data)
        if not name:
            return name
        return {"name": name, "groups": course_groups(self.course_id, name in self.instructors)}

    def get_handlers(self, app):
        return [(path, CourseNativeLoginHandler if path == r"/login" else handler)
                for path, handler in super().get_handlers(app)]
