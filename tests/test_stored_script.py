"""Nothing a student wrote runs as script in a page we serve, tried in real headless Chromium.

A submission carries payloads in every place a student controls: markdown cells (raw HTML, links,
images), outputs its code really produces when graded (HTML, JavaScript, SVG, markdown, image
metadata, unknown MIME types, widget views), a raw cell, a cell attachment, notebook metadata and
extra files in the submission folder. Each payload sets ``document.title`` and calls a loopback
listener the test runs. The submission is graded with `interplab grade` (real nbgrader, real
kernels); then the feedback file is opened as a student would, and the real formgrader (nbgrader's
server extension, started with the course's formgrader config) as an instructor would: its
submission view, the feedback and the submission's files. The marker must never fire; a control
page opened outside our pages shows it would.

The same graded course checks the feedback's table of exercises (issue 12): rows, links, reasons
and the named mistake."""
from __future__ import annotations

import base64
import http.server
import json
import socket
import subprocess
import sys
import threading
import time
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import numpy as np
import pytest
import requests

from interplab.checking import decode

from conftest import REPO, edit_solution, interplab, tool_env

pytestmark = pytest.mark.slow
pytest_plugins = ["hub_fixtures"]  # chromium, browser

ATTACKER, HONEST = "attacker", "dtype"


class Listener:
    """A loopback HTTP server recording the path of every request (each payload names itself)."""

    def __init__(self) -> None:
        hits = self.hits = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                hits.append(self.path)
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def payload(port: int, where: str) -> str:
    """JavaScript without spaces or double quotes (it must fit an unquoted attribute value too)."""
    return f"document.title='PWNED-{where}';fetch('http://127.0.0.1:{port}/{where}')"


def attack_notebook(release: Path, out: Path, port: int) -> None:
    js = lambda where: payload(port, where)  # noqa: E731
    nb = nbformat.read(release, as_version=4)
    markdown = [
        f'<img src=x onerror="{js("md-img")}">',
        f"<script>{js('md-script')}</script>",
        f'<svg onload="{js("md-svg")}"></svg>',
        f'<iframe srcdoc="&lt;script&gt;{js("md-iframe")}&lt;/script&gt;"></iframe>',
        f'<details open ontoggle="{js("md-details")}"><summary>x</summary></details>',
        f"<!-- --!><img src=x onerror=\"{js('md-comment')}\"> -->",
        f"![beacon](http://127.0.0.1:{port}/md-beacon.png)",
        f"[click me](javascript:{js('md-link')})",
        "![attached](attachment:evil.html)",
    ]
    cells = [nbformat.v4.new_markdown_cell(source) for source in markdown]
    cells[-1].attachments = {"evil.html": {"text/html": base64.b64encode(f"<script>{js('attachment')}</script>".encode()).decode()}}
    cells.append(nbformat.v4.new_raw_cell(f'<img src=x onerror="{js("raw-cell")}">', metadata={"format": "text/html"}))
    svg = '<svg xmlns="http://www.w3.org/2000/svg" onload="%s"><script>%s</script></svg>' % (js("out-svg"), js("out-svg-script"))
    outputs = [
        "display(HTML(%r))" % f'<img src=x onerror="{js("out-html")}">',
        "display(Javascript(%r))" % js("out-js"),
        "display(SVG(%r))" % svg,
        "display(Markdown(%r))" % f'<img src=x onerror="{js("out-markdown")}">',
        # nbconvert writes an image's width unquoted: a space would start a new attribute
        "display({'image/png': 'iVBORw0KGgo=', 'text/plain': 'broken png'}, raw=True, metadata={'image/png': {'width': %r}})"
        % ("1 onerror=" + js("out-metadata")),
        "display({'application/x-unknown': %r, 'text/html': '<b>bold</b>'}, raw=True)" % f"<script>{js('out-unknown')}</script>",
        "display({'application/vnd.jupyter.widget-view+json': {'model_id': 'x', 'version_major': 2, 'version_minor': 0}}, raw=True)",
    ]
    cells.append(nbformat.v4.new_code_cell("from IPython.display import HTML, SVG, Javascript, Markdown, display\n"
                                           + "\n".join(outputs)))
    at = next(i for i, c in enumerate(nb.cells) if c.metadata.get("nbgrader", {}).get("grade_id") == "setup")
    nb.cells[at + 1:at + 1] = cells
    nb.metadata["title"] = f"</title><script>{js('nb-title')}</script>"
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}, "version_major": 2, "version_minor": 0}}
    out.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, out)
    (out.parent / "evil.html").write_text(f"<html><body><script>{js('extra-html')}</script></body></html>")
    (out.parent / "evil.svg").write_text(f'<svg xmlns="http://www.w3.org/2000/svg" onload="{js("extra-svg")}"/>')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def graded(mini_course):
    """The mini course with the attacker's and an honest student's submissions, graded."""
    course = mini_course
    listener = Listener()
    release = course / "release" / "mini" / "mini.ipynb"
    attack_notebook(release, course / "submitted" / ATTACKER / "mini" / "mini.ipynb", listener.port)
    edit_solution(release, {  # a float16 softmax (dtype only) and the squared norm (a known mistake)
        "impl_softmax": "def softmax(x):\n    z = np.exp(x - x.max(axis=-1, keepdims=True))\n"
                        "    return (z / z.sum(axis=-1, keepdims=True)).astype(np.float16)\n",
        "impl_row_norms": "def row_norms(x):\n    return (x ** 2).sum(axis=1)\n",
    }, course / "submitted" / HONEST / "mini" / "mini.ipynb")
    proc = interplab("grade", "mini", "--course", str(course))
    assert proc.returncode == 0 and "with problems" not in proc.stdout.replace("; 0 with problems", ""), proc.stdout + proc.stderr
    assert listener.hits == []  # nothing fired while grading (no browser involved yet)
    return course, listener


@pytest.fixture(scope="module")
def formgrader(graded):
    """nbgrader's formgrader, as the hub's service runs it: the course's formgrader config
    (deploy/formgrader), the course directory as root, token login."""
    course, _ = graded
    port, token = free_port(), "formgrader-test-token"
    env = dict(tool_env(), JUPYTER_CONFIG_PATH=str(REPO / "deploy" / "formgrader"), INTERPLAB_COURSE_ID="interplab",
               INTERPLAB_EXCHANGE=str(course / "exchange"), HF_HUB_OFFLINE="1")
    log = open(course.parent / "formgrader.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "jupyter_server", "--no-browser", "--allow-root",
                             f"--port={port}", "--ip=127.0.0.1", f"--ServerApp.root_dir={course}",
                             f"--IdentityProvider.token={token}"], cwd=course, env=env, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                if requests.get(f"{url}/api/status", params={"token": token}, timeout=5).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert proc.poll() is None, (course.parent / "formgrader.log").read_text()[-3000:]
            time.sleep(0.5)
        yield url, token
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def settle(driver, listener: Listener, seconds: float = 3.0) -> None:
    """Give any payload time to run (image errors, fetches) before looking for the marker."""
    time.sleep(seconds)
    driver.execute_script("return document.readyState")


def assert_no_marker(driver, listener: Listener, page: str) -> None:
    settle(driver, listener)
    assert "PWNED" not in driver.title, f"{page}: script ran ({driver.title})"
    assert listener.hits == [], f"{page}: the page called the listener: {listener.hits}"


def test_the_marker_fires_outside_our_pages(graded, browser):
    """The control: the attacker's extra file opened straight from disk runs its script."""
    course, listener = graded
    browser.get((course / "submitted" / ATTACKER / "mini" / "evil.html").as_uri())
    settle(browser, listener)
    assert browser.title == "PWNED-extra-html" and "/extra-html" in listener.hits
    listener.hits.clear()


def test_feedback_runs_nothing_the_student_wrote(graded, browser):
    course, listener = graded
    feedback = course / "feedback" / ATTACKER / "mini" / "mini.html"
    html = feedback.read_text()
    assert html.index('http-equiv="Content-Security-Policy"') < html.index("<script")  # the policy comes first
    browser.get(feedback.as_uri())
    assert_no_marker(browser, listener, "feedback")
    # what the student wrote is still there to read, as text
    assert "onerror" in browser.find_element("tag name", "body").text


def test_formgrader_shows_the_submission_without_running_it(graded, formgrader, browser):
    from nbgrader.api import Gradebook

    course, listener = graded
    url, token = formgrader
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}", "interplab") as gb:
        submission = gb.find_submission_notebook("mini", "mini", ATTACKER).id
    browser.get(f"{url}/formgrader/submissions/{submission}/?token={token}")
    assert_no_marker(browser, listener, "formgrader submission view")
    # the formgrader's own scripts still work under its policy: the grading widgets are there
    assert browser.execute_script("return typeof jQuery") == "function"
    assert browser.find_elements("css selector", "input.score, .score")
    assert "test_softmax" in browser.page_source

    for path in [f"files/feedback/{ATTACKER}/mini/mini.html", f"files/submitted/{ATTACKER}/mini/evil.html",
                 f"files/submitted/{ATTACKER}/mini/evil.svg", f"view/submitted/{ATTACKER}/mini/evil.html",
                 f"nbconvert/html/submitted/{ATTACKER}/mini/mini.ipynb"]:
        browser.get("about:blank")  # a download leaves the blank page; a page would replace it
        browser.get(f"{url}/{path}?token={token}")
        assert_no_marker(browser, listener, path)
    raw = requests.get(f"{url}/files/submitted/{ATTACKER}/mini/evil.html", params={"token": token}, timeout=30)
    assert raw.headers["Content-Disposition"] == "attachment" and raw.headers["Content-Type"].startswith("text/plain")
    assert raw.headers["Content-Security-Policy"].startswith("sandbox; default-src 'none'")
    page = requests.get(f"{url}/formgrader/submissions/{submission}/", params={"token": token}, timeout=30)
    policy = page.headers["Content-Security-Policy"]
    assert "object-src 'none'" in policy and "'nonce-" in policy
    assert "unsafe-inline" not in policy.split("style-src")[0]  # no inline script but the templates' own


def test_the_formgrader_policy_stops_script_that_got_past_the_sanitiser(graded, formgrader, browser):
    """The second wall alone: script written straight into the autograded notebook the submission view
    renders (as if the sanitiser had missed it) does not run, while the formgrader's own inline
    script and its hashed inline handler (the student-name toggle) still work."""
    from nbgrader.api import Gradebook

    course, listener = graded
    url, token = formgrader
    autograded = course / "autograded" / HONEST / "mini" / "mini.ipynb"
    original = autograded.read_text()
    nb = nbformat.reads(original, as_version=4)
    code = next(c for c in nb.cells if c.cell_type == "code")
    code.outputs = [nbformat.v4.new_output("display_data", data={  # one output per MIME type (nbconvert shows one)
        "text/html": f"<script>{payload(listener.port, 'wall-html')}</script>"
                     f"<img src=x onerror=\"{payload(listener.port, 'wall-img')}\">"}),
        nbformat.v4.new_output("display_data", data={"application/javascript": payload(listener.port, "wall-js")})]
    nb.cells.insert(0, nbformat.v4.new_markdown_cell(f"<script>{payload(listener.port, 'wall-md')}</script>"))
    nbformat.write(nb, autograded)
    try:
        with Gradebook(f"sqlite:///{course / 'gradebook.db'}", "interplab") as gb:
            submission = gb.find_submission_notebook("mini", "mini", HONEST).id
        browser.get(f"{url}/formgrader/submissions/{submission}/?token={token}")
        assert_no_marker(browser, listener, "formgrader submission view with script in the notebook")
        assert browser.execute_script("return typeof base_url") == "string"  # the template's inline script ran
        assert all(f"wall-{where}" in browser.page_source for where in ("html", "img", "js", "md"))  # there, inert
        hidden = browser.find_element("css selector", "span.name-hidden")
        browser.execute_script("arguments[0].style.display = 'inline'", hidden)
        hidden.click()  # onclick="toggle_name(true);", allowed by its hash
        assert browser.find_element("css selector", "span.name-shown").is_displayed()
    finally:
        autograded.write_text(original)


class Table(HTMLParser):
    """The rows of the feedback's exercise table, cell texts by column class, plus the links."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict[str, str]] = []
        self.anchors: set[str] = set()
        self._in_table = False
        self._column: str | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table" and attrs.get("id") == "exercises":
            self._in_table = True
        elif tag == "a" and "name" in attrs:
            self.anchors.add(attrs["name"])
        elif self._in_table and tag == "tr" and "class" in attrs:
            self.rows.append({"class": attrs["class"]})
        elif self._in_table and tag == "td":
            self._column = attrs.get("class")
        elif self._in_table and tag == "a" and self._column == "exercise":
            self.rows[-1]["href"] = attrs["href"]

    def handle_endtag(self, tag):
        if tag == "table":
            self._in_table = False
        elif tag == "td":
            self._column = None

    def handle_data(self, data):
        if self._column and self.rows:
            self.rows[-1][self._column] = self.rows[-1].get(self._column, "") + data.strip()


def test_feedback_opens_with_a_table_of_the_exercises(graded):
    course, _ = graded
    html = (course / "feedback" / HONEST / "mini" / "mini.html").read_text()
    table = Table()
    table.feed(html)
    softmax, norms = table.rows
    assert softmax["exercise"] == "mini.softmax" and softmax["href"] == "#test_softmax"
    assert norms["exercise"] == "mini.row_norms" and norms["href"] == "#test_row_norms"
    assert {"test_softmax", "test_row_norms"} <= table.anchors  # the links land on the test cells
    assert softmax["class"] == norms["class"] == "failed" and softmax["result"] == norms["result"] == "fail"
    assert softmax["points"] == "0.0 / 2.0" and norms["points"] == "0.0 / 1.0"
    # dtype only: said, and nothing else (no hint about the values, no mistake)
    assert "expected dtype float32 (or more precise), got float16" in softmax["reason"]
    assert "Hint" not in softmax["reason"] and "subtract the max" not in html and softmax.get("mistake", "") == ""
    assert norms["mistake"] == "you returned the squared norm; take the square root"
    assert "values differ" in norms["reason"]
    assert "Test cell</a>" not in html  # nbgrader's bare list is gone

    master = course / "feedback" / ATTACKER / "mini" / "mini.html"
    rows = Table()
    rows.feed(master.read_text())
    assert [r["result"] for r in rows.rows] == ["fail", "fail"]  # the attacker did not solve anything

    # no hidden input or reference value
    store = course / ".interplab" / "mini"  # the build's references and each student's own
    for path in [store / "references.json", *sorted((store / "references").glob("*.json"))]:
        for exercise in json.loads(path.read_text())["exercises"].values():
            for outcome in exercise["hidden"]:
                for value in np.ravel(decode(outcome["output"]))[:8]:
                    assert f"{value:.4f}" not in html, value
