"""A student's whole path in a real browser (headless Chromium from Debian, driven by Selenium):
log in on the hub, JupyterLab opens, fetch the assignment in the Assignments panel, write a
solution, run the cells (the self-check passes in the student's own kernel), submit; then the
instructor collects from the formgrader and `interplab grade` grades that submission."""
from __future__ import annotations

import os
import pwd
import re
import subprocess
import sys
import time

import pytest
import requests
from selenium.common.exceptions import (
    ElementClickInterceptedException,
    ElementNotInteractableException,
    NoSuchElementException,
    StaleElementReferenceException,
)
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

from conftest import read_csv
from hubtools import Kernel, api_token, login

pytestmark = pytest.mark.slow
pytest_plugins = ["hub_fixtures"]  # the session's hub, chromium, browser

STUDENT = "carol"
ROW_NORMS = "def row_norms(x): return np.sqrt((x ** 2).sum(axis=1))"


def wait(driver, seconds: float = 60) -> WebDriverWait:
    return WebDriverWait(driver, seconds, poll_frequency=0.2)


def click(driver, xpath: str, seconds: float = 60) -> None:
    """Click the element once it is there and nothing (a toast, a closing menu) covers it."""

    def clicked(drv) -> bool:
        drv.find_element(By.XPATH, xpath).click()
        return True

    WebDriverWait(driver, seconds, poll_frequency=0.3, ignored_exceptions=(
        NoSuchElementException, ElementClickInterceptedException, ElementNotInteractableException,
        StaleElementReferenceException)).until(clicked)


def cell(driver, grade_id_text: str):
    """The notebook cell whose editor shows ``grade_id_text``."""
    xpath = f"//div[contains(@class,'jp-Notebook')]//div[contains(@class,'jp-CodeCell')][.//div[contains(@class,'cm-content')][contains(., {grade_id_text!r})]]"
    return wait(driver).until(EC.presence_of_element_located((By.XPATH, xpath)))


def executed(element) -> bool:
    return bool(re.fullmatch(r"\[\d+\]:", element.find_element(By.CSS_SELECTOR, ".jp-InputPrompt").text.strip()))


def run_cell(driver, text: str, edit_to: str | None = None) -> None:
    """Put the cursor in the cell showing ``text`` (replacing its source with ``edit_to``), press
    Shift+Enter as a student does, and wait until the kernel has run it."""
    editor = cell(driver, text).find_element(By.CSS_SELECTOR, ".cm-content")
    editor.click()
    if edit_to is not None:
        ActionChains(driver).key_down(Keys.CONTROL).send_keys("a").key_up(Keys.CONTROL).send_keys(edit_to).perform()
        wait(driver).until(lambda drv: edit_to in cell(drv, edit_to).text)
        text = edit_to
    ActionChains(driver).key_down(Keys.SHIFT).send_keys(Keys.ENTER).key_up(Keys.SHIFT).perform()
    wait(driver, 120).until(lambda drv: executed(cell(drv, text)))


def server_uid(hub, token: str) -> int:
    """The uid the student's notebook kernel (the one the browser opened) reports."""
    kernels = requests.get(f"{hub.url}/user/{STUDENT}/api/kernels", headers={"Authorization": f"token {token}"},
                           timeout=60).json()
    assert len(kernels) == 1, kernels
    kernel = Kernel(hub, token, STUDENT, kernels[0]["id"])
    try:
        return int(kernel.run("import os; print(os.getuid())").strip())
    finally:
        kernel.close()


def test_student_fetches_runs_and_submits_in_jupyterlab_then_is_graded(course_hub, browser, tmp_path):
    hub, d = course_hub, browser
    try:
        # log in; the hub spawns the server and JupyterLab opens
        d.get(f"{hub.url}/hub/login")
        wait(d).until(EC.presence_of_element_located((By.ID, "username_input"))).send_keys(STUDENT)
        d.find_element(By.ID, "password_input").send_keys(hub.accounts[STUDENT])
        d.find_element(By.ID, "login_submit").click()
        wait(d, 180).until(lambda drv: f"/user/{STUDENT}/lab" in drv.current_url)
        wait(d, 120).until(EC.presence_of_element_located((By.CSS_SELECTOR, "#jp-main-dock-panel")))
        # it opens on the course page (test_landing.py); once that is shown, nothing else takes the front
        wait(d, 120).until(EC.visibility_of_element_located((By.XPATH, "//div[contains(@class,'jp-RenderedMarkdown')]//h2")))

        # Nbgrader > Assignment List; fetch the released assignment
        click(d, "//li[contains(@class,'lm-MenuBar-item')][normalize-space()='Nbgrader']", 120)
        click(d, "//li[contains(@class,'lm-Menu-item')][@data-command='nbgrader:open-assignment-list']")
        click(d, "//div[@id='released_assignments_list']//div[contains(@class,'list_item')][.//span[text()='mini']]//button[normalize-space()='Fetch']", 120)
        click(d, "//div[@id='fetched_assignments_list']//a[contains(@class,'assignment-notebooks-link')][contains(., 'mini')]", 60)
        click(d, "//div[@id='nbgrader-interplab-mini']//div[contains(@class,'nested_list_item')]//a[normalize-space()='mini']")

        # the notebook opens with a kernel; write row_norms and run setup, solution and its check
        wait(d, 120).until(EC.presence_of_element_located(
            (By.XPATH, "//div[contains(@class,'jp-NotebookPanel')][not(contains(@class,'lm-mod-hidden'))]//div[contains(@class,'jp-CodeCell')]")))
        wait(d, 120).until(EC.presence_of_element_located(
            (By.XPATH, "//div[contains(@class,'jp-StatusBar')]//*[contains(normalize-space(), '| Idle')]")))
        token = api_token(hub, login(hub, STUDENT), STUDENT)
        uid = server_uid(hub, token)
        # never root: the demo account's when the hub is root (jupyterhub_config.py), else the hub's user
        expected = pwd.getpwnam(hub.env["INTERPLAB_DEMO_ACCOUNT"]).pw_uid if os.geteuid() == 0 else os.geteuid()
        assert uid == expected and uid != 0, (uid, expected)
        run_cell(d, "from interplab import check")
        run_cell(d, "def row_norms", edit_to=ROW_NORMS)
        run_cell(d, 'check("mini.row_norms"')
        output = wait(d, 120).until(lambda drv: [o.text for o in cell(drv, 'check("mini.row_norms"').find_elements(
            By.CSS_SELECTOR, ".jp-OutputArea-output") if o.text.strip()])
        assert "mini.row_norms passed" in " ".join(output), output
        ActionChains(d).key_down(Keys.CONTROL).send_keys("s").key_up(Keys.CONTROL).perform()
        notebook = hub.home(STUDENT) / "mini" / "mini.ipynb"
        deadline = time.monotonic() + 60
        while "np.sqrt" not in notebook.read_text() and time.monotonic() < deadline:
            time.sleep(0.3)
        assert "np.sqrt" in notebook.read_text(), "the notebook was not saved"
        assert notebook.stat().st_uid == uid  # saved by the server's own user

        # back to the Assignments panel: submit
        click(d, "//li[contains(@class,'lm-TabBar-tab')][@data-id='nbgrader-assignment-list']")
        click(d, "//div[@id='fetched_assignments_list']//div[contains(@class,'list_item')][.//a[contains(., 'mini')]]//button[normalize-space()='Submit']")
        wait(d, 120).until(EC.presence_of_element_located(
            (By.XPATH, "//div[@id='submitted_assignments_list']//div[contains(@class,'list_item')][contains(., 'mini')]")))
    except Exception:
        d.save_screenshot(str(tmp_path / "failure.png"))
        print("screenshot:", tmp_path / "failure.png")
        raise
    submissions = list((hub.exchange / "interplab" / "inbound").glob(f"{STUDENT}+mini+*"))
    assert len(submissions) == 1

    # the instructor collects from the formgrader service, then grades with interplab
    instructor = login(hub, "instructor")
    assert instructor.get(f"{hub.formgrader}/formgrader", timeout=60).status_code == 200
    xsrf = instructor.cookies.get("_xsrf", path="/services/formgrader-interplab/")
    r = instructor.post(f"{hub.formgrader}/formgrader/api/assignment/mini/collect",
                        headers={"X-XSRFToken": xsrf}, timeout=120)
    assert r.status_code == 200 and r.json()["success"], r.text[:2000]
    graded = subprocess.run([sys.executable, "-m", "interplab.cli", "grade", "mini", "--course", str(hub.course)],
                            capture_output=True, text=True, timeout=600)
    assert graded.returncode == 0, graded.stdout[-3000:] + graded.stderr[-3000:]
    grades = read_csv(hub.course / "grades" / "mini.csv")
    assert grades[(STUDENT, "test_row_norms")] == (1.0, 1.0)  # written in the browser
    assert grades[(STUDENT, "test_softmax")] == (0.0, 2.0)  # left as released

    # the instructor releases the feedback; the student's server fetches it (Assignment List's Fetch Feedback)
    r = instructor.post(f"{hub.formgrader}/formgrader/api/assignment/mini/release_feedback",
                        headers={"X-XSRFToken": xsrf}, timeout=120)
    assert r.status_code == 200 and r.json()["success"], r.text[:2000]
    r = requests.post(f"{hub.url}/user/{STUDENT}/assignments/fetch_feedback", headers={"Authorization": f"token {token}"},
                      data={"course_id": "interplab", "assignment_id": "mini"}, timeout=120)
    assert r.status_code == 200 and r.json()["success"], r.text[:2000]
    feedback = list((hub.home(STUDENT) / "mini" / "feedback").glob("*/mini.html"))
    assert len(feedback) == 1 and feedback[0].stat().st_uid == uid, feedback
    assert requests.get(f"{hub.url}/hub/api/", timeout=30).status_code == 200
