"""``interplab hub``: the course on a local JupyterHub at http://127.0.0.1:8000 (what `make hub` runs).

Builds the course if it has no release yet, releases every built assignment to the nbgrader
exchange (students fetch it from the Assignments panel), starts JupyterHub with the repository's
jupyterhub_config.py and prints the demo accounts. Ctrl-C stops the hub, its proxy and every
student's server. Users, released assignments and submissions live on disk (the hub's data
directory and the course's exchange), so a second start carries on where the first stopped.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil

from interplab.autograder.hub.login import DEMO_INSTRUCTOR, DEMO_STUDENTS, demo_accounts
from interplab.autograder.hub.proxy import ensure_proxy
from interplab.autograder.hub.spawners import default_exchange

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "jupyterhub_config.py"
COURSE_ID_DEFAULT = "interplab"


def _log(msg: str) -> None:
    print(f"[interplab hub] {msg}", flush=True)


def hub_env(course: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment jupyterhub_config.py reads, with this command's defaults filled in."""
    env = dict(os.environ if base is None else base)
    env.setdefault("INTERPLAB_COURSE", str(course))
    env.setdefault("INTERPLAB_HUB_DATA", str(REPO / ".hub"))
    env.setdefault("INTERPLAB_COURSE_ID", COURSE_ID_DEFAULT)
    env.setdefault("INTERPLAB_EXCHANGE", str(default_exchange(env.get("INTERPLAB_SPAWNER", "local"), Path(env["INTERPLAB_COURSE"]))))
    env.setdefault("HF_HUB_OFFLINE", "1")
    env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")])
    return env


def released_assignments(course: Path) -> list[str]:
    release = course / "release"
    if not release.is_dir():
        return []
    return sorted(p.name for p in release.iterdir() if p.is_dir() and any(p.glob("*.ipynb")))


def build_if_needed(course: Path) -> None:
    """`interplab build` for every assignment of the course that has no release yet (a rebuilt
    master is the instructor's call: `interplab build <a>`, then restart the hub to release it)."""
    released = set(released_assignments(course))
    try:
        from interplab.autograder.build import build_command
        from interplab.autograder.course import Course, CourseError
    except ImportError:  # the build step is not installed: fall back to the command line
        if not released:
            subprocess.run([sys.executable, "-m", "interplab.cli", "build", "--course", str(course)], check=True)
        return
    try:
        missing = [a for a in Course.load(course).known_assignments() if a not in released]
    except CourseError as exc:  # a course without masters (say, built elsewhere): serve what is released
        _log(f"nothing to build ({exc})")
        missing = []
    if not missing:
        if not released:
            _log(f"warning: no assignment in {course}/release: students will see an empty Assignments panel")
        return
    _log(f"no assignment built in {course}/release yet for {', '.join(missing)}: running `interplab build`")
    failed = []
    for assignment in missing:  # one at a time: a broken assignment must not keep the others from students
        try:
            status = build_command(argparse.Namespace(course=course, assignments=[assignment], skip_validation=False))
        except Exception as exc:  # the build's own error, printed as it words it
            print(f"interplab build {assignment}: {exc}", file=sys.stderr)
            status = 2
        if status:
            failed.append(assignment)
    if failed:
        _log(f"WARNING: `interplab build` failed for {', '.join(failed)}; the hub serves the others. "
             f"Fix them, run `interplab build {' '.join(failed)}`, and restart the hub to release them.")
    if not released_assignments(course):
        raise SystemExit("no assignment could be built: nothing to serve")


def release_to_exchange(course: Path, env: dict[str, str]) -> list[str]:
    """``nbgrader release_assignment`` for each built assignment that is new or rebuilt since its
    last release; students' fetched copies and submissions are left alone."""
    exchange = Path(env["INTERPLAB_EXCHANGE"])
    course_id = env["INTERPLAB_COURSE_ID"]
    # what was released last time, by content: a rebuilt assignment is released again
    stamps_path = Path(env["INTERPLAB_HUB_DATA"]) / "released.json"
    stamps = json.loads(stamps_path.read_text()) if stamps_path.is_file() else {}
    released = []
    for assignment in released_assignments(course):
        outbound = exchange / course_id / "outbound" / assignment
        stamp = fingerprint(course / "release" / assignment)
        if outbound.is_dir() and stamps.get(f"{course_id}/{assignment}") == stamp:
            released.append(assignment)
            continue
        cmd = [
            sys.executable, "-m", "nbgrader", "release_assignment", assignment, "--force",
            f"--CourseDirectory.root={course}", f"--CourseDirectory.course_id={course_id}",
            f"--Exchange.root={exchange}",
        ]
        proc = subprocess.run(cmd, cwd=course, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"`nbgrader release_assignment {assignment}` failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
        _log(f"released {assignment} to the exchange ({exchange})")
        released.append(assignment)
        stamps[f"{course_id}/{assignment}"] = stamp
        stamps_path.parent.mkdir(parents=True, exist_ok=True)
        stamps_path.write_text(json.dumps(stamps, indent=1))
    return released


def fingerprint(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def wait_until_up(url: str, proc: subprocess.Popen, timeout: float) -> None:
    # This polls our own hub on this machine: whether its certificate names the address we poll
    # (a public name, 0.0.0.0) does not matter here; browsers check it.
    context = ssl._create_unverified_context() if url.startswith("https:") else None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the hub exited during start-up (exit {proc.returncode}); see its log above")
        try:
            with urllib.request.urlopen(url, timeout=2, context=context) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.3)
    raise SystemExit(f"the hub did not answer at {url} within {timeout:.0f} s")


def stop(proc: subprocess.Popen, timeout: float = 60) -> int:
    """SIGINT (JupyterHub's clean shutdown: servers, services, proxy), then SIGTERM, then SIGKILL;
    whatever the hub started and left behind is then stopped too, so nothing outlives the command."""
    try:
        started = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        started = []
    for sig, wait in ((signal.SIGINT, timeout), (signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        if proc.poll() is not None:
            break
        proc.send_signal(sig)
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            continue
    _, alive = psutil.wait_procs(started, timeout=10)
    for leftover in alive:
        _log(f"stopping leftover process {leftover.pid}")
        leftover.kill()
    return proc.wait()


def hub_command(args: argparse.Namespace) -> int:
    # Started in the background by a non-interactive shell, SIGINT arrives ignored and every child
    # would inherit that (servers then stop only at SIGTERM): restore Ctrl-C for all of them.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    course = Path(args.course).resolve()
    ensure_proxy()
    build_if_needed(course)
    env = hub_env(course)
    assignments = release_to_exchange(course, env)
    data = Path(env["INTERPLAB_HUB_DATA"])
    data.mkdir(parents=True, exist_ok=True)
    ip = env.get("INTERPLAB_HUB_IP", "127.0.0.1")
    port = env.get("INTERPLAB_HUB_PORT", "8000")
    url = f"{'https' if env.get('INTERPLAB_SSL_CERT') else 'http'}://{ip}:{port}"

    # Its own session: Ctrl-C reaches only this command, which then asks the hub to stop exactly
    # once (a second SIGINT would interrupt JupyterHub's own clean shutdown).
    proc = subprocess.Popen([sys.executable, "-m", "jupyterhub", "-f", str(CONFIG)], cwd=data, env=env,
                            start_new_session=True)

    def _terminate(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _terminate)
    try:
        # the hub's own API first (polling through the proxy before the hub is up only logs errors)
        wait_until_up(f"http://127.0.0.1:{env.get('INTERPLAB_HUB_API_PORT', '8081')}/hub/api/", proc, timeout=120)
        wait_until_up(f"{url}/hub/api/", proc, timeout=60)
        if env.get("INTERPLAB_AUTH", "demo") == "demo":
            students = [n.strip() for n in env.get("INTERPLAB_DEMO_STUDENTS", "").split(",") if n.strip()]
            accounts = demo_accounts(data, tuple(students) or DEMO_STUDENTS)
            width = max(map(len, accounts))
            lines = [f"  {name:<{width}}  {pw}   ({'instructor' if name == DEMO_INSTRUCTOR else 'student'})" for name, pw in accounts.items()]
            accounts_text = "demo accounts (name, password):\n" + "\n".join(lines) + "\n"
        else:
            accounts_text = f"{env['INTERPLAB_AUTH']} login: accounts as its deploy/README.md section says\n"
        print(
            f"\nInterpLab hub ready: {url}\n"
            f"assignments in the exchange: {', '.join(assignments) or 'none'}\n"
            + accounts_text
            + f"instructors grade at {url}/services/formgrader-{env['INTERPLAB_COURSE_ID']}/formgrader\n"
            "Ctrl-C stops the hub and every server.\n",
            flush=True,
        )
        return proc.wait()
    except KeyboardInterrupt:
        _log("stopping the hub and every server ...")
        code = stop(proc)
        _log(f"stopped (exit {code})")
        return 0
    finally:
        if proc.poll() is None:
            stop(proc)
