"""A semester on the small `mini` assignment with a written question, through the real CLI, real
nbgrader, a real formgrader server and headless Chromium: due dates and the late policy of
course.toml applied by nbgrader's late-submission step, a per-student extension (`interplab
extend`), the penalty in the grades CSV; the written answer's mark scheme hidden from the release
and the feedback but shown in the formgrader, a manual grade entered through the formgrader's API
appearing in the CSV's rows and totals; the course site (`interplab site`) without any solution,
mark scheme or hidden value, every internal link of it followed in Chromium."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from interplab.autograder.course import Course, CourseError
from interplab.autograder.deadlines import LatePolicy, Schedule

from conftest import REPO, TEST_ASSIGNMENTS, interplab, make_course, read_csv_rows

pytestmark = pytest.mark.slow
pytest_plugins = ["hub_fixtures"]  # chromium and browser (no hub is started here)

RUBRIC = "Full marks: names the max subtraction"
QUESTION = f"""
# %% [markdown] role="locked" grade_id="question_stability"
# **Question.** Why does `softmax` subtract the maximum before exponentiating?
# ### BEGIN MARK SCHEME
# {RUBRIC} (1) and says exp overflows for large inputs while the result is unchanged (1).
# ### END MARK SCHEME

# %% [markdown] role="answer" grade_id="answer_stability" points=2
# exp(x - max) never overflows, and the common factor exp(-max) cancels in the ratio.
"""
DUE = "2027-02-08T09:00:00"  # Europe/Berlin: 08:00 UTC
SUBMITTED = {  # UTC submission times
    "alice": "2027-02-08 08:10:00 UTC",    # within the 15 minutes of grace: on time
    "bob": "2027-02-09 14:00:00 UTC",      # 30 h late: 2 started days, -20 %
    "carol": "2027-02-09 14:00:00 UTC",    # as late, with an extension to the 10th: on time
    "dave": "2027-02-16 09:00:00 UTC",     # 8 days late: 0
}


def test_late_policy_penalties() -> None:
    policy = LatePolicy(grace_minutes=15, per_day=0.1, zero_after_days=7)
    assert policy.penalty(3, 15 * 60) == 0
    assert policy.penalty(3, 16 * 60) == pytest.approx(0.3)         # a started day, after the grace
    assert policy.penalty(3, 86400 + 15 * 60 + 1) == pytest.approx(0.6)
    assert policy.penalty(3, 7 * 86400 + 15 * 60 + 1) == 3
    assert policy.penalty(0, 10 * 86400) == 0
    assert LatePolicy().penalty(3, 10 * 86400) == 0                  # no policy: no penalty


def test_schedule_is_in_course_order_and_bad_settings_are_one_line(tmp_path) -> None:
    schedule = Schedule.of(Course.load(REPO / "course"))
    assert [d.week for d in schedule.items] == sorted(d.week for d in schedule.items)
    assert schedule.order(["attribution", "circuits", "zzz"])[:2] == ["circuits", "attribution"]
    course = make_course(tmp_path, TEST_ASSIGNMENTS)
    toml = course / "course.toml"
    good = toml.read_text()
    for bad, message in [("[late_policy]\nper_day = 10", "per_day is a fraction"),
                         ("[late_policy]\npenalty = 1", "unknown key"),
                         ('[schedule]\ntimezone = "Mars/Olympus"', "not a time zone"),
                         ('[schedule]\nmini = { week = 1 }', "needs exactly week")]:
        toml.write_text(good.split(bad.split("\n")[0])[0] + bad + "\n")
        with pytest.raises(CourseError, match=message):
            Schedule.of(Course.load(course))
    proc = interplab("extend", "mini", "bob", "--until", "2027-02-10", "--course", str(course))  # the CLI: one line
    assert proc.returncode == 2 and "needs exactly week" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def course(tmp_path_factory) -> Path:
    """`mini` with a written question, due 2027-02-08 09:00 Berlin, built and graded once."""
    tmp = tmp_path_factory.mktemp("semester")
    assignments = tmp / "assignments"
    shutil.copytree(TEST_ASSIGNMENTS / "mini", assignments / "mini")
    master = assignments / "mini" / "mini.py"
    master.write_text(master.read_text() + QUESTION)
    course = make_course(tmp, assignments)
    toml = course / "course.toml"
    schedule = toml.read_text().split("[schedule]")[1].split("\n[")[0]
    toml.write_text(toml.read_text().replace(schedule, f'\ntimezone = "Europe/Berlin"\nmini = {{ week = 1, due = {DUE} }}\n'))
    interplab("build", "--course", str(course), "mini", check=True)
    proc = interplab("extend", "mini", "carol", "--until", "2027-02-10", "--course", str(course))
    assert proc.returncode == 0 and "carol: mini due Wed 10 Feb 2027, 23:59 CET" in proc.stdout, proc.stdout + proc.stderr
    solved = course / "source" / "mini" / "mini.ipynb"
    for student, when in SUBMITTED.items():
        folder = course / "submitted" / student / "mini"
        folder.mkdir(parents=True)
        shutil.copy(solved, folder / "mini.ipynb")
        (folder / "timestamp.txt").write_text(when)
    proc = interplab("grade", "mini", "--course", str(course))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "4 written answer(s) await grading by hand in the formgrader" in proc.stdout, proc.stdout
    return course


def test_the_mark_scheme_is_released_to_nobody_but_the_instructor(course) -> None:
    release = (course / "release" / "mini" / "mini.ipynb").read_text()
    assert "Why does `softmax` subtract" in release and "YOUR ANSWER HERE" in release
    assert RUBRIC not in release and "exp(-max) cancels" not in release
    autograded = (course / "autograded" / "bob" / "mini" / "mini.ipynb").read_text()
    assert RUBRIC in autograded  # restored from the gradebook: what the formgrader shows
    feedback = (course / "feedback" / "bob" / "mini" / "mini.html").read_text()
    assert "Why does" in feedback and RUBRIC not in feedback


def test_late_penalties_and_extensions_in_the_grades_csv(course) -> None:
    rows = read_csv_rows(course / "grades" / "mini.csv")
    penalty = {student: rows[(student, "late_penalty")] for student in SUBMITTED}
    assert penalty["alice"] == (0, 0, "ok") and penalty["carol"] == (0, 0, "ok")
    score, _, status = penalty["bob"]
    assert score == pytest.approx(-0.6) and status.startswith("late by 1.") and "10 % of the score" in status
    assert penalty["dave"][0] == -3 and "late by 8.0 days" in penalty["dave"][2]
    assert rows[("bob", "test_softmax")] == (2, 2, "ok")  # cells keep their autograded score
    assert not any(grade_id == "answer_stability" for _, grade_id in rows)  # not graded by hand yet


def test_a_manual_grade_from_the_formgrader_reaches_the_csv_and_the_total(course, tmp_path) -> None:
    port, token = _free_port(), "semester-test-token"
    env = {**os.environ, "JUPYTER_CONFIG_PATH": str(REPO / "deploy" / "formgrader"), "INTERPLAB_EXCHANGE": str(tmp_path / "exchange"),
           "JUPYTER_CONFIG_DIR": str(tmp_path / "cfg"), "JUPYTER_DATA_DIR": str(tmp_path / "data"),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")}
    server = subprocess.Popen([sys.executable, "-m", "jupyter", "server", "--no-browser", f"--port={port}",
                               "--ip=127.0.0.1", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={course}",
                               *(["--allow-root"] if os.geteuid() == 0 else [])],
                              cwd=course, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    base, auth = f"http://127.0.0.1:{port}/formgrader", {"Authorization": f"token {token}"}
    try:
        for _ in range(120):
            try:
                if requests.get(f"{base}/api/status", headers=auth, timeout=5).status_code == 200:
                    break
            except requests.ConnectionError:
                time.sleep(0.5)
        else:
            pytest.fail("the formgrader did not start: " + server.stderr.read1().decode()[-2000:])
        submissions = requests.get(f"{base}/api/submitted_notebooks/mini/mini", headers=auth, timeout=30).json()
        bob = next(s for s in submissions if s["student"] == "bob")
        assert bob["needs_manual_grade"]
        page = requests.get(f"{base}/submissions/{bob['id']}", headers=auth, timeout=60)
        assert page.status_code == 200 and RUBRIC in page.text  # the mark scheme beside the answer
        grades = requests.get(f"{base}/api/grades", params={"submission_id": bob["id"]}, headers=auth, timeout=30).json()
        answer = next(g for g in grades if g["name"] == "answer_stability")
        assert answer["max_score"] == 2 and answer["manual_score"] is None
        put = requests.put(f"{base}/api/grade/{answer['id']}", headers=auth, timeout=30,
                           data=json.dumps({"manual_score": 1.5, "extra_credit": None}))
        assert put.status_code == 200, put.text
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
    proc = interplab("grade", "mini", "--course", str(course))  # executions cached; the manual grade is kept
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = read_csv_rows(course / "grades" / "mini.csv")
    assert rows[("bob", "answer_stability")] == (1.5, 2, "graded by hand")
    total = sum(score for (student, _), (score, _, _) in rows.items() if student == "bob")
    # nbgrader's late step takes its share of the notebook's whole score, the written answer included
    assert rows[("bob", "late_penalty")][0] == pytest.approx(-0.2 * 4.5)
    assert total == pytest.approx(2 + 1 + 1.5 - 0.9)
    assert ("alice", "answer_stability") not in rows


def _arrays(value) -> list[str]:
    """The base64 data of every array in a references file (the hidden reference values)."""
    if isinstance(value, dict):
        return [value["b64"]] if isinstance(value.get("b64"), str) else [s for v in value.values() for s in _arrays(v)]
    if isinstance(value, list):
        return [s for v in value for s in _arrays(v)]
    return []


@pytest.fixture(scope="module")
def site(course) -> Path:
    proc = interplab("site", "--course", str(course))
    assert proc.returncode == 0 and "course site:" in proc.stdout, proc.stdout + proc.stderr
    return course / "site"


def test_the_site_holds_no_solution_mark_scheme_or_hidden_value(course, site) -> None:
    source = json.loads((course / "source" / "mini" / "mini.ipynb").read_text())
    secrets = []
    for cell in source["cells"]:
        text = "".join(cell["source"])
        if "### BEGIN SOLUTION" in text:
            secrets.append(text.split("### BEGIN SOLUTION")[1].split("### END SOLUTION")[0])
        if cell["metadata"].get("nbgrader", {}).get("solution") and cell["cell_type"] == "markdown":
            secrets.append(text)  # the written model answer
    secrets.append(RUBRIC)
    store = course / ".interplab" / "mini"
    references = [store / "references.json", *(store / "references").glob("*.json")]  # the build's, each student's
    hidden = [s for path in references for s in _arrays(json.loads(path.read_text())) if len(s) >= 16]
    assert len(secrets) == 4 and hidden
    files = [p for p in site.rglob("*") if p.is_file()]
    texts = {p: " ".join(p.read_text(errors="ignore").split()) for p in files}
    for secret in secrets:
        for line in (" ".join(line.split()) for line in secret.splitlines()):
            if len(line) >= 12:  # `return x`-sized lines also occur in exercise text
                assert not [p for p, t in texts.items() if line in t], line
    assert not [p for p, t in texts.items() for value in hidden if value in t]
    notebook = (site / "notebooks" / "mini.html").read_text()
    assert "Why does" in notebook and "YOUR ANSWER HERE" in notebook  # the released question, rendered
    assert "interplab check work/mini/mini.ipynb" in (site / "assignments" / "mini.html").read_text()


def test_chromium_follows_every_internal_link_of_the_site(site, browser) -> None:
    from urllib.parse import urldefrag

    from selenium.webdriver.common.by import By

    start = (site / "index.html").as_uri()
    seen, todo = set(), [start]
    while todo:
        url = todo.pop()
        if url in seen:
            continue
        seen.add(url)
        browser.get(url)
        assert Path(url.removeprefix("file://")).is_file(), url
        assert browser.title and "404" not in browser.title, (url, browser.title)
        for link in browser.find_elements(By.CSS_SELECTOR, "a[href]"):
            target = urldefrag(link.get_attribute("href") or "")[0]
            if target.startswith("file://") and target not in seen:
                todo.append(target)
    pages = {Path(u.removeprefix("file://")).relative_to(site).as_posix() for u in seen}
    assert {"index.html", "grading.html", "assignments/mini.html", "notebooks/mini.html"} <= pages, pages
    browser.get(start)
    assert "Schedule" in browser.find_element(By.TAG_NAME, "body").text
