"""Grading kernels forked from a warm server, with the sandbox's protections.

Starting a grading kernel in the plain sandbox (autograder/sandbox.py) costs a Python start,
ipykernel's imports and then ``import torch, transformer_lens`` in the first cell: seconds per
submission before any student code runs. A :class:`ForkServer` pays that once: it is a Python
process in its own bwrap sandbox that has imported a preload list (ipykernel, numpy, torch,
transformer_lens, einops, jaxtyping, interplab) without starting a thread or a zmq context, and
forks one fresh kernel per submission. Nothing a submission does reaches the next one: each kernel
is a new process copied from the pristine server, which itself never runs student code and never
reads a request (the forked child does), so it holds no submission's data and no secret.

Isolation of a forked kernel (see forkserver_child.py for the mechanics), the same as the sandbox's:

- filesystem: the server's bwrap shows the system and Python directories read-only and one jobs
  root read-write; each kernel gets a new mount namespace in which the jobs root is covered by an
  empty tmpfs and only its own workdir and run dir (connection file, ipc sockets) are bound back,
  plus a fresh /tmp and /dev/shm; the course directory, store, gradebook, other submissions and
  other kernels' workdirs are not there;
- network: a new network namespace per kernel (its own loopback only; not the host's, not the
  server's, not another kernel's); the grader talks to it over ipc sockets in its run dir;
- processes: a new PID namespace per kernel whose init (the kernel's parent) takes every process
  with it when the kernel ends; the grader kills it (SIGKILL) at shutdown, and the sandbox's
  cgroup/uid sweep runs afterwards as for the plain sandbox;
- user: the slot's uid/gid (``uid_base + slot``), no supplementary groups, an empty capability
  bounding set, no_new_privs;
- limits: the same rlimits as the plain sandbox (data, file size, open files, CPU, no core dumps,
  processes per uid) and the slot's memory and pids cgroups, joined before anything is set up;
- the control socket is a socketpair fd inherited by the server, closed in every child; the
  kernel's environment is the allow-listed one of :func:`sandbox.sandbox_env`, sent to that child
  only.

What differs from a kernel started from scratch (none of it carries data from one submission to
the next): every kernel of one server is a copy of the same process, so it shares the server's
address-space layout (ASLR), stack canary and str hash secret, and starts with the preload list
already imported (as imported by the server, whose environment held no submission data); numpy's
global RNG is reseeded and torch/BLAS thread counts are set from the kernel's own environment. The
layout matters only to an exploit of a memory bug in a process the kernel can send data to, and the
kernel can reach neither the server nor its supervisor (other namespaces, no shared fd). The server
and its kernels share bwrap's read-only /dev (each kernel has its own /dev/pts, /dev/shm and /tmp).
``pwd.getpwuid(uid).pw_dir`` is /nonexistent (HOME is the workdir, as in the plain sandbox). Files
the kernel writes stay in the workdir under the jobs root (a workdir given outside it is copied in).

Use: ``ForkServerKernelManager`` as nbclient's ``kernel_manager_class`` instead of
``SandboxedKernelManager`` (same configuration, plus ``preload``); it uses the process's shared
server (:func:`shared_server`), started on first use; or pass ``fork_server=`` explicitly.
Needs root and a working bwrap; otherwise :class:`SandboxError` (use ``SandboxedKernelManager``).
"""
from __future__ import annotations

import atexit
import json
import os
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from jupyter_client.manager import AsyncKernelManager
from jupyter_client.provisioning import LocalProvisioner
from traitlets import Instance, List, Unicode

from .sandbox import (
    MAX_SLOTS,
    SANDBOX_USER,
    Capabilities,
    Sandbox,
    SandboxedKernelManager,
    SandboxError,
    SandboxPolicy,
    _bwrap_args,
    _check_exposure,
    _inside,
    probe,
    python_paths,
)

DEFAULT_PRELOAD = ("numpy", "torch", "einops", "jaxtyping", "transformer_lens", "interplab",
                   "ipykernel.kernelapp", "ipykernel.ipkernel")
CHILD_SCRIPT = Path(__file__).with_name("forkserver_child.py")
MIN_HEADROOM = 512 << 20  # memory a forked kernel must have beyond what the preloaded modules use
SCRIPT_IN_SANDBOX = "/opt/interplab/forkserver_child.py"
# Workdirs live here, like run_job's (a disk-backed temp dir, not the small /run tmpfs).
RUNTIME_BASE = Path(tempfile.gettempdir()) / "interplab-forkserver"
# The server's own environment: what imports may read, never a seed, token or host path.
SERVER_ENV_KEEP = ("LANG", "LANGUAGE", "TZ", "PYTHONHASHSEED", "PYTHONWARNINGS")
SERVER_ENV_PREFIXES = ("OMP_", "MKL_", "OPENBLAS_", "LC_", "TORCH_", "CUDA_", "NVIDIA_", "CUBLAS_", "HF_",
                       "TRANSFORMERS_")
SERVER_ENV_NEVER = ("TOKEN", "SECRET", "SEED", "PASSWORD", "KEY")


@dataclass(frozen=True)
class JobDir:
    """One kernel's folders under the jobs root: ``work`` (its cwd and HOME) and ``run`` (connection
    file and ipc sockets)."""

    root: Path
    work: Path
    run: Path


class ForkServer:
    """A warm, sandboxed Python that forks sandboxed ipykernels. Start once per grading worker
    process (:func:`shared_server`); thread-safe; ``close()`` ends it and everything it forked."""

    def __init__(self, preload: Iterable[str] = DEFAULT_PRELOAD, policy: SandboxPolicy | None = None, *,
                 caps: Capabilities | None = None, forbidden: Iterable[str | os.PathLike] = (),
                 start_timeout: float = 300, base_dir: str | os.PathLike = RUNTIME_BASE):
        self.base_dir = Path(base_dir)
        self.preload = [str(name) for name in preload]
        self.policy = policy or SandboxPolicy()  # only tmp_size, gpu, extra_ro_paths matter to the server
        self.caps = caps or probe()
        self.forbidden = [str(Path(p).resolve()) for p in forbidden]
        self.start_timeout = start_timeout
        self.base: Path | None = None
        self.jobs_root: Path | None = None
        self.process: subprocess.Popen | None = None
        self.ready: dict[str, Any] = {}
        self._control: socket.socket | None = None
        self._lock = threading.Lock()

    # -- lifetime

    def start(self) -> "ForkServer":
        if self.process is not None:
            return self
        if not (self.caps.root and self.caps.bwrap):
            raise SandboxError("the fork server needs root and a working bwrap (it isolates each forked kernel "
                               f"with namespaces and drops to the slot's uid); here root={self.caps.root} "
                               f"bwrap={self.caps.bwrap}: use SandboxedKernelManager")
        try:
            return self._start()
        except BaseException:
            self.close()
            raise

    def _start(self) -> "ForkServer":
        self.base_dir.mkdir(mode=0o755, exist_ok=True)
        st = self.base_dir.lstat()
        if self.base_dir.is_symlink() or st.st_uid != 0 or st.st_mode & 0o022:
            raise SandboxError(f"{self.base_dir} must be a directory owned by root and writable only by root")
        self.base = self.base_dir / f"{os.getpid()}-{secrets.token_hex(4)}"
        self.base.mkdir(mode=0o711)
        self.jobs_root = self.base / "j"
        self.jobs_root.mkdir(mode=0o711)
        self._write_etc(self.base / "etc")
        ro = python_paths() + [os.path.abspath(p) for p in self.policy.extra_ro_paths]
        # A child mounts a fresh /tmp and /dev/shm: read-only paths under them (a checkout or venv in
        # /tmp) are bound back into the child, or its Python would vanish.
        self.ro_under_tmp = [p for p in ro if _inside(p, "/tmp") or _inside(p, "/dev/shm")]
        _check_exposure(ro, [str(self.jobs_root)], str(self.jobs_root), self.forbidden)
        args = _bwrap_args(self.caps.bwrap, self.policy, ro, [str(self.jobs_root)], self.base, str(self.jobs_root))
        args += ["--perms", "0755", "--dir", "/opt/interplab", "--ro-bind", str(CHILD_SCRIPT), SCRIPT_IN_SANDBOX]
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        argv = [*args, "--", sys.executable, "-s", SCRIPT_IN_SANDBOX, "--control-fd", str(theirs.fileno()),
                "--preload", ",".join(self.preload)]
        try:
            self.process = subprocess.Popen(argv, env=self._env(), pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL,
                                            start_new_session=True)
        finally:
            theirs.close()
        self._control = ours
        ours.settimeout(self.start_timeout)
        try:
            data = ours.recv(1 << 16)
        except (socket.timeout, OSError) as exc:
            raise SandboxError(f"the fork server did not start within {self.start_timeout} s: {exc}") from exc
        if not data:
            code = self.process.wait(timeout=10) if self.process else None
            raise SandboxError(f"the fork server exited while starting (exit status {code})")
        self.ready = json.loads(data)
        if not self.ready.get("ready"):
            raise SandboxError(f"the fork server is not safe to fork from: {self.ready}")
        ours.settimeout(None)
        return self

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if (k in SERVER_ENV_KEEP or k.startswith(SERVER_ENV_PREFIXES))
               and not any(word in k.upper() for word in SERVER_ENV_NEVER)}
        env.update({"HOME": "/tmp", "PATH": os.pathsep.join([os.path.dirname(sys.executable), "/usr/bin", "/bin"]),
                    "TMPDIR": "/tmp", "HF_HUB_OFFLINE": "1", "PYTHONNOUSERSITE": "1", "PYTHONDONTWRITEBYTECODE": "1",
                    "IPYTHONDIR": "/tmp/.ipython", "MPLCONFIGDIR": "/tmp/.matplotlib", "XDG_CACHE_HOME": "/tmp/.cache",
                    "XDG_CONFIG_HOME": "/tmp/.config", "USER": SANDBOX_USER, "LOGNAME": SANDBOX_USER})
        return env

    def _write_etc(self, etc: Path) -> None:
        etc.mkdir(mode=0o755)
        users = "".join(f"{SANDBOX_USER}:x:{self.policy.uid_base + n}:{self.policy.uid_base + n}:InterpLab grading "
                        f"sandbox:/nonexistent:/bin/sh\n" for n in range(MAX_SLOTS))
        (etc / "passwd").write_text("root:x:0:0:root:/root:/usr/sbin/nologin\n" + users +
                                    "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n")
        groups = "".join(f"{SANDBOX_USER}:x:{self.policy.uid_base + n}:\n" for n in range(MAX_SLOTS))
        (etc / "group").write_text("root:x:0:\n" + groups + "nogroup:x:65534:\n")
        (etc / "hosts").write_text("127.0.0.1 localhost sandbox\n::1 localhost\n")
        for f in etc.iterdir():
            os.chmod(f, 0o644)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def close(self) -> None:
        """End the server: its PID namespace, with every kernel it forked, goes with it."""
        if self._control is not None:
            self._control.close()
            self._control = None
        if self.process is not None:
            if self.process.poll() is None:
                self.process.kill()  # bwrap: --die-with-parent and its PID namespace take the rest
            self.process.wait()
            self.process = None
        if self.base is not None:
            shutil.rmtree(self.base, ignore_errors=True)
            self.base = self.jobs_root = None

    def __enter__(self) -> "ForkServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- kernels

    def job_dir(self, source: str | os.PathLike | None = None) -> JobDir:
        """Fresh folders for one kernel; ``source``'s files are copied into ``work``."""
        self.start()
        assert self.jobs_root is not None
        root = self.jobs_root / uuid.uuid4().hex[:12]
        root.mkdir(mode=0o711)
        work, run = root / "w", root / "r"
        if source is not None:
            shutil.copytree(source, work, symlinks=True)
        else:
            work.mkdir()
        run.mkdir(mode=0o700)
        return JobDir(root, work, run)

    def spawn(self, job: JobDir, connection_file: str, env: Mapping[str, str], *, uid: int, gid: int,
              policy: SandboxPolicy, cgroup_procs: Iterable[Path] = (), timeout: float = 60) -> "ForkedKernel":
        """Fork a kernel for ``job`` that reads ``connection_file`` (in ``job.run``); it runs as
        ``uid``/``gid`` under ``policy``'s limits and joins the cgroups whose ``cgroup.procs`` are given."""
        self.start()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        try:
            with self._lock:
                if self._control is None or not self.alive:
                    raise SandboxError("the fork server is not running")
                socket.send_fds(self._control, [b"fork"], [theirs.fileno()])
        except OSError as exc:
            ours.close()
            raise SandboxError(f"the fork server does not answer: {exc}") from exc
        finally:
            theirs.close()
        ours.settimeout(timeout)
        try:
            hello, supervisor = _recv(ours)
            if "hello" not in hello or supervisor is None:
                raise SandboxError(f"unexpected answer from the fork server: {hello}")
            for procs in cgroup_procs:  # before the child sets anything up: all it starts is counted
                Path(procs).write_text(str(supervisor))
            request = {"workdir": str(job.work), "rundir": str(job.run), "jobs_root": str(self.jobs_root),
                       "connection_file": connection_file, "env": dict(env), "uid": uid, "gid": gid,
                       "tmp_size": policy.tmp_size, "rlimits": rlimits(policy, own_uid=uid != 0),
                       "ro_keep": self.ro_under_tmp}
            ours.send(json.dumps(request).encode())
            answer, init = _recv(ours)
            if "init" not in answer or init is None:
                raise SandboxError(f"the forked kernel could not be set up: {answer.get('error', answer)}")
        except BaseException:
            ours.close()
            raise
        ours.settimeout(None)
        return ForkedKernel(ours, supervisor, init)


def rlimits(policy: SandboxPolicy, own_uid: bool = True) -> dict[str, tuple[int, int]]:
    """The rlimits of :func:`sandbox.sandbox_argv`'s prlimit, for ``resource.setrlimit``."""
    limits = {"RLIMIT_DATA": (policy.memory, policy.memory),
              "RLIMIT_FSIZE": (policy.max_file_size, policy.max_file_size),
              "RLIMIT_NOFILE": (policy.open_files, policy.open_files),
              "RLIMIT_CPU": (policy.cpu_limit, policy.cpu_limit + 5),
              "RLIMIT_CORE": (0, 0)}
    if own_uid:  # RLIMIT_NPROC counts per uid: only meaningful with the slot's own uid
        limits["RLIMIT_NPROC"] = (policy.max_processes, policy.max_processes)
    return limits


def _recv(sock: socket.socket) -> tuple[dict[str, Any], int | None]:
    """A message and the sender's pid as seen from here (SCM_CREDENTIALS translates it)."""
    data, ancdata, _, _ = sock.recvmsg(1 << 16, socket.CMSG_SPACE(struct.calcsize("3i")))
    if not data:
        raise SandboxError("the forked kernel's supervisor ended before answering")
    pid = None
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
            pid = struct.unpack("3i", payload[:struct.calcsize("3i")])[0]
    return json.loads(data), pid


class ForkedKernel:
    """The ``subprocess.Popen``-like handle the provisioner holds: ``pid`` is the host pid of the
    kernel's PID-namespace init; killing it ends every process of the kernel."""

    stdin = stdout = stderr = None

    def __init__(self, sock: socket.socket, supervisor: int, init: int):
        self._sock = sock
        self.supervisor = supervisor
        self.pid = init
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is not None:
            return self.returncode
        try:
            data = self._sock.recv(1 << 16, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return None
        except OSError:
            data = b""
        try:
            self.returncode = int(json.loads(data)["exit"]) if data else -signal.SIGKILL
        except (ValueError, KeyError, TypeError):
            self.returncode = -signal.SIGKILL
        self._sock.close()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        end = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if end is not None and time.monotonic() > end:
                raise subprocess.TimeoutExpired(f"forked kernel {self.pid}", timeout or 0)
            time.sleep(0.02)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.returncode is not None:
            return
        if signum in (signal.SIGKILL, signal.SIGTERM):
            self.kill()
        else:  # the init forwards SIGINT (and only that) to the kernel
            os.kill(self.pid, signum)

    def kill(self) -> None:
        if self.returncode is not None:
            return
        try:
            os.kill(self.pid, signal.SIGKILL)  # pid 1 of its namespace: all its processes die with it
        except ProcessLookupError:
            pass
        try:
            self._sock.send(b"kill")  # and the supervisor makes sure of it
        except OSError:
            pass

    terminate = kill

    def close(self) -> None:
        """Let go of the supervisor (which then kills whatever is left of the kernel)."""
        self._sock.close()


# ----------------------------------------------------------------------------------------------
# One server per grading worker process

_SHARED: dict[tuple, ForkServer] = {}
_SHARED_LOCK = threading.Lock()


def shared_server(preload: Iterable[str] = DEFAULT_PRELOAD, policy: SandboxPolicy | None = None, *,
                  forbidden: Iterable[str | os.PathLike] = ()) -> ForkServer:
    """This process's fork server for this configuration, started on first use (and again if it
    died); ended at exit. Call it once when a worker starts to pay the preload before the first job."""
    policy = policy or SandboxPolicy()
    key = (os.getpid(), tuple(preload), policy.tmp_size, policy.gpu, policy.extra_ro_paths, policy.uid_base,
           tuple(sorted(str(p) for p in forbidden)))
    with _SHARED_LOCK:
        server = _SHARED.get(key)
        if server is None or not server.alive:
            if server is not None:
                server.close()
            server = _SHARED[key] = ForkServer(preload, policy, forbidden=forbidden).start()
        return server


@atexit.register
def close_shared_servers() -> None:
    with _SHARED_LOCK:
        for server in _SHARED.values():
            server.close()
        _SHARED.clear()


# ----------------------------------------------------------------------------------------------
# The kernel manager


class ForkServerProvisioner(LocalProvisioner):
    """Launches the kernel by asking the manager's fork server instead of running a command."""

    async def launch_kernel(self, cmd: list[str], **kwargs: Any):
        km = self.parent
        assert isinstance(km, ForkServerKernelManager) and km.job is not None and km.sandbox is not None
        box = km.sandbox
        try:
            self.process = km.server().spawn(
                km.job, km.connection_file, {**kwargs.get("env", {}), "JPY_PARENT_PID": "1"},
                uid=box.uid, gid=box.gid, policy=km.policy,
                cgroup_procs=box._cgroups.procs_files if box._cgroups else ())
        except BaseException:
            km._close_sandbox()  # no kernel: give the slot, cgroups and workdir back now
            raise
        self.pid, self.pgid, self.cwd = self.process.pid, None, str(km.job.work)
        return self.connection_info


class ForkServerKernelManager(SandboxedKernelManager):
    """:class:`SandboxedKernelManager` whose kernel is forked from a warm :class:`ForkServer`.

    Same configuration (``slot``, ``grading_settings``, ``forbidden_paths``, ``workdir``) plus
    ``preload``. The kernel's cwd is a fresh folder under the server's jobs root: the ``cwd`` nbclient
    passes is used if it lies there, otherwise its files are copied in (``job.work`` is the copy)."""

    preload = List(Unicode(), list(DEFAULT_PRELOAD), help="modules the fork server imports once").tag(config=True)
    fork_server = Instance(ForkServer, allow_none=True, help="default: this process's shared server")
    job = Instance(JobDir, allow_none=True)
    _own_job = False

    def server(self) -> ForkServer:
        if self.fork_server is None or not self.fork_server.alive:
            self.fork_server = shared_server(self.preload, self.policy, forbidden=self.forbidden_paths)
        return self.fork_server

    async def _async_pre_start_kernel(self, **kw: Any):
        self._show_banner_once("  [on]  fork server: kernels are forked from a warm sandboxed server, each in "
                               "its own namespaces")
        server = self.server()
        preloaded = int(server.ready.get("data_bytes", 0))
        if self.policy.memory < preloaded + MIN_HEADROOM:  # RLIMIT_DATA counts what the kernel inherits
            raise SandboxError(f"memory_limit ({self.policy.memory >> 20} MiB) leaves a forked kernel less than "
                               f"{MIN_HEADROOM >> 20} MiB beyond the {preloaded >> 20} MiB its preloaded modules "
                               "take; raise memory_limit or preload fewer modules")
        if self.job is None:
            workdir = Path(self.workdir or kw.get("cwd") or os.getcwd()).resolve()
            assert server.jobs_root is not None
            if _inside(str(workdir), str(server.jobs_root)) and workdir.parent.parent == server.jobs_root:
                run = workdir.parent / "r"
                run.mkdir(mode=0o700, exist_ok=True)
                self.job, self._own_job = JobDir(workdir.parent, workdir, run), False
            else:
                for hidden in self.forbidden_paths:
                    if _inside(str(workdir), str(Path(hidden).resolve())):
                        raise SandboxError(f"the working directory {workdir} lies in {hidden} (must stay hidden)")
                self.job, self._own_job = server.job_dir(workdir), True
        if self.sandbox is None:
            self.sandbox = Sandbox(self.job.work, self.policy, self.slot, forbidden=self.forbidden_paths).open()
            if not self.sandbox.switches_user:
                self._close_sandbox()
                raise SandboxError("the fork server runs kernels as the slot's own uid, which needs util-linux "
                                   "setpriv here (apt-get install util-linux): use SandboxedKernelManager")
            self.sandbox.chown_for_sandbox(self.job.run)
        self.transport = "ipc"
        self.ip = str(self.job.run / "kernel")
        self.connection_file = str(self.job.run / "kernel.json")
        kw["cwd"] = str(self.job.work)
        kw["env"] = self.sandbox.env(kw.get("env"))
        self.kernel_id = self.kernel_id or kw.pop("kernel_id", str(uuid.uuid4()))
        if self.provisioner is None:
            self.provisioner = ForkServerProvisioner(kernel_id=self.kernel_id, kernel_spec=self.kernel_spec,
                                                     parent=self)
        return await AsyncKernelManager._async_pre_start_kernel(self, **kw)

    def _close_sandbox(self) -> None:
        process = getattr(self.provisioner, "process", None)
        if isinstance(process, ForkedKernel):
            process.kill()
            process.close()
        super()._close_sandbox()
        if self.job is not None:  # a copy we made goes; a workdir we were given stays (its run dir goes)
            shutil.rmtree(self.job.root if self._own_job else self.job.run, ignore_errors=True)
            self.job = None

