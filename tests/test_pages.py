"""The step that makes a submitted notebook inert before any page shows it (autograder/pages.py).
The same payloads in real Chromium, through real grading and the real formgrader: test_stored_script.py."""
from __future__ import annotations

import base64
import re

import nbformat
import pytest

from interplab.autograder.pages import NeutraliseStudentContent, as_plain_text, html_problem, render_markdown

SAFE_MARKDOWN = [
    "## A heading\n\nSome *text*, `code`, $a<b$ and $$c<d$$, a [link](https://arxiv.org/abs/2211.00593) and [a local one](#top).",
    "| a | b |\n|---|:-:|\n| 1 | 2 |",
    "<details><summary>Hint 1</summary>\n\nUse `einsum`.\n</details>",
    "```python\nif a < b and '<script>' in s:\n    pass\n```",
    "![a plot](attachment:plot.png)",
    "<!-- an instructor's comment -->",
]
UNSAFE_MARKDOWN = {
    "<img src=x onerror=alert(1)>": "src 'x'",
    "<script>alert(1)</script>": "element 'script'",
    "<svg onload=alert(1)></svg>": "element 'svg'",
    "<iframe srcdoc='&lt;script&gt;alert(1)&lt;/script&gt;'></iframe>": "element 'iframe'",
    "<details open ontoggle=alert(1)>": "attribute 'ontoggle'",
    "<!-- --!><img src=x onerror=alert(1)> -->": "on 'img'",  # the spec's comment end, not Python's
    "[x](javascript:alert(1))": "href 'javascript:alert(1)'",
    "<a href='java&#x09;script:alert(1)'>x</a>": "href 'java\\tscript:alert(1)'",
    "![x](http://127.0.0.1:9/beacon.png)": "src 'http://127.0.0.1:9/beacon.png'",
    "<p style='background:url(http://127.0.0.1:9/)'>x</p>": "style",
    "<math><mtext><img src=x onerror=alert(1)>": "element 'math'",
    "<form action=x><button>go</button></form>": "element 'form'",
}


@pytest.mark.parametrize("source", SAFE_MARKDOWN)
def test_ordinary_markdown_renders_as_it_is(source):
    attachments = {"plot.png": {"image/png": "iVBORw0KGgo="}}
    assert html_problem(render_markdown(source, attachments)) is None


@pytest.mark.parametrize("source,problem", UNSAFE_MARKDOWN.items())
def test_markdown_that_could_run_or_load_anything_is_caught(source, problem):
    found = html_problem(render_markdown(source))
    assert found is not None and problem in found


def test_plain_text_fence_outlasts_any_backticks_in_the_source():
    source = "<script>x</script>\n````\nstill text\n````"
    html = render_markdown(as_plain_text(source))
    assert html_problem(html) is None and "&lt;script&gt;" in html and "still text" in html


def neutralised(nb):
    step = NeutraliseStudentContent()
    return step.preprocess(nb, {})[0]


def test_outputs_keep_only_inert_types_and_numeric_metadata():
    cell = nbformat.v4.new_code_cell("x", outputs=[
        nbformat.v4.new_output("display_data", data={"text/html": "<img src=x onerror=alert(1)>", "text/plain": "plain"}),
        nbformat.v4.new_output("display_data", data={"text/html": "<table><tr><td>ok</td></tr></table>"}),
        nbformat.v4.new_output("display_data", data={"application/javascript": "alert(1)"}),
        nbformat.v4.new_output("display_data", data={"image/svg+xml": "<svg onload=alert(1)/>", "image/png": "iVBORw0KGgo="},
                               metadata={"image/png": {"width": "1 onerror=alert(1)", "height": 20, "unconfined": True},
                                         "image/svg+xml": {"width": 3}}),
        nbformat.v4.new_output("display_data", data={"image/png": "\"><script>alert(1)</script>"}),
        nbformat.v4.new_output("execute_result", data={"text/markdown": "**bold**"}, execution_count=1),
        nbformat.v4.new_output("stream", text="<script>stays text; nbconvert escapes streams</script>"),
    ])
    nb = nbformat.v4.new_notebook(cells=[cell])
    nb.cells[0].execution_count = "<b>1</b>"  # as a hand-edited notebook may hold it
    out = neutralised(nb).cells[0]
    assert out.execution_count is None
    datas = [o.get("data") for o in out.outputs]
    assert datas[0] == {"text/plain": "plain"}
    assert datas[1] == {"text/html": "<table><tr><td>ok</td></tr></table>"}
    assert datas[2] == {"text/plain": "[output not shown in this page: application/javascript]"}
    assert datas[3] == {"image/png": "iVBORw0KGgo="} and out.outputs[3].metadata == {"image/png": {"height": 20}}
    assert datas[4] == {"text/plain": "[output not shown in this page: image/png]"}
    assert datas[5] == {"text/markdown": "**bold**"}
    assert out.outputs[6].text.startswith("<script>")


def test_cells_and_metadata_that_pages_write_unescaped_are_cleaned():
    md = nbformat.v4.new_markdown_cell("![a](attachment:a.png) ![b](attachment:b.html)")
    md.attachments = {"a.png": {"image/png": "iVBORw0KGgo="},
                      "b.html": {"text/html": base64.b64encode(b"<script>alert(1)</script>").decode()}}
    raw = nbformat.v4.new_raw_cell("<script>alert(1)</script>", metadata={"format": "text/html", "raw_mimetype": "text/html"})
    forged = nbformat.v4.new_code_cell("1", metadata={"nbgrader": {"grade": True, "grade_id": "x\"><script>", "points": 1}})
    ours = nbformat.v4.new_code_cell("1", metadata={"nbgrader": {"grade": True, "grade_id": "test_softmax", "points": 1}})
    nb = nbformat.v4.new_notebook(cells=[md, raw, forged, ours], metadata={
        "kernelspec": {"name": "python3", "display_name": "Python 3"}, "title": "</title><script>", "widgets": {"state": {}}})
    nb.cells[3].id = "bad id\"><script>"
    out = neutralised(nb)
    assert set(out.metadata) == {"kernelspec"}
    assert out.cells[0].attachments == {"a.png": {"image/png": "iVBORw0KGgo="}}
    assert out.cells[0].source.startswith("*(This cell held HTML")  # b.html is gone, so the reference is shown as text
    assert "format" not in out.cells[1].metadata and "raw_mimetype" not in out.cells[1].metadata
    assert "nbgrader" not in out.cells[2].metadata and out.cells[3].metadata.nbgrader.grade_id == "test_softmax"
    assert out.cells[3].id == "cell-3"


def test_only_the_templates_scripts_get_the_nonce():
    """The nonce goes on the <script> tags of trusted template sources, never on what is rendered
    into them; each HTML response gets a fresh nonce of the marker's length; the static inline
    handlers of the templates are allowed by hash, nothing else inline."""
    import jinja2
    from tornado.httputil import HTTPHeaders, HTTPServerRequest, RequestStartLine

    from interplab.autograder.formgrader_csp import MARKER, policy_transform, source_hash

    templates = {"page.html": '<script>var base = "{{ base }}";</script><b onclick="toggle(1);">x</b>{{ student }}',
                 "nbconvert.html": "<script>{{ output }}</script>"}
    env = jinja2.Environment(loader=jinja2.DictLoader(templates))
    exporter = type("Exporter", (), {"environment": jinja2.Environment(loader=jinja2.DictLoader(templates))})()
    settings = {"nbgrader_jinja2_env": env, "nbgrader_exporter": exporter}
    transform = policy_transform("/", settings)
    request = HTTPServerRequest(start_line=RequestStartLine("GET", "/formgrader/x", "HTTP/1.1"),
                                headers=HTTPHeaders({"Host": "hub"}))
    transform(request)  # the first request marks the server's templates (the exporter's: only nbgrader's own files)
    body = env.get_template("page.html").render(base="/", student="<script>alert(1)</script>").encode()
    wrapped = exporter.environment.get_template("nbconvert.html").render(output="alert(2)").encode()
    assert body.count(MARKER.encode()) == 1 and MARKER.encode() not in wrapped
    nonces = []
    for _ in range(2):
        _, headers, out = transform(request).transform_first_chunk(
            200, HTTPHeaders({"Content-Type": "text/html", "Content-Length": str(len(body))}), body, True)
        policy = headers["Content-Security-Policy"]
        nonce = re.search(r"'nonce-([\w-]+)'", policy).group(1)
        assert len(out) == len(body) and out.count(f'<script nonce="{nonce}">'.encode()) == 1
        assert b"<script>alert(1)</script>" in out and "unsafe-inline" not in policy.split("style-src")[0]
        assert f"'unsafe-hashes' '{source_hash('toggle(1);')}'" in policy
        nonces.append(nonce)
    assert nonces[0] != nonces[1]


@pytest.mark.parametrize("path,content_type,is_file,download", [
    ("/services/formgrader-interplab/formgrader/submissions/abc/", "text/html", False, False),
    ("/services/formgrader-interplab/files/submitted/bob/mini/evil.html", "text/html", True, True),
    ("/services/formgrader-interplab/files/submitted/bob/mini/plot.svg", "image/svg+xml", True, True),
    ("/services/formgrader-interplab/files/submitted/bob/mini/plot.png", "image/png", True, False),
    ("/services/formgrader-interplab/nbconvert/html/submitted/bob/mini/mini.ipynb", "text/html; charset=UTF-8", True, True),
    ("/services/formgrader-interplab/view/submitted/bob/mini/evil.html", "text/html", True, True),
    ("/files/evil.html", "text/html", False, False),  # not under this server's base URL: another server's
])
def test_formgrader_responses_get_the_policy_of_their_route(path, content_type, is_file, download):
    from tornado.httputil import HTTPHeaders, HTTPServerRequest, RequestStartLine

    from interplab.autograder.formgrader_csp import FILE_POLICY, policy_transform

    transform = policy_transform("/services/formgrader-interplab/")(
        HTTPServerRequest(start_line=RequestStartLine("GET", path, "HTTP/1.1"), headers=HTTPHeaders({"Host": "hub"})))
    _, headers, _ = transform.transform_first_chunk(200, HTTPHeaders({"Content-Type": content_type}), b"", True)
    if is_file:
        assert headers["Content-Security-Policy"] == FILE_POLICY
    else:
        assert re.search(r"script-src 'self' 'nonce-[\w-]{22}';", headers["Content-Security-Policy"])
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert (headers.get("Content-Disposition") == "attachment") == download
    if download:
        assert headers["Content-Type"].startswith("text/plain")
