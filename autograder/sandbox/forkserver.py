"""Grading kernels forked from a warm server, with the sandbox's protections.

Starting a grading kernel in the plain sandbox (:mod:`.box`) costs a Python start,
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
  empty tmpfs, its run dir (connection file, ipc sockets) is bound back and its workdir is a tmpfs
  of its own (``disk_limit`` bytes, ``disk_inodes`` files) holding a copy of the job's files, plus
  a fresh /tmp (``tmp_size``, ``disk_inodes``) and /dev/shm; the course directory, store, gradebook, other submissions and
  other kernels' workdirs are not there;
- network: a new network namespace per kernel (its own loopback only; not the host's, not the
  server's, not another kernel's); the grader talks to it over ipc sockets in its run dir;
- processes: a new PID namespace per kernel whose init (the kernel's parent) takes every process
  with it when the kernel ends; the grader kills it (SIGKILL) at shutdown, and the sandbox's
  cgroup/uid sweep runs afterwards as for the plain sandbox;
- user: the slot's uid/gid (``uid_base + slot``), no supplementary groups, an empty capability
  bounding set, no_new_privs;
- limits: the policy's rlimits (:meth:`SandboxPolicy.rlimits`, as for the plain sandbox) and the
  slot's memory and pids cgroups, joined before anything is set up;
- the control socket is a socketpair fd inherited by the server, closed in every child; the
  kernel's environment is the allow-listed one of :func:`.command.sandbox_env`, sent to that child
  only; the server's own is :func:`.command.server_env` (no grading data);
- the server's folders are made by ``mkdtemp`` (root-only, unguessable name), so no local user can
  squat them.

What differs from a kernel started from scratch (none of it carries data from one submission to
the next): every kernel of one server is a copy of the same process, so it shares the server's
address-space layout (ASLR), stack canary and str hash secret, and starts with the preload list
already imported (as imported by the server, whose environment held no submission data); numpy's
global RNG is reseeded and torch/BLAS thread counts are set from the kernel's own environment. The
layout matters only to an exploit of a memory bug in a process the kernel can send data to, and the
kernel can reach neither the server nor its supervisor (other namespaces, no shared fd). The server
and its kernels share bwrap's read-only /dev (each kernel has its own /dev/pts, /dev/shm and /tmp).
``pwd.getpwuid(uid).pw_dir`` is /nonexistent (HOME is the workdir, as in the plain sandbox). Files
the kernel writes stay in its tmpfs and vanish with it.

Use: :class:`~.kernels.ForkServerKernelManager` (it uses the process's :func:`shared_server`, started
on first use, and falls back to the plain sandbox if it cannot start). Needs root and a working
bwrap; otherwise :class:`SandboxError`.
"""
from __future__ import annotations

import atexit
import json
import os
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

from .command import bwrap_args, check_exposure, inside, python_paths, server_env
from .policy import MAX_SLOTS, SANDBOX_USER, SandboxError, SandboxPolicy
from .protections import Capabilities, probe

DEFAULT_PRELOAD = ("numpy", "torch", "einops", "jaxtyping", "transformer_lens", "interplab",
                   "ipykernel.kernelapp", "ipykernel.ipkernel")
CHILD_SCRIPT = Path(__file__).with_name("forkserver_child.py")
MIN_HEADROOM = 512 << 20  # memory a forked kernel must have beyond what the preloaded modules use
SCRIPT_IN_SANDBOX = "/opt/interplab/forkserver_child.py"


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
                 start_timeout: float = 300, base_dir: str | os.PathLike | None = None):
        # None: a fresh folder made by mkdtemp (root-only, a name nobody can guess or squat first)
        # in the temp dir, which is disk-backed (the jobs' copies live there), unlike /run.
        self.base_dir = None if base_dir is None else Path(base_dir)
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
        if self.base_dir is None:
            self.base = Path(tempfile.mkdtemp(prefix="interplab-forkserver-"))
        else:
            self.base_dir.mkdir(mode=0o700, exist_ok=True)
            st = self.base_dir.lstat()
            if self.base_dir.is_symlink() or st.st_uid != 0 or st.st_mode & 0o022:
                raise SandboxError(f"{self.base_dir} must be a directory owned by root and writable only by root")
            self.base = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=self.base_dir))
        os.chmod(self.base, 0o700)
        self.jobs_root = self.base / "j"
        self.jobs_root.mkdir(mode=0o711)
        self._write_etc(self.base / "etc")
        ro = python_paths() + [os.path.abspath(p) for p in self.policy.extra_ro_paths]
        # A child mounts a fresh /tmp and /dev/shm: read-only paths under them (a checkout or venv in
        # /tmp) are bound back into the child, or its Python would vanish.
        self.ro_under_tmp = [p for p in ro if inside(p, "/tmp") or inside(p, "/dev/shm")]
        check_exposure(ro, [str(self.jobs_root)], str(self.jobs_root), self.forbidden)
        args = bwrap_args(self.caps.bwrap, self.policy, ro, [str(self.jobs_root)], self.base, str(self.jobs_root))
        args += ["--perms", "0755", "--dir", "/opt/interplab", "--ro-bind", str(CHILD_SCRIPT), SCRIPT_IN_SANDBOX]
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        argv = [*args, "--", sys.executable, "-s", SCRIPT_IN_SANDBOX, "--control-fd", str(theirs.fileno()),
                "--preload", ",".join(self.preload)]
        try:
            self.process = subprocess.Popen(argv, env=server_env(), pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL,
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
                       "tmp_size": policy.tmp_size, "disk_limit": policy.disk_limit, "disk_inodes": policy.disk_inodes,
                       "rlimits": policy.rlimits(own_uid=uid != 0),
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
_FAILED: dict[tuple, SandboxError] = {}  # a server that could not start is not tried again by this process
_SHARED_LOCK = threading.Lock()


def shared_server(preload: Iterable[str] = DEFAULT_PRELOAD, policy: SandboxPolicy | None = None, *,
                  forbidden: Iterable[str | os.PathLike] = (), base_dir: str | os.PathLike | None = None) -> ForkServer:
    """This process's fork server for this configuration, started on first use (and again if it
    died); ended at exit. Call it once when a worker starts to pay the preload before the first job."""
    policy = policy or SandboxPolicy()
    key = (os.getpid(), tuple(preload), policy.tmp_size, policy.gpu, policy.extra_ro_paths, policy.uid_base,
           tuple(sorted(str(p) for p in forbidden)), str(base_dir))
    with _SHARED_LOCK:
        if key in _FAILED:
            raise _FAILED[key]
        server = _SHARED.get(key)
        if server is None or not server.alive:
            if server is not None:
                server.close()
            try:
                server = _SHARED[key] = ForkServer(preload, policy, forbidden=forbidden, base_dir=base_dir).start()
            except SandboxError as exc:
                _FAILED[key] = exc
                raise
        return server


@atexit.register
def close_shared_servers() -> None:
    with _SHARED_LOCK:
        for server in _SHARED.values():
            server.close()
        _SHARED.clear()
