"""A real SLURM cluster on this machine (Debian's slurm-wlm and munge; ``cluster_services.py``): the
hub's SLURM mode starts a student's server as a SLURM job, run as the student's own Unix user and
reached through the hub; ``interplab grade`` runs its kernels on SLURM jobs through dask-jobqueue
and gives exactly the local executor's grades."""
from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import pytest
import requests
from cluster_services import (
    MINI_TOTALS,
    SlurmCluster,
    add_unix_user,
    mini_submissions,
    public_tempdir,
    remove_unix_user,
    start_slurm,
    stop_slurm,
    totals,
    without_fork_server,
)

from conftest import interplab, read_csv_rows
from hubtools import (
    api_token,
    interpreter_reachable_by_all,
    login,
    make_tiny_course,
    spawn,
    start_hub,
    stop_hub,
    stop_server,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def slurm() -> SlurmCluster:
    if os.geteuid() != 0:
        pytest.skip("the SLURM daemons and per-student Unix users need root")
    cluster = start_slurm()
    yield cluster
    stop_slurm(cluster)


# --- the hub's SLURM mode ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def slurm_hub(slurm, tmp_path_factory):
    """`interplab hub` with INTERPLAB_SPAWNER=slurm on loopback, and one student who is a real Unix user
    (a SLURM job runs as the user who submits it: BatchSpawner submits with ``sudo -u <student>``)."""
    interpreter_reachable_by_all()  # the student's job runs the hub's venv, as on a shared cluster file system
    homes = public_tempdir("interplab-slurm-homes-")
    student = f"sl{os.getpid()}"
    user = add_unix_user(student, homes)
    hub = None
    try:
        tmp = tmp_path_factory.mktemp("slurm-hub")
        hub = start_hub(make_tiny_course(tmp / "course"), tmp / "data", students=(student,), timeout=300,
                        extra_env={"INTERPLAB_SPAWNER": "slurm", "SLURM_CONF": str(slurm.conf)})
        yield hub, user
    finally:
        if hub is not None:
            stop_hub(hub)
        remove_unix_user(student)
        shutil.rmtree(homes, ignore_errors=True)


def test_a_students_server_is_a_slurm_job_of_theirs_reached_through_the_hub(slurm, slurm_hub):
    hub, user = slurm_hub
    name = user.pw_name
    session = login(hub, name)
    token = api_token(hub, session, name)
    headers = {"Authorization": f"token {token}"}
    try:
        spawn(hub, token, name, timeout=240)
    except RuntimeError as exc:
        raise AssertionError(f"{exc}\n{hub.log()[-4000:]}\n{slurm.log()}") from exc
    # a SLURM job of the student's, running on the cluster's node
    assert slurm.jobs(name) == [("spawner-jupyterhub", name, "RUNNING")]
    # reached through the hub's proxy, with the student's own token
    r = requests.get(f"{hub.url}/user/{name}/api/contents", headers=headers, timeout=60)
    assert r.status_code == 200, r.text[:500]
    # the server writes as the student: a file made through it is theirs, in their home
    r = requests.put(f"{hub.url}/user/{name}/api/contents/made-on-slurm.txt", headers=headers, timeout=60,
                     json={"type": "file", "format": "text", "content": "hello"})
    assert r.status_code == 201, r.text[:500]
    made = Path(user.pw_dir) / "made-on-slurm.txt"
    assert made.read_text() == "hello"
    assert (made.stat().st_uid, made.stat().st_gid) == (user.pw_uid, user.pw_gid) and user.pw_uid != 0
    # stopping the server from the hub cancels the job
    stop_server(hub, token, name)
    deadline = time.monotonic() + 60
    while slurm.jobs(name) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert slurm.jobs(name) == []


# --- grading on SLURM workers (dask-jobqueue) -----------------------------------------------------------

def test_grading_on_slurm_workers_gives_the_local_grades(slurm, mini_course, monkeypatch):
    without_fork_server(mini_course)
    mini_submissions(mini_course)
    local = interplab("grade", "mini", "--course", str(mini_course), "--workers", "2")
    assert local.returncode == 0, local.stdout + local.stderr
    local_rows = read_csv_rows(mini_course / "grades" / "mini.csv")
    assert totals(local_rows) == MINI_TOTALS
    for name in ("autograded", "feedback", "grades"):
        shutil.rmtree(mini_course / name)
    shutil.rmtree(mini_course / ".interplab" / "mini" / "executions")  # nothing reused: SLURM executes all

    from dask.distributed import Client
    from dask_jobqueue import SLURMCluster

    monkeypatch.setenv("SLURM_CONF", str(slurm.conf))  # sbatch, squeue and scancel, run by dask-jobqueue
    logs = public_tempdir("interplab-dask-jobs-")
    with SLURMCluster(cores=1, processes=1, memory="4GB", walltime="00:30:00", python=sys.executable,
                      scheduler_options={"host": "127.0.0.1", "dashboard_address": None},
                      worker_extra_args=["--host", "127.0.0.1", "--no-dashboard"],
                      log_directory=str(logs), local_directory=str(logs)) as cluster:
        cluster.scale(jobs=2)
        with Client(cluster) as client:
            try:
                client.wait_for_workers(2, timeout=180)
            except TimeoutError as exc:
                raise AssertionError(f"no SLURM workers: {slurm.jobs()}\n{slurm.log()}") from exc
            assert [(j[0], j[2]) for j in slurm.jobs()] == [("dask-worker", "RUNNING")] * 2
            proc = interplab("grade", "mini", "--course", str(mini_course), "--executor", "dask",
                             "--scheduler", cluster.scheduler_address)
    shutil.rmtree(logs, ignore_errors=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{len(MINI_TOTALS)} executed" in proc.stdout
    assert read_csv_rows(mini_course / "grades" / "mini.csv") == local_rows

