"""The grading sandbox, exercised for real: bwrap, setpriv, prlimit and cgroups on this machine, a
real ipykernel driven by nbclient. Every fault is bounded (small memory, process and CPU limits,
short timeouts) so the file is safe on a shared 2-core machine and runs in well under 90 s."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
from jupyter_core.utils import run_sync
from nbclient import NotebookClient
from nbclient.exceptions import DeadKernelError
from traitlets.config import Config

from interplab.autograder.sandbox import (
    GiB,
    MiB,
    Sandbox,
    SandboxedKernelManager,
    SandboxError,
    SandboxPolicy,
    banner,
    parse_size,
    pids_of_uid,
    probe,
    protections,
    run_sandboxed,
)

from conftest import alive, fake_course, notebook, texts, workdir_of

REPO = Path(__file__).resolve().parents[1]
CAPS = probe()
pytestmark = pytest.mark.skipif(
    not (CAPS.root and CAPS.bwrap and CAPS.setpriv and CAPS.prlimit),
    reason="the sandbox tests need root, a working bwrap (apt-get install bubblewrap) and util-linux "
           f"setpriv/prlimit; here: root={CAPS.root} bwrap={CAPS.bwrap} notes={CAPS.notes}")
# Slots far from those a real grading run uses (0, 1, ...), so the two never share a uid.
SLOT = 40


@pytest.fixture
def course(tmp_path: Path) -> Path:
    return fake_course(tmp_path)


def py(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


def uid_of(slot: int) -> int:
    return SandboxPolicy().uid_base + slot


# ------------------------------------------------------------------------------------------------
# policy and banner


def test_policy_from_course_toml_and_sizes():
    import tomllib
    settings = tomllib.loads((REPO / "course" / "course.toml").read_text())
    policy = SandboxPolicy.from_settings(settings["grading"])
    assert (policy.memory, policy.cell_timeout, policy.notebook_timeout) == (4 * GiB, 120, 900)
    assert SandboxPolicy.from_settings(settings) == policy  # the whole file works too
    policy = SandboxPolicy.from_settings({"memory_limit": "512MiB", "max_processes": 64, "max_file_size": "1G",
                                          "cpu_seconds": 30, "notebook_timeout": 60})
    assert (policy.memory, policy.max_processes, policy.max_file_size, policy.cpu_limit) == (512 * MiB, 64, GiB, 30)
    assert SandboxPolicy(cpu_seconds=None, notebook_timeout=10).cpu_limit == 10 * (os.cpu_count() or 1)
    assert parse_size("1.5 GiB") == 3 * GiB // 2 and parse_size(4096) == 4096
    with pytest.raises(SandboxError, match="max_processes"):
        SandboxPolicy.from_settings({"max_processes": "many"})
    with pytest.raises(SandboxError, match="memory_limit|size"):
        SandboxPolicy.from_settings({"memory_limit": "lots"})


def test_banner_all_on_here_and_loud_when_degraded():
    text = banner()
    assert "WARNING" not in text and all(p.active for p in protections()), text
    degraded = replace(CAPS, root=False, bwrap=None, unshare=None, setpriv=None, cgroups=None,
                       notes=("bwrap not found (apt-get install bubblewrap)",))
    text = banner(caps=degraded)
    off = [line for line in text.splitlines() if line.startswith("WARNING: [OFF]")]
    assert {"FILESYSTEM ISOLATION", "PRIVATE NETWORK NAMESPACE", "PRIVATE PID NAMESPACE", "UNPRIVILEGED USER",
            "PROCESS LIMIT", "SANDBOX MEMORY CAP (CGROUP)", "DISK LIMIT"} == {line.split("[OFF] ")[1].split(" IS OFF")[0] for line in off}
    assert "apt-get install" in text


# ------------------------------------------------------------------------------------------------
# plain commands in the sandbox


PROBE_FILES = """
import json, os, socket, sys
course = sys.argv[1]
def attempt(fn):
    try:
        return "ok:" + str(fn())[:40]
    except Exception as exc:
        return type(exc).__name__
out = {
    "uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups(), "cwd": os.getcwd(), "home": os.environ["HOME"],
    "store": attempt(lambda: open(course + "/.interplab/a1/references.json").read()),
    "gradebook": attempt(lambda: open(course + "/gradebook.db").read()),
    "other_submission": attempt(lambda: open(course + "/submitted/bob/a1/a1.ipynb").read()),
    "list_course": attempt(lambda: os.listdir(course)),
    "list_autograded": attempt(lambda: os.listdir(course + "/autograded")),
    "write_workdir": attempt(lambda: open("mine.txt", "w").write("x")),
    "write_venv": attempt(lambda: open(sys.prefix + "/evil.txt", "w").write("x")),
    "write_repo": attempt(lambda: open(os.path.dirname(sys.prefix) + "/evil.txt", "w").write("x")),
    "env_secret": os.environ.get("GRADER_TOKEN"),
    "seed": os.environ.get("INTERPLAB_HIDDEN_SEED"),
    "interfaces": [name for _, name in socket.if_nameindex()],
}
print(json.dumps(out))
"""


def test_unprivileged_uid_and_only_the_workdir_visible(course):
    env = dict(os.environ, GRADER_TOKEN="hub-api-token", INTERPLAB_HIDDEN_SEED="1234")
    result = run_sandboxed([sys.executable, "-c", PROBE_FILES, str(course)], workdir_of(course), timeout=60,
                           slot=SLOT, env=env, forbidden=[course / ".interplab", course / "gradebook.db"])
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert (out["uid"], out["gid"], out["groups"]) == (uid_of(SLOT), uid_of(SLOT), [])
    assert out["cwd"] == out["home"] == str(workdir_of(course).resolve())
    # not visible at all: the course, its store, its gradebook, other submissions
    for key in ("store", "gradebook", "other_submission"):
        assert out[key] == "FileNotFoundError", (key, out[key])
    # of the course only the bare path down to the workdir exists (empty folders made by bwrap)
    assert out["list_course"] == "ok:['autograded']" and out["list_autograded"] == "ok:['alice']"
    assert out["write_workdir"] == "ok:1"
    assert out["write_venv"] == "OSError" and out["write_repo"] in ("OSError", "PermissionError")  # read-only
    assert out["env_secret"] is None and out["seed"] == "1234"  # allow-listed environment only
    assert out["interfaces"] == ["lo"]
    # the kernel wrote to its own tmpfs copy of the workdir, never to the host; nothing of it runs
    assert not (workdir_of(course) / "mine.txt").exists() and workdir_of(course).stat().st_uid == os.getuid()
    assert not result.leftover and not pids_of_uid(uid_of(SLOT))


def test_a_sandbox_that_would_show_a_forbidden_path_is_refused(course):
    policy = SandboxPolicy(extra_ro_paths=(str(course),))
    with pytest.raises(SandboxError, match="would show"):
        run_sandboxed(["true"], workdir_of(course), policy, timeout=10, slot=SLOT, forbidden=[course / ".interplab"])
    with pytest.raises(SandboxError, match="overlaps"):  # e.g. nbgrader's default cwd, the submission itself
        run_sandboxed(["true"], course / "submitted" / "bob" / "a1", timeout=10, slot=SLOT, forbidden=[course / "submitted"])
    assert (course / "submitted" / "bob" / "a1").stat().st_uid == os.getuid()  # refused before anything changed


def test_parallel_sandboxes_get_their_own_slot_and_uid(course, tmp_path):
    other, third = tmp_path / "other", tmp_path / "third"
    other.mkdir()
    third.mkdir()
    with Sandbox(workdir_of(course), slot=SLOT) as first:
        with pytest.raises(SandboxError, match="in use"):
            Sandbox(other, slot=SLOT).open()
        with Sandbox(other) as auto_a, Sandbox(third) as auto_b:  # slot=None: the first free ones
            slots = {first.slot, auto_a.slot, auto_b.slot}
            uids = {first.uid, auto_a.uid, auto_b.uid}
            assert len(slots) == 3 and len(uids) == 3 and all(uid >= SandboxPolicy().uid_base for uid in uids)


def test_tcp_to_the_hosts_loopback_fails(course):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    port = server.getsockname()[1]
    accepted = []
    threading.Thread(target=lambda: accepted.append(server.accept()), daemon=True).start()
    try:
        code = f"""
        import socket
        s = socket.socket(); s.settimeout(3)
        try:
            s.connect(("127.0.0.1", {port})); print("connected")
        except OSError as exc:
            print(type(exc).__name__)
        """
        result = run_sandboxed(py(code), workdir_of(course), timeout=30, slot=SLOT)
        assert result.stdout.strip() == "ConnectionRefusedError", (result.stdout, result.stderr)
        with socket.create_connection(("127.0.0.1", port), timeout=3):  # the server itself was reachable
            pass
        time.sleep(0.2)
        assert len(accepted) == 1
    finally:
        server.close()


def test_infinite_loop_is_stopped_by_the_cpu_limit(course):
    policy = SandboxPolicy(cpu_seconds=1)
    result = run_sandboxed(py("while True: pass"), workdir_of(course), policy, timeout=40, slot=SLOT)
    assert not result.timed_out, "the CPU limit, not the wall-clock timeout, must stop it"
    assert result.returncode in (128 + 24, 128 + 9), result  # SIGXCPU at the soft limit (SIGKILL at hard)
    assert not result.leftover


def test_wall_clock_timeout_stops_a_sleeping_command(course):
    result = run_sandboxed(py("import time; time.sleep(600)"), workdir_of(course), timeout=2, slot=SLOT)
    assert result.timed_out and result.seconds < 15 and not result.leftover


def test_allocating_past_the_memory_limit_raises_memoryerror(course):
    code = """
    import numpy
    try:
        big = bytearray(2 << 30)          # 2 GiB at once
        print("allocated")
    except MemoryError:
        print("MemoryError at once")
    chunks = []
    try:
        while True:                          # then step by step, touching every page
            chunks.append(bytearray(16 << 20))
    except MemoryError:
        print("MemoryError after", 16 * len(chunks), "MiB")
    """
    result = run_sandboxed(py(code), workdir_of(course), SandboxPolicy(memory=512 * MiB), timeout=60, slot=SLOT)
    assert result.returncode == 0, result.stderr  # the process survived: no OOM kill, host or cgroup
    lines = result.stdout.splitlines()
    assert lines[0] == "MemoryError at once"
    assert lines[1].startswith("MemoryError after") and int(lines[1].split()[2]) < 512


def test_fork_bomb_is_contained(course):
    code = """
    import os, time
    end = time.time() + 60
    while time.time() < end:          # every process forks as fast as it can
        try:
            os.fork()
        except OSError:
            time.sleep(0.05)
    """
    policy = SandboxPolicy(max_processes=64, cpu_seconds=20, memory=1 * GiB)
    with Sandbox(workdir_of(course), policy, SLOT) as box:
        proc = subprocess.Popen(box.argv(py(code)), cwd=box.workdir, env=box.env(), start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        peak, host_ok = 0, []
        try:
            end = time.monotonic() + 3
            while time.monotonic() < end:
                peak = max(peak, len(pids_of_uid(box.uid)))
                start = time.monotonic()
                host_ok.append(subprocess.run(["true"], timeout=10).returncode == 0 and time.monotonic() - start < 5)
                time.sleep(0.1)
        finally:
            proc.kill()  # SIGKILL to bwrap: --die-with-parent takes the whole PID namespace down
            proc.wait()
        left = box.wait_gone(10)
    assert 32 <= peak <= 64, peak  # it did fork, and no further than the limit
    assert host_ok and all(host_ok)  # the host kept forking quickly meanwhile
    assert not left and not pids_of_uid(uid_of(SLOT))


def test_background_process_dies_with_the_command(course):
    code = """
    import subprocess
    p = subprocess.Popen(["sleep", "600"], start_new_session=True)
    print(p.pid)
    """
    result = run_sandboxed(py(code), workdir_of(course), timeout=30, slot=SLOT)
    assert result.returncode == 0 and result.stdout.strip().isdigit()
    assert not result.leftover  # gone before the sandbox's own sweep: the PID namespace ended it


def test_huge_file_stops_at_the_file_size_limit(course):
    code = """
    import os
    with open("huge.bin", "wb", buffering=0) as f:
        try:
            for _ in range(64):
                f.write(b"x" * (1 << 20))
        except OSError as exc:
            print("errno", exc.errno)
    print(os.path.getsize("huge.bin"))
    """
    result = run_sandboxed(py(code), workdir_of(course), SandboxPolicy(max_file_size=8 * MiB), timeout=30, slot=SLOT)
    assert result.stdout.split() == ["errno", "27", str(8 * MiB)], (result.stdout, result.stderr)  # EFBIG
    assert not (workdir_of(course) / "huge.bin").exists()  # written to the sandbox's tmpfs, not the host


def test_without_bwrap_unshare_still_isolates_network_and_limits_hold(course):
    """The fallback when bwrap is missing (as root): util-linux unshare for the namespaces. The
    banner says the filesystem is then NOT isolated."""
    caps = replace(CAPS, bwrap=None)
    assert any(p.name == "filesystem isolation" and not p.active for p in protections(caps=caps))
    code = """
    import os, socket
    print(os.getuid(), [n for _, n in socket.if_nameindex()])
    with open("f.bin", "wb", buffering=0) as f:
        try:
            for _ in range(4):
                f.write(b"x" * (1 << 19))
        except OSError as exc:
            print("errno", exc.errno)
    """
    result = run_sandboxed(py(code), workdir_of(course), SandboxPolicy(max_file_size=1 * MiB, allow_unsandboxed=True),
                           timeout=30, slot=SLOT, caps=caps)
    assert result.stdout.splitlines() == [f"{uid_of(SLOT)} ['lo']", "errno 27"], (result.stdout, result.stderr)
    assert not result.leftover


# ------------------------------------------------------------------------------------------------
# a real kernel through nbclient


def test_kernel_in_sandbox_runs_a_notebook_and_leaves_nothing_behind(course):
    workdir = workdir_of(course)
    nb = notebook(
        """
        import os, sys
        print(os.getuid(), os.getcwd(), os.environ.get("INTERPLAB_MODE"), os.environ.get("INTERPLAB_HIDDEN_SEED"))
        """,
        f"""
        import os
        for path in ["{course}/.interplab/a1/references.json", "{course}/gradebook.db", "{course}/submitted/bob/a1/a1.ipynb"]:
            try:
                open(path).read(); print("READ", path)
            except OSError as exc:
                print(type(exc).__name__)
        """,
        """
        import os, subprocess
        sleeper = subprocess.Popen(["sleep", "600"], start_new_session=True)   # outlive the kernel?
        if os.fork() == 0:                                                      # a daemon, double-forked
            os.setsid()
            if os.fork() == 0:
                import time; time.sleep(600)
            os._exit(0)
        print("started")
        """,
        "while True:\n    pass",  # stopped by the per-cell timeout (interrupt)
        "print('kernel survived the interrupt')",
    )
    km = SandboxedKernelManager(slot=SLOT, grading_settings={"cell_timeout": 3, "notebook_timeout": 120})
    client = NotebookClient(nb, km=km, timeout=km.policy.cell_timeout, allow_errors=True, interrupt_on_timeout=True,
                            resources={"metadata": {"path": str(workdir)}})
    env = dict(os.environ, INTERPLAB_MODE="grading", INTERPLAB_HIDDEN_SEED="99")
    start = time.monotonic()
    client.execute(env=env)
    elapsed = time.monotonic() - start
    try:
        assert km.transport == "ipc" and km.connection_file.startswith("/run/interplab-sandbox/")
        assert texts(nb.cells[0]).split() == [str(uid_of(SLOT)), str(workdir.resolve()), "grading", "99"]
        assert texts(nb.cells[1]).split() == ["FileNotFoundError"] * 3
        assert texts(nb.cells[2]).strip() == "started"
        assert [o.ename for o in nb.cells[3].outputs if o.output_type == "error"] == ["KeyboardInterrupt"]
        assert texts(nb.cells[4]).strip() == "kernel survived the interrupt"
        assert elapsed < 40
        running = km.sandbox_processes()
        assert len(pids_of_uid(uid_of(SLOT))) >= 3  # kernel, sleeper, daemon
    finally:
        run_sync(km.shutdown_kernel)()
    assert running and not any(alive(pid) for pid in running)
    assert not pids_of_uid(uid_of(SLOT))
    assert km.sandbox is None and workdir.stat().st_uid == os.getuid()


def test_nbclient_owned_manager_and_notebook_timeout(course):
    """As nbgrader uses it: nbclient creates the manager from config and shuts it down itself. The
    per-notebook deadline kills the sandbox even while a cell is far from its own timeout."""
    nb = notebook("print('hello from the sandbox')", "import time\ntime.sleep(600)", "print('never')")
    made = []

    class Recorded(SandboxedKernelManager):  # only to get hold of the manager nbclient creates and drops
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            made.append(self)

    config = Config({"SandboxedKernelManager": {"slot": SLOT, "show_banner": False,
                                                "grading_settings": {"notebook_timeout": 6}}})
    client = NotebookClient(nb, kernel_manager_class=Recorded, config=config, timeout=300,
                            allow_errors=True, resources={"metadata": {"path": str(workdir_of(course))}})
    start = time.monotonic()
    with pytest.raises(DeadKernelError):
        client.execute()
    assert time.monotonic() - start < 40
    assert texts(nb.cells[0]).strip() == "hello from the sandbox"
    assert len(made) == 1 and made[0].slot == SLOT and made[0].notebook_timed_out
    # nbclient skips shutdown_kernel for a dead kernel: the sandbox was torn down all the same
    assert made[0].sandbox is None and workdir_of(course).stat().st_uid == os.getuid()
    assert not list(Path("/sys/fs/cgroup").glob(f"*/**/interplab-sandbox-slot-{SLOT}"))
    assert not pids_of_uid(uid_of(SLOT))
