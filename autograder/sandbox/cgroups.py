"""Cgroups: one memory and one pids cgroup per sandbox slot, and the process helpers around them.

:func:`probe_cgroups` finds where this process may create cgroups (v1 controllers or a v2 subtree
with memory and pids delegated). :class:`Cgroups` creates the slot's cgroups with the policy's
memory and process caps (the memory cap also counts the kernel's tmpfs: its /tmp and its working
directory), lists and kills their processes, and removes them. The kernel joins them before it
starts (the command line's ``echo $$ > cgroup.procs``, or the fork server's supervisor pid written
by the grader), so everything it starts is counted.
"""
from __future__ import annotations

import errno
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .policy import SandboxPolicy

CPU_PERIOD_US = 100_000  # the CFS period a CPU quota is a fraction of (the kernel's default)


@dataclass(frozen=True)
class CgroupKind:
    version: int                      # 1 or 2
    memory: Path | None               # the directory new memory cgroups go under
    pids: Path | None                 # the directory new pids cgroups go under (v1; same as memory on v2)
    cpu: Path | None = None           # the directory new cpu cgroups go under (only the hub's servers use it)


def _own_cgroup_paths() -> dict[str, str]:
    paths = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            paths[controller] = path
    return paths


def _cgroup_mounts() -> dict[str, Path]:
    mounts = {}
    for line in Path("/proc/self/mounts").read_text().splitlines():
        parts = line.split()
        if len(parts) < 4:
            continue
        if parts[2] == "cgroup2":
            mounts.setdefault("", Path(parts[1]))
        elif parts[2] == "cgroup":
            for option in parts[3].split(","):
                if option in ("memory", "pids", "cpu"):
                    mounts[option] = Path(parts[1])
    return mounts


def _writable_parent(base: Path) -> bool:
    probe = base / f"interplab-probe-{os.getpid()}"
    try:
        probe.mkdir()
    except OSError:
        return False
    try:
        probe.rmdir()
    except OSError:
        pass
    return True


def probe_cgroups() -> CgroupKind | None:
    if os.geteuid() != 0:
        return None
    try:
        mounts, own = _cgroup_mounts(), _own_cgroup_paths()
    except OSError:
        return None
    if "memory" in mounts or "pids" in mounts:  # v1
        memory = mounts.get("memory")
        memory = memory / own.get("memory", "/").lstrip("/") if memory else None
        pids = mounts.get("pids")
        pids = pids / own.get("pids", "/").lstrip("/") if pids else None
        cpu = mounts.get("cpu")
        cpu = cpu / own.get("cpu", "/").lstrip("/") if cpu else None
        memory = memory if memory and _writable_parent(memory) else None
        pids = pids if pids and _writable_parent(pids) else None
        cpu = cpu if cpu and _writable_parent(cpu) else None
        return CgroupKind(1, memory, pids, cpu) if memory or pids else None
    if "" in mounts:  # v2: a child of our own cgroup, if memory and pids are delegated to it
        base = mounts[""] / own.get("", "/").lstrip("/")
        try:
            enabled = (base / "cgroup.subtree_control").read_text().split()
        except OSError:
            return None
        if not _writable_parent(base):
            return None
        return CgroupKind(2, base if "memory" in enabled else None, base if "pids" in enabled else None,
                          base if "cpu" in enabled else None)
    return None




class Cgroups:
    """The memory and pids cgroups of one sandbox (v1 or v2)."""

    def __init__(self, kind: CgroupKind, name: str):
        self.kind = kind
        self.name = name
        self.dirs: dict[str, Path] = {}
        if kind.memory:
            self.dirs["memory"] = kind.memory / name
        if kind.pids and (kind.version == 1 or "memory" not in self.dirs):
            self.dirs["pids"] = kind.pids / name

    def create(self, policy: SandboxPolicy, cpus: float | None = None) -> None:
        """Create the cgroups with the policy's memory and process caps, and a CPU quota of ``cpus``
        cores where given and the cpu controller is available (``enforced`` says what is)."""
        if cpus is not None and self.kind.cpu and self.kind.version == 1:
            self.dirs["cpu"] = self.kind.cpu / self.name
        self.destroy()  # a stale one from a crashed grader
        for controller, path in self.dirs.items():
            path.mkdir()
        if self.kind.version == 1:
            if "memory" in self.dirs:
                _write(self.dirs["memory"] / "memory.limit_in_bytes", policy.memory)
                _write(self.dirs["memory"] / "memory.memsw.limit_in_bytes", policy.memory, missing_ok=True)
            if "pids" in self.dirs:
                _write(self.dirs["pids"] / "pids.max", policy.max_processes)
        else:
            path = next(iter(self.dirs.values()))
            if self.kind.memory:
                _write(path / "memory.max", policy.memory)
                _write(path / "memory.swap.max", 0, missing_ok=True)
            if self.kind.pids:
                _write(path / "pids.max", policy.max_processes)
            if cpus is not None and self.kind.cpu:
                _write(path / "cpu.max", f"{int(cpus * CPU_PERIOD_US)} {CPU_PERIOD_US}")
        if cpus is not None and "cpu" in self.dirs:
            _write(self.dirs["cpu"] / "cpu.cfs_period_us", CPU_PERIOD_US)
            _write(self.dirs["cpu"] / "cpu.cfs_quota_us", int(cpus * CPU_PERIOD_US))

    def enforced(self, cpus: float | None = None) -> list[str]:
        """The limits these cgroups enforce, in words (for the log, as the grading banner says it)."""
        found = [name for name, on in (("memory", "memory" in self.dirs), ("processes", bool(self.kind.pids)),
                                       ("cpu", cpus is not None and bool(self.kind.cpu))) if on]
        return [f"{name} (cgroup v{self.kind.version})" for name in found]

    @property
    def procs_files(self) -> list[Path]:
        return [p / "cgroup.procs" for p in dict.fromkeys(self.dirs.values())]

    def pids(self) -> set[int]:
        found = set()
        for procs in self.procs_files:
            try:
                found.update(int(x) for x in procs.read_text().split())
            except OSError:
                pass
        return found

    def destroy(self) -> None:
        for path in dict.fromkeys(self.dirs.values()):
            if not path.exists():
                continue
            for _ in range(50):
                for pid in self.pids():
                    kill_pid(pid)
                try:
                    path.rmdir()
                    break
                except OSError as exc:
                    if exc.errno == errno.ENOENT:
                        break
                    time.sleep(0.05)


def _write(path: Path, value: Any, missing_ok: bool = False) -> None:
    try:
        path.write_text(str(value))
    except FileNotFoundError:
        if not missing_ok:
            raise


def kill_pid(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def alive(pid: int) -> bool:
    """Running, not a zombie waiting to be reaped."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def pids_of_uid(uid: int) -> list[int]:
    """Host PIDs whose real uid is ``uid``."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/status") as status:
                for line in status:
                    if line.startswith("Uid:"):
                        if int(line.split()[1]) == uid:
                            found.append(int(entry.name))
                        break
        except OSError:
            continue
    return found


