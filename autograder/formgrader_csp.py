"""A Jupyter server extension for the formgrader's server: a Content-Security-Policy on every
response, and files from the course directory (submissions included) never rendered as pages.

The formgrader's server runs on the instructors' origin with the course directory as its root, so
``/files/submitted/<student>/<a>/x.html`` would otherwise render a student's HTML with the
instructor's cookie. Its pages are nbgrader's templates, which need inline script of their own,
so the page policy allows inline script but nothing from elsewhere: no script, image, style or
connection from another origin, no plugins, no framing. Student content on those pages is made
inert before it gets there (:mod:`interplab.autograder.pages`). Responses with file content
(``/files/``, ``/view/``, ``/nbconvert/``) get a policy that lets nothing run, in a sandbox (a
unique origin), and HTML, SVG or XML among them is sent as a plain-text download.

Enable it in the server's config: ``c.ServerApp.jpserver_extensions["interplab.autograder.formgrader_csp"] = True``.
"""
from __future__ import annotations

from typing import Any

from tornado.httputil import HTTPHeaders, HTTPServerRequest
from tornado.web import OutputTransform

PAGE_POLICY = ("default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
               "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; object-src 'none'; "
               "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
FILE_POLICY = "sandbox; default-src 'none'; img-src data:; style-src 'unsafe-inline'; frame-ancestors 'none'"
FILE_ROUTES = ("files/", "view/", "nbconvert/")
ACTIVE_TYPES = ("text/html", "application/xhtml", "image/svg", "text/xml", "application/xml", "text/javascript",
                "application/javascript")


def policy_transform(base_url: str) -> type[OutputTransform]:
    """The transform for a server whose URLs start with ``base_url``."""
    file_prefixes = tuple(base_url.rstrip("/") + "/" + route for route in FILE_ROUTES)

    class ContentSecurityPolicy(OutputTransform):
        def __init__(self, request: HTTPServerRequest) -> None:
            self.is_file = request.path.startswith(file_prefixes)

        def transform_first_chunk(self, status_code: int, headers: HTTPHeaders, chunk: bytes,
                                  finishing: bool) -> tuple[int, HTTPHeaders, bytes]:
            headers["Content-Security-Policy"] = FILE_POLICY if self.is_file else PAGE_POLICY
            headers["X-Content-Type-Options"] = "nosniff"
            if self.is_file and headers.get("Content-Type", "").lower().startswith(ACTIVE_TYPES):
                headers["Content-Type"] = "text/plain; charset=utf-8"
                headers["Content-Disposition"] = "attachment"
            return status_code, headers, chunk

    return ContentSecurityPolicy


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "interplab.autograder.formgrader_csp"}]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    serverapp.web_app.add_transform(policy_transform(serverapp.base_url))
    serverapp.log.info("interplab: Content-Security-Policy on every response; course files served as downloads")
