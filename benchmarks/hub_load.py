"""Load on the hub: N simulated students (30 by default) at once, on loopback only, with the local
spawner (one Unix user for all) or in system mode (``--mode system``: a Unix user per student,
created at first login, each server in its cgroups; needs root).

Each student logs in through the login form, asks for their server, waits until the hub reports it
ready, fetches the released assignment from the exchange and opens the notebook (JupyterLab's page,
then the notebook through the contents API, as the browser does). Prints successes, p50/p95 spawn
latency, and the memory of the hub (its own process, the proxy, all servers). Bounded in time:
every step has a timeout and the whole run a deadline; the hub and all servers are stopped at the end.

    .venv/bin/python benchmarks/hub_load.py [--students 30] [--deadline 600] [--mode local|system]
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the hub drivers the hub tests use (tests/hubtools.py)
from hubtools import (  # noqa: E402
    TINY,
    api_token,
    delete_accounts,
    login,
    make_tiny_course,
    spawn,
    start_hub,
    stop_hub,
    system_mode,
)


def student(hub, name: str, barrier: threading.Barrier, deadline: float) -> dict:
    barrier.wait(timeout=120)  # everyone starts at once
    out = {"name": name, "ok": False}
    t0 = time.monotonic()
    try:
        session = login(hub, name)
        out["login_s"] = time.monotonic() - t0
        token = api_token(hub, session, name)
        out["spawn_s"] = spawn(hub, token, name, timeout=max(10.0, deadline - time.monotonic()))
        headers = {"Authorization": f"token {token}"}
        r = requests.post(f"{hub.url}/user/{name}/assignments/fetch", headers=headers,
                          data={"course_id": "interplab", "assignment_id": TINY}, timeout=120)
        r.raise_for_status()
        t1 = time.monotonic()
        lab = session.get(f"{hub.url}/user/{name}/lab/tree/{TINY}/{TINY}.ipynb", timeout=120)
        lab.raise_for_status()
        nb = requests.get(f"{hub.url}/user/{name}/api/contents/{TINY}/{TINY}.ipynb", headers=headers, timeout=120)
        nb.raise_for_status()
        assert nb.json()["type"] == "notebook"
        out["open_s"] = time.monotonic() - t1
        out["total_s"] = time.monotonic() - t0
        out["ok"] = True
    except Exception as exc:  # report, do not hide: one line per failed student
        out["error"] = f"{type(exc).__name__}: {exc}"[:300]
    return out


def memory_mib(hub) -> dict[str, float]:
    hub_proc = psutil.Process(hub.proc.pid)  # `interplab hub`; JupyterHub is its child
    procs = hub_proc.children(recursive=True)
    mib = lambda ps: sum(p.memory_info().rss for p in ps) / 2**20
    jhub = [p for p in procs if "jupyterhub" in " ".join(p.cmdline()[:3]) and "-f" in p.cmdline()]
    proxy = [p for p in procs if "configurable-http-proxy" in " ".join(p.cmdline())]
    singleuser = [p for p in procs if "jupyterhub.singleuser" in " ".join(p.cmdline())]
    # the formgrader service is a Jupyter server too, started in the course directory
    formgrader = [p for p in singleuser if any(a.startswith("--ServerApp.root_dir") for a in p.cmdline())]
    servers = [p for p in singleuser if p not in formgrader]
    return {"hub": mib(jhub), "proxy": mib(proxy), "servers": mib(servers), "n_servers": len(servers),
            "formgrader": mib(formgrader)}


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    k = (len(values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--students", type=int, default=30)
    ap.add_argument("--deadline", type=float, default=600, help="seconds for the whole load phase")
    ap.add_argument("--mode", choices=("local", "system"), default="local")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C works even when started in the background
    names = tuple(f"student{i:02d}" for i in range(1, args.students + 1))
    prefix = f"ilb{os.getpid() % 100000}"  # system mode's accounts, deleted at the end
    extra_env = {"INTERPLAB_CULL_TIMEOUT": "3600"}
    if args.mode == "system":
        tmp, system_env = system_mode(prefix, (63000, 63999))
        extra_env.update(system_env)
    else:
        tmp = Path(tempfile.mkdtemp(prefix="interplab-hubload-"))
    try:
        print(f"building a one-notebook course and starting the hub ({args.mode}) for {len(names)} students ...", flush=True)
        course = make_tiny_course(tmp / "course")
        hub = start_hub(course, tmp / "data", students=names, timeout=600, extra_env=extra_env)
        try:
            idle = memory_mib(hub)
            barrier = threading.Barrier(len(names))
            deadline = time.monotonic() + args.deadline
            t0 = time.monotonic()
            with ThreadPoolExecutor(len(names)) as pool:
                results = list(pool.map(lambda n: student(hub, n, barrier, deadline), names))
            wall = time.monotonic() - t0
            loaded = memory_mib(hub)
        finally:
            print("stopping the hub and every server ...", flush=True)
            code = stop_hub(hub, timeout=180)
    finally:
        if args.mode == "system":
            print(f"deleted {len(delete_accounts(prefix))} accounts", flush=True)
        shutil.rmtree(tmp, ignore_errors=True)
    ok = [r for r in results if r["ok"]]
    spawns = [r["spawn_s"] for r in results if "spawn_s" in r]
    print(f"\nhub load ({args.mode} spawner): {len(names)} students at once on {psutil.cpu_count()} cores, loopback")
    print(f"successes: {len(ok)}/{len(names)} (login, spawn, fetch, open notebook) in {wall:.1f} s wall")
    if spawns:
        print(f"spawn latency: p50 {percentile(spawns, 0.5):.1f} s, p95 {percentile(spawns, 0.95):.1f} s, max {max(spawns):.1f} s")
    if ok:
        print(f"open notebook: p50 {statistics.median(r['open_s'] for r in ok):.2f} s; "
              f"whole path p50 {statistics.median(r['total_s'] for r in ok):.1f} s")
    print(f"hub memory (RSS): JupyterHub {idle['hub']:.0f} MiB idle -> {loaded['hub']:.0f} MiB loaded; "
          f"proxy {loaded['proxy']:.0f} MiB; formgrader {loaded['formgrader']:.0f} MiB; "
          f"{loaded['n_servers']} student servers {loaded['servers']:.0f} MiB in all")
    for r in results:
        if not r["ok"]:
            print(f"  failed {r['name']}: {r.get('error')}")
    print(f"hub stopped (exit {code})")
    return 0 if len(ok) == len(names) else 1


if __name__ == "__main__":
    sys.exit(main())
