"""What the pages we serve may show of a student's notebook: nothing that runs as script.

Every byte of a submission is the student's: markdown cells, outputs (a student can write any
output, of any MIME type, straight into the notebook's JSON), output and notebook metadata, cell
attachments. The formgrader renders autograded notebooks on the instructors' origin, and the
feedback HTML is opened by instructors and students. Two layers keep script out:

1. :class:`NeutraliseStudentContent`, a step of nbgrader's autograde and feedback pipelines (the
   course's ``nbgrader_config.py``), rewrites the notebook so that nothing in it renders as active
   content: HTML (raw, in markdown cells, or in ``text/html`` / ``text/markdown`` outputs) is kept
   only when it uses nothing outside :data:`ALLOWED_TAGS` and :data:`ALLOWED_ATTRIBUTES` (checked on
   the HTML that nbconvert's markdown renderer actually produces), else the markdown cell is shown as
   plain text and the output is dropped; script, SVG, widget and any other MIME type is dropped;
   output metadata (which nbconvert writes unquoted into ``<img>`` tags) is reduced to numbers.
2. A Content-Security-Policy on every page: a ``<meta>`` tag in each feedback file (the template
   ``templates/interplab_feedback``: no script at all, nothing loaded but data: images) and a header
   on every response of the formgrader's server (:mod:`interplab.autograder.formgrader_csp`).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from bleach import html5lib_shim
from nbconvert.filters.markdown_mistune import IPythonRenderer, MarkdownWithMath
from nbformat import NotebookNode
from nbgrader.preprocessors import NbGraderPreprocessor
from nbgrader.server_extensions.formgrader.handlers import template_path as NBGRADER_TEMPLATES

# The feedback template (interplab_feedback: nbgrader's, with a CSP and the exercises' table); it
# extends nbgrader's `feedback/index.html.j2` (so nbgrader's template folder is a search path) and
# inlines bootstrap.min.css from where nbgrader's GenerateFeedback finds it.
FEEDBACK_TEMPLATE = "interplab_feedback"
FEEDBACK_TEMPLATE_DIRS = [str(Path(__file__).parent / "templates"), NBGRADER_TEMPLATES]
FEEDBACK_TEMPLATE_PATHS = [NBGRADER_TEMPLATES,
                           str(Path(NBGRADER_TEMPLATES).parent / "static" / "node_modules" / "bootstrap" / "dist" / "css")]

ALLOWED_TAGS = frozenset({
    "a", "abbr", "b", "blockquote", "br", "caption", "cite", "code", "col", "colgroup", "dd", "del",
    "details", "div", "dl", "dt", "em", "figcaption", "figure", "h1", "h2", "h3", "h4", "h5", "h6", "hr",
    "i", "img", "ins", "kbd", "li", "mark", "ol", "p", "pre", "q", "s", "samp", "small", "span", "strong",
    "sub", "summary", "sup", "table", "tbody", "td", "tfoot", "th", "thead", "tr", "tt", "u", "ul", "var",
})
# ``href`` and ``src`` are checked against _SAFE_URL; ``style`` only as table alignment (CSS can
# load URLs); no event handler, ``srcdoc``, ``formaction`` or the like.
ALLOWED_ATTRIBUTES = frozenset({
    "align", "alt", "class", "colspan", "height", "href", "id", "open", "rowspan", "src", "start",
    "style", "title", "width",
})
_SAFE_URL = {
    "href": re.compile(r"(?:https?:|mailto:|#).*|[^:/?#]*(?:[/?#].*)?", re.IGNORECASE | re.DOTALL),  # or relative
    "src": re.compile(r"data:image/(png|jpeg|gif|webp);base64,[A-Za-z0-9+/=\s]*", re.IGNORECASE),
}
_SAFE_STYLE = re.compile(r"\s*text-align\s*:\s*(left|right|center)\s*;?\s*", re.IGNORECASE)

# MIME types of outputs kept as they are: text nbconvert escapes, or base64 images it escapes.
IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif"})
SAFE_OUTPUT_TYPES = IMAGE_TYPES | {"text/plain"}
# MIME types kept only when their HTML passes the check.
CHECKED_OUTPUT_TYPES = frozenset({"text/html", "text/markdown"})
_BASE64 = re.compile(r"[A-Za-z0-9+/=\s]*")
_CELL_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
KEPT_NOTEBOOK_METADATA = ("kernelspec", "language_info", "nbgrader", "interplab")


def html_problem(html: str) -> str | None:
    """What in ``html`` could run script or load something (the first thing found), or None.

    ``html`` is parsed as a browser parses it (html5lib, the spec's algorithm, as bleach vendors it),
    so markup a lenient parser would read differently (``--!>`` ending a comment, ...) is seen as the
    browser sees it."""
    tree = html5lib_shim.HTMLParser(namespaceHTMLElements=False).parseFragment(html)
    for token in html5lib_shim.getTreeWalker("etree")(tree):
        if token["type"] not in ("StartTag", "EmptyTag"):
            continue
        tag = token["name"]
        if tag not in ALLOWED_TAGS or token.get("namespace") not in (None, html5lib_shim.namespaces["html"]):
            return f"HTML element {tag!r}"
        for (_, name), value in token["data"].items():
            if name not in ALLOWED_ATTRIBUTES:
                return f"HTML attribute {name!r} on {tag!r}"
            if name in _SAFE_URL and not _SAFE_URL[name].fullmatch(value.strip()):
                return f"HTML {name} {value[:40]!r} on {tag!r}"
            if name == "style" and not _SAFE_STYLE.fullmatch(value):
                return f"HTML style {value[:40]!r} on {tag!r}"
    return None


def render_markdown(source: str, attachments: dict[str, Any] | None = None) -> str:
    """The HTML nbconvert's exporters make of a markdown cell (same renderer, same settings)."""
    return MarkdownWithMath(renderer=IPythonRenderer(escape=False, attachments=attachments or {})).render(source)


def as_plain_text(source: str) -> str:
    """Markdown that shows ``source`` verbatim: a fenced code block longer than any backtick run in it."""
    fence = "`" * max(3, 1 + max((len(run) for run in re.findall(r"`+", source)), default=0))
    return ("*(This cell held HTML that is not rendered here: it is shown as text.)*\n\n"
            f"{fence}text\n{source}\n{fence}\n")


class NeutraliseStudentContent(NbGraderPreprocessor):
    """Rewrite a submitted notebook so that no page rendering it runs anything the student wrote.

    In autograde it runs after VerifyChecks (which needs the raw check outputs); the autograded
    notebook, which the formgrader shows and feedback is made from, is then already clean. It runs
    again first in GenerateFeedback, for notebooks autograded before it existed."""

    def preprocess(self, nb: NotebookNode, resources: dict[str, Any]):
        for key in [k for k in nb.metadata if k not in KEPT_NOTEBOOK_METADATA]:
            del nb.metadata[key]  # widget state (rendered with a widget manager script), title, ...
        for index, cell in enumerate(nb.cells):
            self.neutralise_cell(cell, index)
        return nb, resources

    def neutralise_cell(self, cell: NotebookNode, index: int) -> None:
        if "id" in cell and not _CELL_ID.fullmatch(str(cell.id)):
            cell.id = f"cell-{index}"
        grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        if grade_id is not None and not _CELL_ID.fullmatch(str(grade_id)):
            # nbgrader's templates write grade ids into the page unescaped; no cell of ours has such an id
            self.log.warning("cell %d: nbgrader metadata with an odd grade id removed", index)
            del cell.metadata["nbgrader"]
        if cell.cell_type == "markdown":
            attachments = _image_attachments(cell.get("attachments"))
            if "attachments" in cell:
                cell.attachments = attachments
            try:
                problem = html_problem(render_markdown(cell.source, attachments))
            except Exception as exc:  # noqa: BLE001 (whatever breaks the renderer must not reach a page)
                problem = f"nbconvert cannot render it: {type(exc).__name__}"
            if problem:
                self.log.warning("cell %d: markdown shown as text (%s)", index, problem)
                cell.source = as_plain_text(cell.source)
        elif cell.cell_type == "raw":
            for key in ("format", "raw_mimetype"):  # a raw cell with an HTML format is copied into the page
                cell.metadata.pop(key, None)
        elif cell.cell_type == "code":
            if not isinstance(cell.get("execution_count"), int):
                cell.execution_count = None
            cell.outputs = [self.neutralise_output(output, index) for output in cell.get("outputs", [])]

    def neutralise_output(self, output: NotebookNode, index: int) -> NotebookNode:
        if output.get("output_type") not in ("display_data", "execute_result"):
            return output  # stream and error text is escaped by nbconvert
        data = output.get("data", {})
        dropped = []
        for mime in list(data):
            value = data[mime]
            if mime in SAFE_OUTPUT_TYPES and isinstance(value, str) and (mime == "text/plain" or _BASE64.fullmatch(value)):
                continue
            if mime in CHECKED_OUTPUT_TYPES and isinstance(value, str):
                html = render_markdown(value) if mime == "text/markdown" else value
                if html_problem(html) is None:
                    continue
            dropped.append(mime)
            del data[mime]
        if dropped:
            self.log.warning("cell %d: output types not shown: %s", index, ", ".join(dropped))
        if dropped and not data:
            data["text/plain"] = f"[output not shown in this page: {', '.join(sorted(dropped))}]"
        # nbconvert writes width and height unquoted into <img ...>: keep numbers only
        output.metadata = {mime: {k: v for k, v in meta.items() if k in ("width", "height") and _is_number(v)}
                           for mime, meta in output.get("metadata", {}).items()
                           if mime in data and isinstance(meta, dict)}
        return output


def _image_attachments(attachments: Any) -> dict[str, dict[str, str]]:
    """The attachments that are base64 images (nbconvert embeds an attachment as an <img> data URL
    of its first MIME type); any other is dropped."""
    if not isinstance(attachments, dict):
        return {}
    kept = {}
    for name, bundle in attachments.items():
        images = {mime: data for mime, data in (bundle.items() if isinstance(bundle, dict) else ())
                  if mime in IMAGE_TYPES and isinstance(data, str) and _BASE64.fullmatch(data)}
        if images:
            kept[str(name)] = images
    return kept


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
