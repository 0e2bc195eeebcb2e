"""The gradebook and the hub's database on a real PostgreSQL server (Debian's package, started on a
unix socket by ``cluster_services.py``): parallel `interplab grade`, `nbgrader export`, a grader
killed with SIGKILL half-way then run again, and the formgrader behind the hub, all on PostgreSQL."""
from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from cluster_services import (
    MINI_TOTALS as TOTALS,
)
from cluster_services import (
    PostgresServer,
    mini_submissions,
    start_postgres,
    stop_postgres,
    totals,
    without_fork_server,
)

from conftest import INTERPLAB, TEST_ASSIGNMENTS, interplab, make_course, read_csv_rows, tool_env
from hubtools import login, start_hub, stop_hub

pytestmark = pytest.mark.slow

@pytest.fixture(scope="module")
def postgres() -> PostgresServer:
    server = start_postgres()
    yield server
    stop_postgres(server)


@pytest.fixture(scope="module")
def course(postgres, tmp_path_factory) -> Path:
    """The `mini` course with its gradebook on PostgreSQL (stock nbgrader: ``CourseDirectory.db_url``
    in the course's nbgrader_config.py), built there, with three submissions, graded once with two
    workers; the CSV of that run is kept as ``first.csv``."""
    course = make_course(tmp_path_factory.mktemp("pg"), TEST_ASSIGNMENTS)
    url = postgres.url(postgres.create_database("gradebook"))
    with (course / "nbgrader_config.py").open("a") as config:
        config.write(f"\nc.CourseDirectory.db_url = {url!r}\n")
    without_fork_server(course)
    interplab("build", "--course", str(course), "mini", check=True)
    mini_submissions(course)
    proc = interplab("grade", "mini", "--course", str(course), "--workers", "2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    shutil.copy(course / "grades" / "mini.csv", course / "first.csv")
    return course


def test_parallel_grading_writes_the_gradebook_on_postgres(postgres, course):
    rows = read_csv_rows(course / "first.csv")
    assert totals(rows) == TOTALS and {status for *_, status in rows.values()} == {"ok"}
    assert not (course / "gradebook.db").exists()  # no SQLite file beside it: the gradebook is the server's
    # nbgrader's own tables in the server's database, holding every student's autograded score
    scores = postgres.psql(
        "SELECT s.student_id, sum(g.auto_score) FROM grade g JOIN submitted_notebook n ON g.notebook_id = n.id "
        "JOIN submitted_assignment s ON n.assignment_id = s.id GROUP BY s.student_id ORDER BY s.student_id",
        database="gradebook")
    assert {k: float(v) for k, v in (line.split("|") for line in scores.splitlines())} == TOTALS, scores
    # stock `nbgrader export` reads it
    proc = subprocess.run(["nbgrader", "export", "--to", "export.csv"], cwd=course, env=tool_env(), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with (course / "export.csv").open(newline="") as handle:
        exported = {row["student_id"]: float(row["score"]) for row in csv.DictReader(handle) if row["assignment"] == "mini"}
    assert exported == TOTALS


def test_a_grader_killed_half_way_then_rerun_gives_identical_grades(postgres, course):
    for name in ("autograded", "feedback", "grades"):
        shutil.rmtree(course / name, ignore_errors=True)
    executions = course / ".interplab" / "mini" / "executions"
    shutil.rmtree(executions, ignore_errors=True)
    grader = subprocess.Popen([*INTERPLAB, "grade", "mini", "--course", str(course), "--workers", "1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=tool_env(), start_new_session=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not list(executions.glob("*/*.json")) and grader.poll() is None:
        time.sleep(0.2)
    os.killpg(grader.pid, signal.SIGKILL)
    grader.wait()
    done = len(list(executions.glob("*/*.json")))
    assert 1 <= done < len(TOTALS), "the grader should have been killed half-way"
    # no session of the dead grader's is left holding the gradebook inside a transaction
    # (PostgreSQL rolls it back when the connection drops)
    assert postgres.psql("SELECT count(*) FROM pg_stat_activity WHERE datname = 'gradebook' "
                         "AND state LIKE 'idle in transaction%'") == "0"
    proc = interplab("grade", "mini", "--course", str(course))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{done} reused" in proc.stdout
    assert read_csv_rows(course / "grades" / "mini.csv") == read_csv_rows(course / "first.csv")


def test_the_hub_and_its_formgrader_run_on_postgres(postgres, course, tmp_path):
    """The hub's own database on the server too; the instructor sees the gradebook's scores in the
    formgrader, reached through the hub."""
    hub_db = postgres.create_database("jupyterhub")
    hub = start_hub(course, tmp_path / "data", students=tuple(TOTALS), timeout=300,
                    extra_env={"INTERPLAB_HUB_DB_URL": postgres.url(hub_db)})
    try:
        assert not list((tmp_path / "data").glob("*.sqlite"))
        users = postgres.psql("SELECT name FROM users ORDER BY name", database=hub_db).splitlines()
        assert set(users) == {"instructor", *TOTALS}
        browser = login(hub, "instructor")
        r = browser.get(f"{hub.formgrader}/formgrader/api/submissions/mini", timeout=120)
        assert r.status_code == 200, r.text[:500]
        assert {s["student"]: s["score"] for s in r.json()} == TOTALS
    finally:
        stop_hub(hub)
