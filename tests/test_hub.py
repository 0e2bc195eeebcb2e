"""The real hub on loopback, with its real proxy (configurable-http-proxy from npm), the real local
spawner, the formgrader service and the nbgrader exchange: `interplab hub` builds the test course
(`mini`), releases it, and these tests log in through the login form as a browser would."""
from __future__ import annotations

import pytest
import requests

from hub_fixtures import assert_all_gone, descendants
from hubtools import api_token, login, spawn, start_hub, stop_hub

pytestmark = pytest.mark.slow
pytest_plugins = ["hub_fixtures"]  # the session's hub (`course_hub`)

# (method, hub API path, status): each needs admin, or scopes no student has. On another user's
# resources JupyterHub answers 404 "No access to resources or resources not found" rather than
# 403, so that a student cannot even learn which user names exist.
ADMIN_ONLY = [
    ("GET", "/hub/api/users", 403),
    ("POST", "/hub/api/users/mallory", 403),
    ("GET", "/hub/api/groups", 403),
    ("POST", "/hub/api/groups/formgrade-interplab/users", 403),
    ("GET", "/hub/api/proxy", 403),
    ("POST", "/hub/api/shutdown", 403),
    ("GET", "/hub/api/services", 403),
    ("GET", "/hub/api/users/bob", 404),
    ("POST", "/hub/api/users/bob/server", 404),
    ("DELETE", "/hub/api/users/bob/server", 404),
    ("DELETE", "/hub/api/users/bob", 403),
    ("POST", "/hub/api/users/bob/tokens", 403),
]


@pytest.fixture(scope="module")
def hub(course_hub):
    return course_hub


def token_of(hub, name: str) -> str:
    cache = hub.__dict__.setdefault("_tokens", {})
    if name not in cache:
        cache[name] = api_token(hub, login(hub, name), name)
    return cache[name]


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"token {token}"}


def test_hub_builds_releases_and_prints_the_demo_accounts(hub):
    log = hub.log()
    assert "no assignment built" in log and "released mini to the exchange" in log
    assert (hub.course / "release" / "mini" / "mini.ipynb").is_file()
    assert (hub.exchange / "interplab" / "outbound" / "mini" / "mini.ipynb").is_file()
    assert set(hub.accounts) == {"instructor", "alice", "bob", "carol"}
    for name, password in hub.accounts.items():
        assert f"{name}" in log and password in log
    assert f"{hub.url}/services/formgrader-interplab/formgrader" in log


def test_wrong_password_is_refused(hub):
    with pytest.raises(RuntimeError, match="login of alice failed"):
        login(hub, "alice", "not-the-password")


def test_student_spawns_and_lists_the_released_assignment(hub):
    session = login(hub, "alice")
    token = api_token(hub, session, "alice")
    hub.__dict__.setdefault("_tokens", {})["alice"] = token
    seconds = spawn(hub, token, "alice")
    print(f"spawn took {seconds:.1f} s")  # measured, not asserted: shared machines are noisy
    # the server answers through the proxy, with the hub's cookie (OAuth) as a browser would
    lab = session.get(f"{hub.url}/user/alice/lab", timeout=60)
    assert lab.status_code == 200 and "JupyterLab" in lab.text
    r = requests.get(f"{hub.url}/user/alice/assignments", params={"course_id": "interplab"}, headers=auth(token), timeout=60)
    assert r.status_code == 200, r.text
    listing = r.json()
    assert listing["success"], listing
    assert [(a["assignment_id"], a["status"]) for a in listing["value"]] == [("mini", "released")]
    # students get the Assignments panel, not the instructors' extensions
    assert requests.get(f"{hub.url}/user/alice/formgrader", headers=auth(token), timeout=30).status_code == 404


def test_students_are_kept_out_of_others_servers_the_formgrader_and_admin_apis(hub):
    alice = token_of(hub, "alice")
    bob = token_of(hub, "bob")
    spawn(hub, bob, "bob")
    assert requests.get(f"{hub.url}/user/bob/api/contents", headers=auth(bob), timeout=30).status_code == 200
    # bob's running server, with alice's token and with alice's browser cookie
    assert requests.get(f"{hub.url}/user/bob/api/contents", headers=auth(alice), timeout=30).status_code == 403
    browser = login(hub, "alice")
    assert browser.get(f"{hub.url}/user/bob/lab", timeout=60).status_code == 403
    # the formgrader service
    assert requests.get(f"{hub.formgrader}/formgrader", headers=auth(alice), timeout=30).status_code == 403
    assert browser.get(f"{hub.formgrader}/formgrader", timeout=60).status_code == 403
    assert requests.get(f"{hub.formgrader}/formgrader/api/assignments", headers=auth(alice), timeout=30).status_code == 403
    # the hub's admin APIs and admin page
    answers = {}
    for method, path, _ in ADMIN_ONLY:
        r = requests.request(method, hub.url + path, headers=auth(alice), json={}, timeout=30)
        answers[(method, path)] = (r.status_code, r.json().get("message", ""))
    assert {k: v[0] for k, v in answers.items()} == {(m, p): code for m, p, code in ADMIN_ONLY}, answers
    assert browser.get(f"{hub.url}/hub/admin", timeout=30).status_code == 403
    # and bob's server is still running, untouched
    assert requests.get(f"{hub.url}/hub/api/users/bob", headers=auth(bob), timeout=30).json()["servers"][""]["ready"]


def test_instructor_reaches_the_formgrader_as_a_top_level_page(hub):
    browser = login(hub, "instructor")
    page = browser.get(f"{hub.formgrader}/formgrader", timeout=60)
    assert page.status_code == 200 and page.url.endswith("/formgrader/manage_assignments")
    assert "nbgrader formgrade" in page.text
    # JupyterHub's frame-ancestors 'none' stays: the formgrader is opened as a page, never framed
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    api = browser.get(f"{hub.formgrader}/formgrader/api/assignments", timeout=60)
    assert api.status_code == 200
    assert [a["name"] for a in api.json()] == ["mini"]
    # the hub's Services menu links to it for instructors
    home = browser.get(f"{hub.url}/hub/home", timeout=30)
    assert "/services/formgrader-interplab" in home.text


def test_fetch_submit_and_collect_keep_students_apart(hub):
    for name in ("alice", "bob"):
        token = token_of(hub, name)
        spawn(hub, token, name)
        for action in ("fetch", "submit"):
            r = requests.post(f"{hub.url}/user/{name}/assignments/{action}", headers=auth(token),
                              data={"course_id": "interplab", "assignment_id": "mini"}, timeout=120)
            assert r.status_code == 200 and r.json()["success"], r.text[:2000]
    # one Unix user for all servers, yet each submission under the student's own name
    inbound = {p.name.split("+")[0] for p in (hub.exchange / "interplab" / "inbound").iterdir()}
    assert {"alice", "bob"} <= inbound <= {"alice", "bob", "carol"}
    listing = requests.get(f"{hub.url}/user/bob/assignments", params={"course_id": "interplab"},
                           headers=auth(token_of(hub, "bob")), timeout=60).json()["value"]
    assert {a["status"] for a in listing} == {"fetched", "submitted"}
    assert all(a["student_id"] == "bob" for a in listing if a["status"] == "submitted")
    # the instructor collects from the formgrader
    browser = login(hub, "instructor")
    assert browser.get(f"{hub.formgrader}/formgrader", timeout=60).status_code == 200
    xsrf = browser.cookies.get("_xsrf", path="/services/formgrader-interplab/")  # the service's own
    r = browser.post(f"{hub.formgrader}/formgrader/api/assignment/mini/collect", headers={"X-XSRFToken": xsrf}, timeout=120)
    assert r.status_code == 200 and r.json()["success"], r.text[:2000]
    for name in ("alice", "bob"):
        assert (hub.course / "submitted" / name / "mini" / "mini.ipynb").is_file()


def test_restart_keeps_users_releases_and_submissions(hub):
    accounts = dict(hub.accounts)
    procs = descendants(hub.proc.pid)
    assert stop_hub(hub, keep_demo_account=True) == 0
    assert_all_gone(procs)  # every student's server, the services and the proxy stopped with it
    assert "stopped (exit 0)" in hub.log()
    again = start_hub(hub.course, hub.data, timeout=180, extra_env=hub.extra_env)
    hub.__dict__.update(proc=again.proc, url=again.url, env=again.env, log_path=again.log_path, _tokens={})
    assert again.accounts == accounts
    assert "released mini" not in again.log()  # already in the exchange, not re-released
    token = token_of(hub, "alice")  # same password still works
    model = requests.get(f"{hub.url}/hub/api/users/alice", headers=auth(token), timeout=30).json()
    assert model["name"] == "alice" and "nbgrader-interplab" in model["groups"]
    # released assignments and submissions are still in the exchange, fetched work in alice's home
    assert (hub.exchange / "interplab" / "outbound" / "mini" / "mini.ipynb").is_file()
    assert {p.name.split("+")[0] for p in (hub.exchange / "interplab" / "inbound").iterdir()} >= {"alice", "bob"}
    assert (hub.home("alice") / "mini" / "mini.ipynb").is_file()
    assert (hub.course / "submitted" / "alice" / "mini" / "mini.ipynb").is_file()
