"""Parallel grading on the small `mini` assignment: the local pool, a real dask.distributed cluster
on loopback, crash safety (kill -9 then rerun), no leaks between submissions."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import INTERPLAB, edit_solution, interplab, read_csv, read_csv_rows, tool_env

pytestmark = pytest.mark.slow

SOFTMAX = ("def softmax(x):\n    z = np.exp(x - x.max(axis=-1, keepdims=True))\n"
           "    return z / z.sum(axis=-1, keepdims=True)\n")
NORMS = "def row_norms(x):\n    return np.sqrt((x ** 2).sum(axis=1))\n"
# Leaves traces in every place a later submission could look: interpreter globals, builtins,
# environment and the working directory.
LEAKER = SOFTMAX + """
import builtins, os
builtins.LEAKED = True
os.environ["LEAKED"] = "1"
open("leak.txt", "w").write("x")
"""
# Correct only if no trace of another submission is visible.
PROBER = """
import builtins, os
_clean = not hasattr(builtins, "LEAKED") and "LEAKED" not in os.environ and not os.path.exists("leak.txt")
def row_norms(x):
    return np.sqrt((x ** 2).sum(axis=1)) if _clean else np.zeros(x.shape[0], dtype=x.dtype)
"""


@pytest.fixture(scope="module")
def course(mini_course):
    release_nb = mini_course / "release" / "mini" / "mini.ipynb"
    submitted = mini_course / "submitted"
    for i in range(3):
        edit_solution(release_nb, {"impl_softmax": SOFTMAX, "impl_row_norms": NORMS}, submitted / f"good{i}" / "mini" / "mini.ipynb")
    edit_solution(release_nb, {"impl_softmax": SOFTMAX}, submitted / "half" / "mini" / "mini.ipynb")
    edit_solution(release_nb, {"impl_softmax": LEAKER}, submitted / "a_leaker" / "mini" / "mini.ipynb")
    edit_solution(release_nb, {"impl_softmax": SOFTMAX, "impl_row_norms": PROBER}, submitted / "z_prober" / "mini" / "mini.ipynb")
    return mini_course


EXPECTED = {"good0": 3, "good1": 3, "good2": 3, "half": 2, "a_leaker": 2, "z_prober": 3}


def _totals(csv_path: Path) -> dict[str, float]:
    totals: dict[str, float] = {}
    for (student, _), (score, _) in read_csv(csv_path).items():
        totals[student] = totals.get(student, 0) + score
    return totals


def _reset(course: Path) -> None:
    for name in ("autograded", "feedback", "grades"):
        shutil.rmtree(course / name, ignore_errors=True)
    shutil.rmtree(course / ".interplab" / "mini" / "executions", ignore_errors=True)


def test_local_pool_grades_in_parallel_without_leaks(course):
    _reset(course)
    proc = interplab("grade", "mini", "--course", str(course), "--workers", "2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "6 executed" in proc.stdout and "database is locked" not in proc.stderr
    assert _totals(course / "grades" / "mini.csv") == EXPECTED
    assert {status for *_, status in read_csv_rows(course / "grades" / "mini.csv").values()} == {"ok"}
    shutil.copy(course / "grades" / "mini.csv", course / "local.csv")

    # A second run reuses every execution and gives the same grades.
    again = interplab("grade", "mini", "--course", str(course))
    assert "0 executed, 6 reused" in again.stdout
    assert read_csv(course / "grades" / "mini.csv") == read_csv(course / "local.csv")


def test_kill_minus_nine_then_rerun_gives_identical_grades(course):
    _reset(course)
    before = {p: p.read_bytes() for p in (course / "submitted").rglob("*") if p.is_file()}
    executions = course / ".interplab" / "mini" / "executions"
    env = tool_env()
    grader = subprocess.Popen([*INTERPLAB, "grade", "mini", "--course", str(course), "--workers", "1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and len(list(executions.glob("*/*.json"))) < 2:
        time.sleep(0.2)
    os.killpg(grader.pid, signal.SIGKILL)
    grader.wait()
    done = len(list(executions.glob("*/*.json")))
    assert 2 <= done < len(EXPECTED), "the grader should have been killed half-way"

    proc = interplab("grade", "mini", "--course", str(course))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{done} reused" in proc.stdout
    assert read_csv(course / "grades" / "mini.csv") == read_csv(course / "local.csv")
    assert before == {p: p.read_bytes() for p in (course / "submitted").rglob("*") if p.is_file()}


def test_dask_cluster_gives_the_local_grades(course, tmp_path):
    _reset(course)
    env = tool_env()
    scheduler_file = tmp_path / "scheduler.json"
    bindir = Path(sys.executable).parent
    procs = [subprocess.Popen([str(bindir / "dask"), "scheduler", "--host", "127.0.0.1", "--port", "0",
                               "--no-dashboard", "--scheduler-file", str(scheduler_file)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)]
    try:
        deadline = time.monotonic() + 60
        while not scheduler_file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        import json
        address = json.loads(scheduler_file.read_text())["address"]
        assert address.startswith("tcp://127.0.0.1:")
        procs.append(subprocess.Popen([str(bindir / "dask"), "worker", address, "--nworkers", "2", "--nthreads", "1",
                                       "--host", "127.0.0.1", "--no-dashboard", "--local-directory", str(tmp_path)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                                      start_new_session=True))
        proc = interplab("grade", "mini", "--course", str(course), "--executor", "dask", "--scheduler", address)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "6 executed" in proc.stdout
        assert read_csv(course / "grades" / "mini.csv") == read_csv(course / "local.csv")
    finally:
        for p in reversed(procs):
            os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)


def test_dask_without_scheduler_is_a_clear_error(course):
    proc = interplab("grade", "mini", "--course", str(course), "--executor", "dask")
    assert proc.returncode == 2 and "--scheduler" in proc.stderr
