"""The student's first page: the course page's content from the masters and course.toml (this week's
assignment, the schedule with each student's own due dates, grading and feedback), nbgrader's
Assignment List in course order (its real manager over a real exchange folder), and, in headless
Chromium on the session's hub, a student who logs in and lands on the course page."""
from __future__ import annotations

import datetime as dt
import json

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

from interplab.autograder.assignment_order import ORDER_ENV, CourseOrderAssignmentList
from interplab.autograder.course import Course
from interplab.autograder.deadlines import EXTENSIONS_FILE, Schedule
from interplab.autograder.landing import PAGE_NAME, course_page

from conftest import REPO, make_course

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
    monkeypatch.setenv(ORDER_ENV, "circuits,discovery,attribution")
    manager = CourseOrderAssignmentList()
    manager.root_dir = str(home)
    answer = manager.list_released_assignments(course_id="interplab")
    assert answer["success"], answer
    assert [a["assignment_id"] for a in answer["value"]] == ["circuits", "attribution", "zzz-extra"]


@pytest.mark.slow
def test_a_student_logs_in_and_lands_on_the_course_page(course_hub, browser, tmp_path) -> None:
    hub, d = course_hub, browser
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
        assert "mini" in text  # the hub's one assignment, as the course knows it
        tab = d.find_element(By.XPATH, f"//li[contains(@class,'lm-TabBar-tab')][contains(., '{PAGE_NAME}')]")
        assert "lm-mod-current" in tab.get_attribute("class")  # open in front, rendered
    except Exception:
        d.save_screenshot(str(tmp_path / "failure.png"))
        print("screenshot:", tmp_path / "failure.png")
        raise
    assert "## Schedule" in (hub.home(student) / PAGE_NAME).read_text()  # written by the hub at spawn
