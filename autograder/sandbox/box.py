"""One sandbox's lifetime: a slot, its runtime dir, its tmpfs disk, its cgroups, and plain commands.

:class:`Sandbox` ``open()`` refuses to run where isolation is impossible (unless allowed), takes a
slot (a file lock in a root-only runtime root, so parallel graders never share a uid), writes the
slot's /etc/passwd into its runtime dir (which also holds the kernel's ipc sockets), mounts the
sandbox's own tmpfs for the working directory and /tmp (size and inode limits from the policy,
charged to the kernel's memory cgroup when it writes) and copies the job's files in, and creates
the slot's cgroups. :meth:`Sandbox.argv` and :meth:`Sandbox.env` come from :mod:`.command`.
``close()`` kills whatever is left, unmounts the disk, removes cgroups and runtime dir. The host's
working directory is only read. :func:`run_sandboxed` runs a plain command in a sandbox.
"""
from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from .cgroups import Cgroups, alive, kill_pid, pids_of_uid
from .command import Disk, sandbox_argv, sandbox_env, sandbox_uid
from .policy import MAX_SLOTS, SANDBOX_USER, SandboxError, SandboxPolicy
from .protections import Capabilities, probe, require_isolation

# Root's slot locks and runtime dirs: never in a world-writable directory, where any local user
# could squat the name first.
ROOT_RUNTIME_BASES = (Path("/run/interplab-sandbox"), Path("/var/lib/interplab-sandbox"))


def runtime_root() -> Path:
    """The folder of slot locks and runtime dirs, shared by every grader of this machine and user."""
    if os.geteuid() == 0:
        for base in ROOT_RUNTIME_BASES:
            try:
                base.mkdir(mode=0o711, parents=True, exist_ok=True)
                st = base.lstat()
                if st.st_uid == 0 and not base.is_symlink():
                    os.chmod(base, 0o711)
                    return base
            except OSError:
                continue
        raise SandboxError(f"cannot create a runtime directory for the sandbox ({' or '.join(map(str, ROOT_RUNTIME_BASES))})")
    private = os.environ.get("XDG_RUNTIME_DIR") or os.path.join(os.path.expanduser("~"), ".cache")
    base = Path(private) / "interplab-sandbox"
    base.mkdir(mode=0o700, parents=True, exist_ok=True)
    if base.lstat().st_uid != os.getuid() or base.is_symlink():
        raise SandboxError(f"{base} exists and is not ours; remove it")
    return base


def mount_tmpfs(path: Path, size: int, inodes: int, mode: str) -> None:
    """A tmpfs at ``path`` (root only) with a size and an inode limit."""
    options = f"size={size},nr_inodes={inodes},mode={mode},nosuid,nodev"
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "interplab-sandbox", str(path)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SandboxError(f"cannot mount the sandbox's tmpfs at {path}: {proc.stderr.strip()[:200]}")


def unmount_under(folder: Path) -> None:
    """Lazily unmount every mount at or under ``folder`` (ours, or stale ones of a crashed grader)."""
    prefix = str(folder)
    with open("/proc/self/mounts") as mounts:
        points = [line.split()[1] for line in mounts if len(line.split()) > 1]
    for point in sorted({p for p in points if p == prefix or p.startswith(prefix + "/")}, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)


class Sandbox:
    """The sandbox of one slot around one working directory: ``open()`` prepares it (a short
    runtime dir for sockets and /etc/passwd, the tmpfs disk holding a copy of the workdir owned by
    the slot's uid, cgroups, a lock so a slot serves one sandbox at a time), :meth:`argv`/:meth:`env`
    wrap commands, ``close()`` kills whatever is left of it. Use as a context manager.

    ``disk=False``: no tmpfs (the fork server's kernels mount their own); the workdir is then
    chowned to the slot's uid while open and given back at close."""

    def __init__(self, workdir: str | os.PathLike, policy: SandboxPolicy | None = None, slot: int | None = None, *,
                 forbidden: Iterable[str | os.PathLike] = (), caps: Capabilities | None = None, disk: bool = True):
        self.workdir = Path(workdir).resolve()
        self.policy = policy or SandboxPolicy()
        self.slot = None if slot is None else int(slot)  # None: the first free slot, chosen by open()
        self.forbidden = [str(Path(p).resolve()) for p in forbidden]
        self.caps = caps or probe()
        self.uid, self.gid = sandbox_uid(self.policy, self.slot or 0, self.caps)
        self.runtime_dir: Path | None = None
        self._lock: int | None = None
        self._owner: tuple[int, int] | None = None
        self._cgroups: Cgroups | None = None
        self.disk: Disk | None = None
        self._want_disk = disk

    @property
    def switches_user(self) -> bool:
        return bool(self.caps.root and self.caps.setpriv)

    def open(self) -> "Sandbox":
        if self.runtime_dir is not None:
            return self
        if not self.workdir.is_dir():
            raise SandboxError(f"working directory {self.workdir} does not exist")
        require_isolation(self.policy, self.caps)
        sandbox_argv(["true"], self.workdir, self.policy, self.slot or 0, forbidden=self.forbidden, caps=self.caps)  # checks only
        root = runtime_root()
        if self.slot is None:
            for slot in range(MAX_SLOTS):
                if self._take_slot(root, slot):
                    break
            else:
                raise SandboxError(f"all {MAX_SLOTS} sandbox slots are in use")
        elif not self._take_slot(root, self.slot):
            raise SandboxError(f"sandbox slot {self.slot} is in use by another grading kernel; give each "
                               "parallel grader its own slot (or slot=None to take the first free one)")
        try:
            if self.switches_user:
                self._sweep_uid()
            runtime = root / f"slot-{self.slot}"
            if runtime.exists():
                unmount_under(runtime)
                shutil.rmtree(runtime)
            (runtime / "etc").mkdir(parents=True)
            self._write_etc(runtime / "etc")
            os.chmod(runtime, 0o700)
            self._chown_tree(runtime, self.uid, self.gid, only_top=True)
            self.runtime_dir = runtime
            if self._want_disk and self.caps.root and self.caps.bwrap:
                self.disk = self._mount_disk(runtime)
            else:
                st = self.workdir.stat()
                self._owner = (st.st_uid, st.st_gid)
                if self.switches_user:
                    self._chown_tree(self.workdir, self.uid, self.gid)
            if self.caps.cgroups:
                self._cgroups = Cgroups(self.caps.cgroups, f"interplab-sandbox-slot-{self.slot}")
                self._cgroups.create(self.policy)
        except BaseException:
            self.close()
            raise
        return self

    def _mount_disk(self, runtime: Path) -> Disk:
        """The working directory and /tmp on tmpfs of their own, bounded in bytes and inodes; the
        job's files are copied in (the kernel writes there, never to the host's disk)."""
        disk = Disk(runtime / "work", runtime / "tmp")
        disk.work.mkdir()
        disk.tmp.mkdir()
        mount_tmpfs(disk.work, self.policy.disk_limit, self.policy.disk_inodes, "0755")
        mount_tmpfs(disk.tmp, self.policy.tmp_size, self.policy.disk_inodes, "1777")
        try:
            shutil.copytree(self.workdir, disk.work, symlinks=True, dirs_exist_ok=True)
        except (shutil.Error, OSError) as exc:
            raise SandboxError(f"the job's files do not fit in the sandbox's disk (disk_limit "
                               f"{self.policy.disk_limit} bytes, {self.policy.disk_inodes} files): {exc}"[:300]) from None
        self._chown_tree(disk.work, self.uid, self.gid)
        return disk

    def _take_slot(self, root: Path, slot: int) -> bool:
        """Lock ``slot`` for this sandbox (the lock lives as long as the sandbox, across processes)."""
        fd = os.open(root / f"slot-{slot}.lock", os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._lock, self.slot = fd, slot
        self.uid, self.gid = sandbox_uid(self.policy, slot, self.caps)
        return True

    def _write_etc(self, etc: Path) -> None:
        home = str(self.workdir)
        name = SANDBOX_USER if self.switches_user else os.environ.get("USER", SANDBOX_USER)
        (etc / "passwd").write_text(f"root:x:0:0:root:/root:/usr/sbin/nologin\n"
                                    f"{name}:x:{self.uid}:{self.gid}:InterpLab grading sandbox:{home}:/bin/sh\n"
                                    "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n")
        (etc / "group").write_text(f"root:x:0:\n{name}:x:{self.gid}:\nnogroup:x:65534:\n")
        (etc / "hosts").write_text("127.0.0.1 localhost sandbox\n::1 localhost\n")
        for f in etc.iterdir():
            os.chmod(f, 0o644)
        os.chmod(etc, 0o755)

    def _chown_tree(self, top: Path, uid: int, gid: int, only_top: bool = False) -> None:
        if os.geteuid() != 0:
            return
        os.chown(top, uid, gid, follow_symlinks=False)
        if only_top:
            return
        for folder, dirs, files in os.walk(top):
            for name in dirs + files:
                try:
                    os.chown(os.path.join(folder, name), uid, gid, follow_symlinks=False)
                except FileNotFoundError:
                    pass

    def argv(self, argv: list[str]) -> list[str]:
        self.open()
        assert self.slot is not None
        return sandbox_argv(argv, self.workdir, self.policy, self.slot, runtime_dir=self.runtime_dir,
                            cgroup_procs=self._cgroups.procs_files if self._cgroups else (), disk=self.disk,
                            forbidden=self.forbidden, caps=self.caps)

    def env(self, env: Mapping[str, str] | None = None) -> dict[str, str]:
        if not self.caps.bwrap:  # no private /tmp: caches go to a folder of the workdir
            tmp = self.workdir / ".tmp"
            tmp.mkdir(exist_ok=True)
            self._chown_tree(tmp, self.uid, self.gid, only_top=True)
        return sandbox_env(env, self.workdir, self.policy, self.slot or 0, self.caps)

    def chown_for_sandbox(self, path: str | os.PathLike) -> None:
        """Give a file the grader wrote (the kernel's connection file) to the sandbox's user."""
        if self.switches_user:
            os.chown(path, self.uid, self.gid)

    def processes(self) -> set[int]:
        """Host PIDs that belong to this sandbox (its cgroups; its uid when it has one of its own).
        Empty unless the sandbox is open: the slot's uid may belong to another sandbox by then."""
        if self._lock is None:
            return set()
        found = self._cgroups.pids() if self._cgroups else set()
        if self.switches_user:
            found.update(pids_of_uid(self.uid))
        return found

    def wait_gone(self, timeout: float = 5.0) -> set[int]:
        """Wait until no process of the sandbox is left (a PID namespace is torn down
        asynchronously after its init exits); returns those still there after ``timeout``."""
        end = time.monotonic() + timeout
        while True:
            left = {pid for pid in self.processes() if alive(pid)}
            if not left or time.monotonic() >= end:
                return left
            time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL every process of the sandbox (the PID namespace usually has done it already)."""
        for pid in self.processes():
            kill_pid(pid)

    def _sweep_uid(self) -> None:
        for _ in range(100):
            left = pids_of_uid(self.uid)
            if not left:
                return
            for pid in left:
                kill_pid(pid)
            time.sleep(0.05)

    def close(self) -> None:
        """Kill what is left, remove cgroups and runtime dir, give the workdir back to its owner."""
        if self._lock is None:  # never opened (or closed already): the slot is not ours to sweep
            return
        try:
            if self._cgroups:
                self._cgroups.destroy()
                self._cgroups = None
            if self.switches_user:
                self._sweep_uid()
            if self.runtime_dir is not None:
                unmount_under(self.runtime_dir)
                self.disk = None
                shutil.rmtree(self.runtime_dir, ignore_errors=True)
                self.runtime_dir = None
            if not self.caps.bwrap:  # the stand-in for the private /tmp
                shutil.rmtree(self.workdir / ".tmp", ignore_errors=True)
            if self._owner and self.switches_user and self.workdir.is_dir():
                self._chown_tree(self.workdir, *self._owner)
            self._owner = None
        finally:
            if self._lock is not None:
                os.close(self._lock)
                self._lock = None

    def __enter__(self) -> "Sandbox":
        return self.open()

    def __exit__(self, *exc: Any) -> None:
        self.close()


@dataclass
class SandboxResult:
    returncode: int
    stdout: str
    stderr: str
    timed_out: bool
    seconds: float
    leftover: set[int] = field(default_factory=set)  # processes of the sandbox alive when the command ended


def run_sandboxed(argv: list[str], workdir: str | os.PathLike, policy: SandboxPolicy | None = None,
                  timeout: float = 60, *, slot: int | None = None, env: Mapping[str, str] | None = None,
                  forbidden: Iterable[str | os.PathLike] = (), caps: Capabilities | None = None) -> SandboxResult:
    """Run a plain command in the sandbox, wait at most ``timeout`` seconds (then kill it), clean up."""
    start = time.perf_counter()
    with Sandbox(workdir, policy, slot, forbidden=forbidden, caps=caps) as box:
        proc = subprocess.Popen(box.argv(list(argv)), cwd=box.workdir, env=box.env(env), text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        timed_out = False
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            proc.kill()
            box.kill()
            out, err = proc.communicate()
        leftover = box.wait_gone(5.0)
    return SandboxResult(proc.returncode, out, err, timed_out, time.perf_counter() - start, leftover)


