"""Grading kernels forked from a warm fork server, exercised for real: bwrap, namespaces, setresuid,
rlimits and cgroups on this machine, real ipykernels driven by nbclient, compared with the plain
sandbox's kernel (autograder/sandbox/). Loopback only; every wait is bounded."""
from __future__ import annotations

import json
import logging
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
from jupyter_core.utils import run_sync
from nbclient import NotebookClient
from traitlets.config import Config

from interplab.autograder.sandbox import (
    DEFAULT_PRELOAD,
    ForkServer,
    ForkServerKernelManager,
    SandboxedKernelManager,
    SandboxError,
    SandboxPolicy,
    pids_of_uid,
    probe,
    shared_server,
)
from interplab.autograder.sandbox.forkserver import ForkedKernel

from conftest import SECRET, alive, fake_course, notebook, texts, workdir_of

CAPS = probe()
pytestmark = pytest.mark.skipif(
    not (CAPS.root and CAPS.bwrap), reason=f"the fork server needs root and bwrap; here root={CAPS.root} bwrap={CAPS.bwrap}")
# Slots far from those real grading (0, 1, ...) and tests/test_sandbox.py (40) use.
SLOT = 43
UID = SandboxPolicy().uid_base + SLOT


@pytest.fixture(scope="module")
def server():
    with ForkServer(DEFAULT_PRELOAD) as srv:
        assert srv.ready["ready"] and not srv.ready["failed"], srv.ready
        yield srv


@pytest.fixture
def course(tmp_path: Path) -> Path:
    root = fake_course(tmp_path)
    (workdir_of(root) / "helper.py").write_text("VALUE = 'released file'\n")
    return root


def run_notebook(nb, workdir: Path, km, env: dict | None = None, timeout: int = 60, shutdown: bool = True):
    client = NotebookClient(nb, km=km, timeout=timeout, allow_errors=True, interrupt_on_timeout=True,
                            iopub_timeout=timeout,  # late outputs on a loaded machine are waited for, not lost
                            resources={"metadata": {"path": str(workdir)}})
    try:
        client.execute(env=dict(os.environ, **(env or {})))
    finally:
        if shutdown and km.has_kernel:
            run_sync(km.shutdown_kernel)()
    return nb


def forked(server: ForkServer, **settings) -> ForkServerKernelManager:
    return ForkServerKernelManager(slot=SLOT, fork_server=server, show_banner=False,
                                   grading_settings={"cell_timeout": 20, "notebook_timeout": 120, **settings})


def socket_inodes(pid: int) -> set[str]:
    found = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:"):
            found.add(link)
    return found


def server_pids(server: ForkServer, stop: int) -> list[int]:
    """bwrap and every process below it (host pids), down to ``stop`` (a kernel's supervisor)."""
    assert server.process is not None
    todo, seen = [server.process.pid], []
    while todo:
        pid = todo.pop()
        seen.append(pid)
        if pid == stop:
            continue
        for task in os.listdir(f"/proc/{pid}/task"):
            try:
                todo += [int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
            except OSError:
                pass
    return seen


# ------------------------------------------------------------------------------------------------


SAME = [
    "x = sum(i * i for i in range(10)); print(x)",
    "import numpy as np\nnp.arange(6).reshape(2, 3).sum(axis=0)",
    "from IPython.display import display, HTML\ndisplay(HTML('<b>hi</b>')); display({'text/plain': 'raw'}, raw=True)",
    "import helper; print(helper.VALUE)",  # a released file in the workdir is importable
    "import os; print(os.getuid(), os.environ['INTERPLAB_HIDDEN_SEED'], os.environ.get('GRADER_TOKEN'))",
    "1 / 0",
    "import torch; a = torch.ones(300, 300); print(float((a @ a).sum()), float(np.linalg.norm(np.ones((300, 300)) @ np.ones(300))))",
    "print(torch.get_num_threads(), torch.randn(3, generator=torch.Generator().manual_seed(0)).tolist())",
    # thread counts from the kernel's environment, as grading_env sets them (BLAS loaded by the server)
    "import threadpoolctl; print(sorted({p['num_threads'] for p in threadpoolctl.threadpool_info() if p['user_api'] == 'blas'}))",
    "import __main__, pickle\ndef f(): return 3\nprint(__name__, __main__.__dict__ is globals(), pickle.loads(pickle.dumps(f))())",
    "import tempfile; print(tempfile.gettempdir(), sys.path[0] == os.getcwd(), os.environ['HOME'] == os.getcwd())",
    "import sys; print('stderr line', file=sys.stderr)",
]


def strip(nb) -> list[list[dict]]:
    cells = []
    for cell in nb.cells:
        outs = []
        for o in cell.outputs:
            o = {k: v for k, v in o.items() if k not in ("metadata", "execution_count")}
            if o.get("output_type") == "error":
                o = {"output_type": "error", "ename": o["ename"], "evalue": o["evalue"]}
            outs.append(o)
        cells.append(outs)
    return cells


def test_same_outputs_as_the_sandboxed_kernel(server, course):
    env = {"INTERPLAB_HIDDEN_SEED": "1234", "GRADER_TOKEN": "hub-api-token", "OMP_NUM_THREADS": "1",
           "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    plain = run_notebook(notebook(*SAME), workdir_of(course),
                         SandboxedKernelManager(slot=SLOT, show_banner=False), env)
    fork = run_notebook(notebook(*SAME), workdir_of(course), forked(server), env)
    assert strip(fork) == strip(plain)
    assert texts(fork.cells[4]).split() == [str(UID), "1234", "None"]
    assert [o.ename for o in fork.cells[5].outputs] == ["ZeroDivisionError"]
    assert workdir_of(course).stat().st_uid == os.getuid()  # the given workdir was copied, never chowned


LEAK = """
import builtins, os, sys, subprocess, numpy, torch, interplab
SECRET_GLOBAL = "from the first submission"
builtins.LEAKED_BUILTIN = 1
numpy.LEAKED_ATTR = 1
torch.nn.functional.relu = lambda x: x * 0            # monkeypatch a preloaded module
interplab.check = lambda *a, **k: print("always passes")
os.environ["LEAKED_ENV"] = "1"
sys.path.append("/tmp/leaked")
open("leaked.txt", "w").write("x")
open("/tmp/leaked.txt", "w").write("x")
open("/dev/shm/leaked", "w").write("x")
sleeper = subprocess.Popen(["sleep", "600"], start_new_session=True)
numpy.random.seed(7); torch.manual_seed(7)
print(os.getpid(), "written")
"""

NO_LEAK = """
import builtins, os, sys, numpy, torch, interplab
print(json.dumps({
    "global": "SECRET_GLOBAL" in globals(),
    "builtin": hasattr(builtins, "LEAKED_BUILTIN"),
    "attr": hasattr(numpy, "LEAKED_ATTR"),
    "relu": float(torch.nn.functional.relu(torch.ones(1))[0]),
    "check": interplab.check.__module__,
    "env": os.environ.get("LEAKED_ENV"),
    "path": "/tmp/leaked" in sys.path,
    "files": [os.path.exists(p) for p in ("leaked.txt", "/tmp/leaked.txt", "/dev/shm/leaked")],
    "sleepers": [p for p in os.listdir("/proc") if p.isdigit() and "sleep" in open(f"/proc/{p}/comm").read()],
    "seed": os.environ.get("INTERPLAB_HIDDEN_SEED"),
}))
"""


def server_python(server: ForkServer) -> int:
    """The host pid of the fork server's Python (the first forkserver_child.py below bwrap)."""
    for pid in server_pids(server, stop=-1):
        if b"forkserver_child.py" in Path(f"/proc/{pid}/cmdline").read_bytes():
            return pid
    raise AssertionError("no fork server process")


def memory_contains(pid: int, marker: bytes) -> bool:
    """Whether ``marker`` is anywhere in the process's writable memory."""
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
        for line in maps:
            fields = line.split()
            if "w" not in fields[1]:
                continue
            start, end = (int(x, 16) for x in fields[0].split("-"))
            try:
                mem.seek(start)
                if marker in mem.read(end - start):
                    return True
            except OSError:
                continue
    return False


def test_nothing_leaks_from_one_submission_to_the_next(server, course, tmp_path):
    work = workdir_of(course)
    marker = "seed-marker-" + os.urandom(8).hex()
    first = run_notebook(notebook(LEAK), work, forked(server), {"INTERPLAB_HIDDEN_SEED": "111", "INTERPLAB_MARK": marker})
    # the request (environment with the hidden seed) never entered the server, whose memory every
    # later kernel is copied from; the check itself can find the marker where it is (this process)
    assert not memory_contains(server_python(server), marker.encode())
    assert memory_contains(os.getpid(), marker.encode())
    assert texts(first.cells[0]).split()[1] == "written", first.cells[0].outputs
    second = run_notebook(notebook("import json", NO_LEAK), work, forked(server), {"INTERPLAB_HIDDEN_SEED": "222"})
    seen = json.loads(texts(second.cells[1]))
    assert seen == {"global": False, "builtin": False, "attr": False, "relu": 1.0, "check": "interplab.checking",
                    "env": None, "path": False, "files": [False, False, False], "sleepers": [], "seed": "222"}
    assert not pids_of_uid(UID)


PROBE = """
import json, os, resource, socket, sys
course = sys.argv_course
def attempt(fn):
    try:
        return "ok:" + str(fn())[:60]
    except Exception as exc:
        return type(exc).__name__
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
s = socket.socket(); s.settimeout(3)
print(json.dumps({
    "ids": [os.getuid(), os.geteuid(), os.getgid(), os.getegid(), os.getgroups()],
    "caps": [status[k].strip() for k in ("CapPrm", "CapEff", "CapBnd", "NoNewPrivs")],
    "store": attempt(lambda: open(course + "/.interplab/a1/references.json").read()),
    "gradebook": attempt(lambda: open(course + "/gradebook.db").read()),
    "other_submission": attempt(lambda: open(course + "/submitted/bob/a1/a1.ipynb").read()),
    "other_job": attempt(lambda: open(OTHER).read()),
    "jobs_root": sorted(os.listdir(JOBS)),
    "cwd": os.getcwd(), "home": os.environ["HOME"],
    "write_venv": attempt(lambda: open(sys.prefix + "/evil.txt", "w").write("x")),
    "tcp": attempt(lambda: s.connect(("127.0.0.1", PORT))),
    "interfaces": [n for _, n in socket.if_nameindex()],
    "pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
    "limits": {k: list(resource.getrlimit(getattr(resource, k))) for k in LIMITS},
    "fds": [attempt(lambda: os.readlink(f"/proc/self/fd/{fd}"))[3:] for fd in os.listdir("/proc/self/fd")],
    "hostname": socket.gethostname(),
    "big": attempt(lambda: len(bytearray(3 << 30))),
}))
"""


def test_forked_kernel_is_sandboxed(server, course):
    other = server.job_dir()  # another kernel's workdir, on the same server, at the same time
    (other.work / "answer.txt").write_text(SECRET)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    accepted = []
    threading.Thread(target=lambda: accepted.append(listener.accept()), daemon=True).start()
    policy = SandboxPolicy(memory=3 << 30, max_processes=100, open_files=512, cpu_seconds=300)
    km = ForkServerKernelManager(slot=SLOT, fork_server=server, show_banner=False,
                                 grading_settings={"memory_limit": "3GiB", "max_processes": 100,
                                                   "open_files": 512, "cpu_seconds": 300},
                                 forbidden_paths=[str(course / ".interplab")])
    setup = (f"import sys; sys.argv_course = {str(course)!r}; OTHER = {str(other.work / 'answer.txt')!r}; "
             f"JOBS = {str(server.jobs_root)!r}; PORT = {port}; LIMITS = {sorted(policy.rlimits())!r}")
    nb = notebook(setup, PROBE)
    try:
        run_notebook(nb, workdir_of(course), km, shutdown=False)
        assert texts(nb.cells[1]), (nb.cells[0].outputs, nb.cells[1].outputs)
        out = json.loads(texts(nb.cells[1]))
        process = km.provisioner.process
        assert isinstance(process, ForkedKernel)
        in_cgroup = km.sandbox._cgroups.pids() if km.sandbox._cgroups else None
        kernel_sockets = {link for link in out["fds"] if link.startswith("socket:")}
        server_sockets = set().union(*(socket_inodes(pid) for pid in server_pids(server, process.supervisor)))
        assert len(server_sockets) >= 2  # the server's control socket, the supervisor's request socket
    finally:
        run_sync(km.shutdown_kernel)()
        listener.close()
    assert out["ids"] == [UID, UID, UID, UID, []]
    assert out["caps"] == ["0000000000000000", "0000000000000000", "0000000000000000", "1"]
    for key in ("store", "gradebook", "other_submission", "other_job"):
        assert out[key] == "FileNotFoundError", (key, out[key])
    assert out["jobs_root"] == [Path(out["cwd"]).parent.name]  # only its own job under the jobs root
    assert out["cwd"] == out["home"] and out["cwd"].startswith(str(server.jobs_root))
    assert out["write_venv"] in ("OSError", "PermissionError")
    assert out["tcp"] == "ConnectionRefusedError" and out["interfaces"] == ["lo"] and not accepted
    assert out["pids"][0] == 1 and len(out["pids"]) <= 4  # its own PID namespace: init, kernel (and a child)
    assert out["limits"] == {k: list(v) for k, v in policy.rlimits().items()}
    assert out["hostname"] == "sandbox"
    assert out["big"] == "MemoryError"  # RLIMIT_DATA: 3 GiB more than the limit allows
    # no fd of the server (its control socket) or of the supervisor reached the kernel
    assert not kernel_sockets & server_sockets
    # the kernel was in the slot's cgroups (where the machine has them)
    if in_cgroup is not None:
        assert process.supervisor in in_cgroup and process.pid in in_cgroup and len(in_cgroup) >= 3
    with socket.create_connection(("127.0.0.1", port), timeout=3):
        pass  # the listener itself was reachable from the host


def test_shutdown_leaves_no_process_behind(server, course):
    km = forked(server)
    nb = notebook("""
        import os, subprocess
        sleeper = subprocess.Popen(["sleep", "600"], start_new_session=True)
        if os.fork() == 0:               # a daemon, double-forked
            os.setsid()
            if os.fork() == 0:
                import time; time.sleep(600)
            os._exit(0)
        print("started")
        """)
    run_notebook(nb, workdir_of(course), km, shutdown=False)
    assert texts(nb.cells[0]).strip() == "started"
    process = km.provisioner.process
    running = km.sandbox_processes() | {process.supervisor, process.pid}
    job = km.job
    assert len(pids_of_uid(UID)) >= 4  # init, kernel, sleeper, daemon
    run_sync(km.shutdown_kernel)()
    end = time.monotonic() + 10
    while any(alive(pid) for pid in running) and time.monotonic() < end:
        time.sleep(0.05)
    assert not any(alive(pid) for pid in running)
    assert not pids_of_uid(UID) and km.sandbox is None and not job.root.exists()
    assert server.alive  # the server itself goes on


def test_cell_timeout_interrupts_by_message_and_the_kernel_goes_on(server, course):
    nb = notebook("while True:\n    pass", "print('kernel survived the interrupt')")
    run_notebook(nb, workdir_of(course), forked(server), timeout=3)
    assert [o.ename for o in nb.cells[0].outputs if o.output_type == "error"] == ["KeyboardInterrupt"]
    assert texts(nb.cells[1]).strip() == "kernel survived the interrupt"


def test_configured_as_nbgrader_does_and_notebook_deadline(course):
    """nbclient makes the manager from config (the process's shared server) and the notebook deadline
    kills the forked kernel, like the plain sandbox's."""
    made = []

    class Recorded(ForkServerKernelManager):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            made.append(self)

    config = Config({"ForkServerKernelManager": {"slot": SLOT, "show_banner": False, "preload": ["numpy", "ipykernel.kernelapp"],
                                                 "grading_settings": {"notebook_timeout": 5}}})
    nb = notebook("print('hello from a forked kernel')", "import time\ntime.sleep(600)", "print('never')")
    client = NotebookClient(nb, kernel_manager_class=Recorded, config=config, timeout=300, allow_errors=True,
                            resources={"metadata": {"path": str(workdir_of(course))}})
    from nbclient.exceptions import DeadKernelError
    start = time.monotonic()
    with pytest.raises(DeadKernelError):
        client.execute()
    assert time.monotonic() - start < 40
    assert texts(nb.cells[0]).strip() == "hello from a forked kernel"
    assert len(made) == 1 and made[0].notebook_timed_out and made[0].sandbox is None
    assert made[0].fork_server is shared_server(["numpy", "ipykernel.kernelapp"], made[0].policy)
    assert not pids_of_uid(UID)


def test_kernel_start_time_fork_server_vs_sandbox(server, course):
    """Kernel start to the first executed cell, that cell being `import torch, transformer_lens`."""
    def once(km) -> float:
        nb = notebook("import torch, transformer_lens\nprint('imported')")
        start = time.perf_counter()
        run_notebook(nb, workdir_of(course), km, shutdown=False)
        elapsed = time.perf_counter() - start
        assert texts(nb.cells[0]).strip() == "imported", nb.cells[0].outputs
        run_sync(km.shutdown_kernel)()
        return elapsed

    plain = [once(SandboxedKernelManager(slot=SLOT, show_banner=False)) for _ in range(3)]
    fork = [once(forked(server)) for _ in range(3)]
    report = (f"kernel start + `import torch, transformer_lens` (median of 3): SandboxedKernelManager "
              f"{statistics.median(plain):.2f} s {[round(t, 2) for t in plain]}, ForkServerKernelManager "
              f"{statistics.median(fork):.2f} s {[round(t, 2) for t in fork]}, speedup "
              f"{statistics.median(plain) / statistics.median(fork):.1f}x")
    print("\n" + report)
    assert statistics.median(fork) < statistics.median(plain)


def test_grading_execute_with_the_fork_server_kernel(course):
    """The lead's GradingExecute (nbgrader's Execute) drives a forked kernel in grading mode; the
    ``SandboxedKernelManager`` config section applies to the subclass as well."""
    from interplab.autograder.steps import GradingExecute

    config = Config({"Execute": {"timeout": 60},
                     "SandboxedKernelManager": {"slot": SLOT, "show_banner": False},
                     "ForkServerKernelManager": {"preload": ["numpy", "ipykernel.kernelapp"]}})
    executor = GradingExecute(config=config, kernel_manager_class=ForkServerKernelManager)
    nb = notebook("import os; print(os.getuid(), os.environ['INTERPLAB_MODE'], os.environ['INTERPLAB_HIDDEN_SEED'])")
    resources = {"nbgrader": {"student": "alice", "assignment": "a1", "notebook": "a1", "db_url": ""},
                 "metadata": {"path": str(workdir_of(course))}, "interplab": {"seed": 4242}}
    executor.preprocess(nb, resources)
    assert texts(nb.cells[0]).split() == [str(UID), "grading", "4242"]
    assert not pids_of_uid(UID)


def test_no_fork_server_without_bwrap(tmp_path):
    with pytest.raises(SandboxError, match="SandboxedKernelManager"):
        ForkServer(["numpy"], caps=replace(CAPS, bwrap=None), base_dir=tmp_path / "fs").start()
    assert not (tmp_path / "fs").exists()


def test_a_memory_limit_below_the_preloaded_modules_is_refused(server, course):
    km = forked(server, memory_limit=server.ready["data_bytes"])
    with pytest.raises(SandboxError, match="memory_limit"):
        run_notebook(notebook("print(1)"), workdir_of(course), km)
    assert km.sandbox is None and not pids_of_uid(UID)


def test_cpu_limit_ends_a_forked_kernel_and_everything_goes(server, course):
    from nbclient.exceptions import DeadKernelError

    km = forked(server, cpu_seconds=2)
    nb = notebook("import subprocess; s = subprocess.Popen(['sleep', '600'])", "while True:\n    pass")
    start = time.monotonic()
    with pytest.raises(DeadKernelError):
        run_notebook(nb, workdir_of(course), km, timeout=60)
    assert time.monotonic() - start < 30  # the CPU limit, not the cell timeout
    end = time.monotonic() + 10
    while pids_of_uid(UID) and time.monotonic() < end:
        time.sleep(0.05)
    assert not pids_of_uid(UID) and km.sandbox is None


def test_a_forked_kernels_disk_is_bounded_in_bytes_and_files(server, course):
    km = forked(server, disk_limit="8MiB", disk_inodes=300, tmp_size="8MiB")
    nb = notebook("open('big.bin', 'wb').write(b'0' * (64 * 2**20))",
                  "import os\nfor i in range(100_000):\n    os.mkdir(f'd{i}')",
                  "open('/tmp/big.bin', 'wb').write(b'0' * (64 * 2**20))",
                  "import os; print(sorted(os.listdir('.'))[:1], open('helper.py').read().strip())")
    run_notebook(nb, workdir_of(course), km)
    for cell in nb.cells[:3]:
        assert any("No space left on device" in o.get("evalue", "") for o in cell.outputs), cell.outputs
    assert texts(nb.cells[3]).split("\n")[0] == "['big.bin'] VALUE = 'released file'"  # the job's files were copied in
    assert sorted(p.name for p in workdir_of(course).iterdir()) == ["helper.py"]  # the host folder is untouched


SQUAT = """
import os, sys, tempfile
from pathlib import Path
for name in ("interplab-forkserver", "interplab-sandbox-0"):  # the old predictable names, squatted
    os.mkdir(f"/tmp/{name}", 0o777); os.chown(f"/tmp/{name}", 65534, 65534); os.chmod(f"/tmp/{name}", 0o777)
from interplab.autograder.sandbox import ForkServer, Sandbox
with ForkServer(["json"]) as server:
    st = server.base.stat()
    print(server.ready["ready"], st.st_uid, oct(st.st_mode & 0o777), str(server.base).startswith("/tmp/interplab-forkserver/"))
work = Path(tempfile.mkdtemp()); os.chmod(work, 0o755)
with Sandbox(work, slot=44) as box:
    print(str(box.runtime_dir).startswith("/tmp"))
"""


def test_a_squatted_runtime_directory_changes_nothing():
    """Another user created the fork server's and the sandbox's old predictable folders in the
    shared temp dir first: both start anyway, in folders of root's own. (Run in a private mount
    namespace with its own /tmp, so no other grader on this machine sees the squatted names.)"""
    proc = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                           'mount -t tmpfs tmpfs /tmp && exec "$0" -c "$1"', sys.executable, SQUAT],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["True", "0", "0o700", "False", "False"], proc.stdout


def test_a_fork_server_that_cannot_start_falls_back_to_the_plain_sandbox_loudly(course, tmp_path, caplog):
    squatted = tmp_path / "not-roots"
    squatted.mkdir(mode=0o777)
    os.chown(squatted, 65534, 65534)
    log = logging.getLogger("test-fork-fallback")
    km = ForkServerKernelManager(slot=SLOT, show_banner=False, server_dir=str(squatted), log=log,
                                 grading_settings={"cell_timeout": 20, "notebook_timeout": 120})
    with caplog.at_level(logging.WARNING, logger="test-fork-fallback"):
        nb = run_notebook(notebook("import os; print(os.getuid(), open('helper.py').read().strip())"),
                          workdir_of(course), km)
    assert texts(nb.cells[0]).split("\n")[0] == f"{UID} VALUE = 'released file'"  # graded, sandboxed
    assert km.fork_failed
    assert "FORK SERVER IS OFF" in caplog.text and "owned by root" in caplog.text
    assert km.sandbox is None and not pids_of_uid(UID)
