"""The student's first page: the course page's content from the masters and course.toml (this week's
assignment, the schedule with each student's own due dates, grading and feedback), what the hub
passes in the server's environment and what the server extension makes of it (a real Jupyter
server writing COURSE.md), nbgrader's Assignment List in course order (its real manager over a real
exchange folder), and, in headless Chromium on the session's hub, a student who logs in, lands on
the course page and sees each assignment's week and their own due date in the Assignment List."""
from __future__ import annotations

import datetime as dt
import json
import re
import shutil

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait
from tornado.httputil import HTTPHeaders, HTTPServerRequest, RequestStartLine

from interplab.autograder.course import Course
from interplab.autograder.deadlines import EXTENSIONS_FILE, Schedule
from interplab.autograder.landing import course_page, student_course
from interplab.autograder.student_course import (
    COURSE_ENV,
    PAGE_NAME,
    SETTINGS_KEY,
    CourseOrderAssignmentList,
    ScheduleHandler,
)
from interplab.autograder.syllabus import when

from conftest import REPO, make_course
from hubtools import api_token, login, stop_server

pytest_plugins = ["hub_fixtures"]  # the session's hub, chromium, browser


@pytest.fixture(scope="module")
def course(tmp_path_factory) -> Course:
    root = make_course(tmp_path_factory.mktemp("landing"))
    second = Schedule.of(Course.load(root)).items[1]  # an extension of week 2 for alice, two days long
    until = (second.due + dt.timedelta(days=2)).replace(hour=23, minute=59)
    (root / EXTENSIONS_FILE).write_text(json.dumps({second.assignment: {"alice": until.isoformat()}}))
    return Course.load(root)


def test_the_course_page_shows_this_week_the_schedule_and_how_grading_works(course) -> None:
    schedule = Schedule.of(course)
    first, second = schedule.items[:2]
    now = (first.due + dt.timedelta(hours=1)).astimezone(dt.timezone.utc)  # week 1 is over
    page = course_page(course, "alice", now, released={first.assignment, second.assignment})
    assert f"## This week: week {second.week}, `{second.assignment}`" in page
    rows = [line for line in page.splitlines() if line.startswith("| ") and "`" in line]
    assert [row.split("`")[1] for row in rows] == schedule.order(course.known_assignments())  # course order
    extended = f"{(second.due + dt.timedelta(days=2)):%a %d %b %Y}, 23:59"
    assert extended in rows[1]  # alice's extension of week 2 ...
    assert extended not in course_page(course, "bob", now)  # ... is hers alone
    assert "(not released yet)" in rows[2] and "(not released yet)" not in rows[0]
    objectives = (REPO / "assignments" / second.assignment / f"{second.assignment}.py").read_text()
    assert page.split("After it you will be able to:")[1].split("\n\n")[1].splitlines()[0][2:] in objectives
    for heading in ("## How checks and grading work", "## Where feedback appears", "Fetch Feedback"):
        assert heading in page
    assert "10 % of the score per started day late" in page
    late = course_page(course, None, dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc))
    assert "## The schedule is over" in late and "This week" not in late


def test_the_schedule_may_name_assignments_this_course_does_not_have(tmp_path) -> None:
    """The hub's test course holds only `mini`, while course.toml schedules the real assignments."""
    from conftest import TEST_ASSIGNMENTS

    mini = Course.load(make_course(tmp_path, TEST_ASSIGNMENTS))
    page = course_page(mini, "bob", dt.datetime(2027, 1, 1, tzinfo=dt.timezone.utc))
    assert "This week" not in page and "| self-study | `mini`" in page


def test_the_hub_passes_the_page_and_each_students_due_dates_in_one_ascii_line(course) -> None:
    schedule = Schedule.of(course)
    second = schedule.items[1]
    now = dt.datetime(2027, 1, 1, tzinfo=dt.timezone.utc)
    alice, bob = (student_course(course, name, now) for name in ("alice", "bob"))
    assert alice["page"] == course_page(course, "alice", now)
    assert [a["assignment"] for a in alice["assignments"]] == schedule.order(course.known_assignments())
    assert [a["week"] for a in alice["assignments"][:len(schedule.items)]] == [d.week for d in schedule.items]
    mine, theirs = (next(a for a in data["assignments"] if a["assignment"] == second.assignment) for data in (alice, bob))
    until = (second.due + dt.timedelta(days=2)).replace(hour=23, minute=59)  # the fixture's extension
    assert mine["due"] == when(until.astimezone(schedule.timezone))  # alice's extension ...
    assert theirs["due"] == when(second.due.astimezone(schedule.timezone))  # ... is hers alone
    # the environment value: one line of ASCII (any locale, sbatch --export, a pod manifest), and
    # for the eleven-week course far below Linux's 128 KiB for one variable (MAX_ARG_STRLEN)
    value = json.dumps(alice, ensure_ascii=True, separators=(",", ":"))
    assert value.isascii() and "\n" not in value and json.loads(value) == alice
    print(f"{COURSE_ENV}: {len(value)} bytes for {len(alice['assignments'])} assignments")
    assert len(schedule.items) >= 11 and len(value) < 16 * 1024


def test_the_server_extension_writes_the_page_and_orders_the_list(course, tmp_path, monkeypatch) -> None:
    """A real Jupyter server started with our extension (and nbgrader's, which it wraps)."""
    from jupyter_server.serverapp import ServerApp

    data = student_course(course, "alice", dt.datetime(2027, 1, 1, tzinfo=dt.timezone.utc))
    root = tmp_path / "home"
    root.mkdir()
    (root / PAGE_NAME).write_text("last start's page")
    monkeypatch.setenv(COURSE_ENV, json.dumps(data, ensure_ascii=True))
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    extension = {"interplab.autograder.student_course": True}
    app = ServerApp(jpserver_extensions=extension, root_dir=str(root), open_browser=False, port_retries=50)
    app.initialize(argv=[], find_extensions=False, new_httpserver=False)
    assert (root / PAGE_NAME).read_text(encoding="utf-8") == data["page"]  # replaced, whole
    assert not list(root.glob(".*partial"))
    settings = app.web_app.settings
    assert settings[SETTINGS_KEY] == data["assignments"]
    assert settings["assignment_list_manager"].order == [a["assignment"] for a in data["assignments"]]
    request = HTTPServerRequest(start_line=RequestStartLine("GET", f"{app.base_url}interplab/course-schedule", "HTTP/1.1"),
                                 headers=HTTPHeaders(Host="127.0.0.1"))
    assert app.web_app.find_handler(request).handler_class is ScheduleHandler  # the dates, for our lab extension

    # a malformed value: the server still starts, says why in one line, and leaves the old page
    (root / PAGE_NAME).write_text("kept")
    monkeypatch.setenv(COURSE_ENV, "{not json")
    ServerApp.clear_instance()
    broken = ServerApp(jpserver_extensions=extension, root_dir=str(root), open_browser=False, port_retries=50)
    broken.initialize(argv=[], find_extensions=False, new_httpserver=False)
    assert (root / PAGE_NAME).read_text() == "kept" and broken.web_app.settings[SETTINGS_KEY] == []
    ServerApp.clear_instance()


def test_the_assignment_list_is_in_course_order(tmp_path, monkeypatch) -> None:
    outbound = tmp_path / "exchange" / "interplab" / "outbound"
    for slug in ("attribution", "circuits", "zzz-extra"):
        (outbound / slug).mkdir(parents=True)
        (outbound / slug / f"{slug}.ipynb").write_text("{}")
    home = tmp_path / "home"
    home.mkdir()
    (home / "nbgrader_config.py").write_text(
        f"c = get_config()\nc.Exchange.root = {str(tmp_path / 'exchange')!r}\nc.CourseDirectory.course_id = 'interplab'\n")
    monkeypatch.chdir(home)
    manager = CourseOrderAssignmentList()
    manager.root_dir = str(home)
    manager.order = ["circuits", "discovery", "attribution"]
    answer = manager.list_released_assignments(course_id="interplab")
    assert answer["success"], answer
    assert [a["assignment_id"] for a in answer["value"]] == ["circuits", "attribution", "zzz-extra"]


@pytest.fixture
def two_scheduled_assignments(course_hub, tmp_path):
    """The session hub's course, for this test only, with three released assignments whose course
    order is not nbgrader's alphabetical one: `mini` in week 1 (another test may have fetched and
    submitted it already), `circuits` in week 2 and `attribution` in week 7 (real masters beside the
    test one, their releases placeholder notebooks in the exchange), all due far ahead (no test's
    submission is late), and an extension of bob's for `mini`. bob's server, if an
    earlier test started it, is stopped: the hub passes the page at each start. All restored after."""
    hub = course_hub
    toml, extensions = hub.course / "course.toml", hub.course / EXTENSIONS_FILE
    saved = toml.read_text(), extensions.read_text() if extensions.exists() else None
    masters = tmp_path / "assignments"
    masters.mkdir()
    (masters / "mini").symlink_to(Course.load(hub.course).assignments_dir / "mini")
    placeholders = []
    for slug in ("circuits", "attribution"):
        (masters / slug).symlink_to(REPO / "assignments" / slug)
        released = hub.exchange / "interplab" / "outbound" / slug
        released.mkdir()
        (released / f"{slug}.ipynb").write_text(json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
        placeholders.append(released)
    text = re.sub(r'(?m)^assignments_dir = .*$', f"assignments_dir = {str(masters)!r}", saved[0])
    schedule = text.index("\n", text.index("[schedule]"))
    text = text[:schedule] + "\nmini = { week = 1, due = 2099-06-01T09:00:00 }\ncircuits = { week = 2, due = 2099-06-22T09:00:00 }" \
        "\nattribution = { week = 7, due = 2099-07-13T09:00:00 }" + text[schedule:]
    text = re.sub(r"(?m)^(circuits|attribution) = \{ week = \d+, due = 2027.*\n", "", text)  # the course's own entries
    toml.write_text(text)
    zone = Schedule.of(Course.load(hub.course)).timezone
    until = dt.datetime(2099, 6, 4, 23, 59, tzinfo=zone)
    extensions.write_text(json.dumps({"mini": {"bob": until.isoformat()}}))
    stop_server(hub, api_token(hub, login(hub, "bob"), "bob"), "bob")
    try:
        yield {"mini": f"week 1, due {when(until)}",
               "circuits": f"week 2, due {when(dt.datetime(2099, 6, 22, 9, tzinfo=zone))}",
               "attribution": f"week 7, due {when(dt.datetime(2099, 7, 13, 9, tzinfo=zone))}"}
    finally:
        toml.write_text(saved[0])
        for released in placeholders:
            shutil.rmtree(released)
        if saved[1] is None:
            extensions.unlink()
        else:
            extensions.write_text(saved[1])


@pytest.mark.slow
def test_a_student_logs_in_lands_on_the_course_page_and_sees_due_dates_in_the_assignment_list(
        course_hub, two_scheduled_assignments, browser, tmp_path) -> None:
    hub, d, expected = course_hub, browser, two_scheduled_assignments
    student = "bob"
    try:
        d.get(f"{hub.url}/hub/login")
        wait = WebDriverWait(d, 180, poll_frequency=0.3)
        wait.until(EC.presence_of_element_located((By.ID, "username_input"))).send_keys(student)
        d.find_element(By.ID, "password_input").send_keys(hub.accounts[student])
        d.find_element(By.ID, "login_submit").click()
        wait.until(lambda drv: f"/user/{student}/lab" in drv.current_url)
        rendered = wait.until(EC.visibility_of_element_located(
            (By.XPATH, "//div[contains(@class,'jp-RenderedMarkdown')][.//h2[contains(., 'Schedule')]]")))
        text = rendered.text
        assert f"Welcome to interplab, {student}" in text
        for heading in ("Schedule", "How checks and grading work", "Where feedback appears"):
            assert heading in text
        assert "This week: week 1, mini" in text and expected["mini"].split("due ")[1] in text  # his own due date
        tab = d.find_element(By.XPATH, f"//li[contains(@class,'lm-TabBar-tab')][contains(., '{PAGE_NAME}')]")
        assert "lm-mod-current" in tab.get_attribute("class")  # open in front, rendered

        # nbgrader's Assignment List, from the menu bar, each row annotated by our lab extension
        wait.until(EC.element_to_be_clickable(
            (By.XPATH, "//li[contains(@class,'lm-MenuBar-item')][.//div[text()='Nbgrader']]"))).click()
        wait.until(EC.element_to_be_clickable(
            (By.XPATH, "//li[contains(@class,'lm-Menu-item')][.//div[text()='Assignment List']]"))).click()
        lists = ("released", "fetched", "submitted")
        every_row = ", ".join(f"#{name}_assignments_list > .list_item > .col-md-12 > .item_name" for name in lists)
        wait.until(lambda drv: (rows := drv.find_elements(By.CSS_SELECTOR, every_row))
                   and len(drv.find_elements(By.CSS_SELECTOR, ".interplab-due")) == len(rows)
                   and any(r.text.startswith("attribution") for r in rows))
        rows = [row.text for row in d.find_elements(By.CSS_SELECTOR, every_row)]
        # every row with its week and bob's own due date (mini: released, or fetched and submitted earlier)
        assert all(row == f"{row.split()[0]} ({expected[row.split()[0]]})" for row in rows), rows
        assert any(row.startswith("mini ") for row in rows), rows
        # released ones in course order (nbgrader's own is by name: attribution before circuits)
        released = [row.text.split()[0] for row in d.find_elements(By.CSS_SELECTOR, f"#{lists[0]}_assignments_list .item_name")]
        assert [slug for slug in released if slug != "mini"] == ["circuits", "attribution"], released
    except Exception:
        d.save_screenshot(str(tmp_path / "failure.png"))
        print("screenshot:", tmp_path / "failure.png")
        raise
    assert "## Schedule" in (hub.home(student) / PAGE_NAME).read_text()  # written by bob's server
