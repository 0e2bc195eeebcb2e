"""A Jupyter server extension for the formgrader's server: a strict Content-Security-Policy on every
response, and files from the course directory (submissions included) never rendered as pages.

The formgrader's server runs on the instructors' origin with the course directory as its root, so
``/files/submitted/<student>/<a>/x.html`` would otherwise render a student's HTML with the
instructor's cookie. Student content on its pages is made inert before it gets there
(:mod:`interplab.autograder.pages`); the policy is the second wall, should anything get through.

Pages: script only from this origin or inline with this response's nonce. The nonce goes on the
``<script>`` tags of the *templates* (nbgrader's formgrader templates, the server's and JupyterLab's),
never on anything rendered into them: the templates' loaders mark each ``<script`` of their source
with a per-process secret (:class:`NoncedLoader`), and each HTML response swaps that secret for a
fresh nonce, which its header names. nbconvert's own templates (those that wrap a notebook's
JavaScript outputs in ``<script>``) are not marked, so in the submission view only nbgrader's
grading scripts run. nbgrader's few inline event handlers (``onclick="toggle_name(true);"``) are
allowed by their hashes alone. No plugins, no ``<base>``, no framing, nothing from another origin.

Files (``/files/``, ``/view/``, ``/nbconvert/``): a policy that lets nothing run, in a sandbox (a
unique origin), and HTML, SVG or XML among them is sent as a plain-text download.

Enable it in the server's config: ``c.ServerApp.jpserver_extensions["interplab.autograder.formgrader_csp"] = True``.
"""
from __future__ import annotations

import base64
import hashlib
import re
import secrets
from pathlib import Path
from typing import Any, Callable

import jinja2
from tornado.httputil import HTTPHeaders, HTTPServerRequest
from tornado.web import OutputTransform

# Same length as a nonce, so swapping one for the other keeps Content-Length right.
MARKER = secrets.token_urlsafe(16)
NONCE_ATTRIBUTE = f'nonce="{MARKER}"'
SCRIPT_TAG = re.compile(r"<script(?=[\s>])", re.IGNORECASE)
STATIC_HANDLER = re.compile(r"""\son[a-z]+="([^"{}]*)\"""")
FILE_POLICY = "sandbox; default-src 'none'; img-src data:; style-src 'unsafe-inline'; frame-ancestors 'none'"
FILE_ROUTES = ("files/", "view/", "nbconvert/")
ACTIVE_TYPES = ("text/html", "application/xhtml", "image/svg", "text/xml", "application/xml", "text/javascript",
                "application/javascript")


def page_policy(nonce: str, handler_hashes: frozenset[str] = frozenset()) -> str:
    """The policy of a page whose template scripts carry ``nonce``."""
    handlers = "".join(f" '{h}'" for h in sorted(handler_hashes))
    script = f"script-src 'self' 'nonce-{nonce}'" + (f" 'unsafe-hashes'{handlers}" if handlers else "")
    return (f"default-src 'self'; {script}; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
            "font-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
            "frame-ancestors 'none'")


class NoncedLoader(jinja2.BaseLoader):
    """Another loader's templates, each ``<script`` of their source marked for a nonce; only templates
    under ``trusted`` (every template when None) are marked. Records the hashes of the static inline
    event handlers of the marked templates (``onclick="..."`` without template expressions)."""

    def __init__(self, inner: jinja2.BaseLoader, trusted: tuple[str, ...] | None = None) -> None:
        self.inner, self.trusted = inner, trusted
        self.handler_hashes: set[str] = set()

    def get_source(self, environment: jinja2.Environment, template: str) -> tuple[str, str | None, Callable[[], bool] | None]:
        source, filename, uptodate = self.inner.get_source(environment, template)
        if self.trusted is None or (filename and filename.startswith(self.trusted)):
            source = SCRIPT_TAG.sub(f"<script {NONCE_ATTRIBUTE}", source)
            self.handler_hashes.update(source_hash(body) for body in STATIC_HANDLER.findall(source))
        return source, filename, uptodate

    def list_templates(self) -> list[str]:
        return self.inner.list_templates()


def source_hash(script: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()


def mark_templates(settings: dict[str, Any]) -> list[NoncedLoader]:
    """Mark the scripts of every template environment of the server (idempotent): the server's and its
    extensions' (``*jinja2_env``), and nbgrader's formgrade templates in its notebook exporter."""
    loaders = []
    for key, env in settings.items():
        if key.endswith("jinja2_env") and isinstance(env, jinja2.Environment):
            loaders.append(nonced(env, None))
    exporter = settings.get("nbgrader_exporter")
    if exporter is not None:
        from nbgrader.server_extensions.formgrader import handlers
        loaders.append(nonced(exporter.environment, (str(Path(handlers.template_path)),)))
    return loaders


def nonced(env: jinja2.Environment, trusted: tuple[str, ...] | None) -> NoncedLoader:
    if not isinstance(env.loader, NoncedLoader):
        env.loader = NoncedLoader(env.loader, trusted)
        if env.cache is not None:
            env.cache.clear()
    return env.loader


def policy_transform(base_url: str, settings: dict[str, Any] | None = None) -> type[OutputTransform]:
    """The transform for a server whose URLs start with ``base_url`` and whose web application has
    ``settings`` (its template environments are marked on the first request, when every extension
    has loaded its own)."""
    file_prefixes = tuple(base_url.rstrip("/") + "/" + route for route in FILE_ROUTES)
    marked: list[NoncedLoader] = []

    class ContentSecurityPolicy(OutputTransform):
        def __init__(self, request: HTTPServerRequest) -> None:
            self.is_file = request.path.startswith(file_prefixes)
            self.nonce: bytes | None = None
            if settings is not None and not marked:
                marked.extend(mark_templates(settings))

        def transform_first_chunk(self, status_code: int, headers: HTTPHeaders, chunk: bytes,
                                  finishing: bool) -> tuple[int, HTTPHeaders, bytes]:
            headers["X-Content-Type-Options"] = "nosniff"
            if self.is_file:
                headers["Content-Security-Policy"] = FILE_POLICY
                if headers.get("Content-Type", "").lower().startswith(ACTIVE_TYPES):
                    headers["Content-Type"] = "text/plain; charset=utf-8"
                    headers["Content-Disposition"] = "attachment"
                return status_code, headers, chunk
            nonce = secrets.token_urlsafe(16)
            hashes = frozenset().union(*(loader.handler_hashes for loader in marked))
            headers["Content-Security-Policy"] = page_policy(nonce, hashes)
            if headers.get("Content-Type", "").lower().startswith("text/html"):
                self.nonce = nonce.encode()
            return status_code, headers, self.transform_chunk(chunk, finishing)

        def transform_chunk(self, chunk: bytes, finishing: bool) -> bytes:
            return chunk.replace(MARKER.encode(), self.nonce) if self.nonce else chunk

    return ContentSecurityPolicy


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "interplab.autograder.formgrader_csp"}]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    serverapp.web_app.add_transform(policy_transform(serverapp.base_url, serverapp.web_app.settings))
    serverapp.log.info("interplab: a nonce Content-Security-Policy on every page; course files served as downloads")
