"""What this machine offers, which protections a grading kernel therefore gets, and the banner.

:func:`probe` finds, once per process, the isolation mechanisms that work here (root, a bwrap that
can create namespaces, util-linux setpriv/prlimit/unshare, writable cgroups) as a
:class:`Capabilities`. :func:`protections` turns a policy and those capabilities into the list of
protections, each on or off with why; :func:`banner` prints them when grading starts (inactive ones
as WARNING lines). :func:`require_isolation` is the refusal rule: where a kernel cannot be isolated
(no bwrap, not root, no setpriv) grading stops with one line, unless the instructor set
``allow_unsandboxed = true``.
"""
from __future__ import annotations

import functools
import os
import shutil
import subprocess
from dataclasses import dataclass

from .cgroups import CgroupKind, probe_cgroups
from .policy import SandboxError, SandboxPolicy, format_size


@dataclass(frozen=True)
class Capabilities:
    """The mechanisms available here. Tests (and admins) may pass a reduced set to force fallbacks."""

    root: bool
    bwrap: str | None      # path of a bwrap that works with the namespaces we ask for
    unshare: str | None    # util-linux unshare, the namespace fallback when bwrap is missing (root only)
    setpriv: str | None    # util-linux setpriv, to drop to the sandbox uid (root only)
    prlimit: str | None    # util-linux prlimit
    cgroups: CgroupKind | None
    notes: tuple[str, ...] = ()

    @property
    def isolated(self) -> bool:
        """A kernel gets its own filesystem view, network, PID namespace and uid."""
        return bool(self.root and self.bwrap and self.setpriv)

    def missing(self) -> list[str]:
        """What isolation lacks here, in words."""
        return [what for what, ok in (("root", self.root), ("a working bwrap (apt-get install bubblewrap; "
                                      "user namespaces)", self.bwrap), ("util-linux setpriv", self.setpriv)) if not ok]


@dataclass(frozen=True)
class Protection:
    name: str
    active: bool
    detail: str


def _probe_bwrap(path: str | None) -> tuple[str | None, str]:
    if not path:
        return None, "bwrap not found (apt-get install bubblewrap)"
    cmd = [path, "--unshare-pid", "--unshare-net", "--unshare-ipc", "--die-with-parent", "--new-session",
           "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev", "--", "true"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"bwrap does not run: {exc}"
    if proc.returncode != 0:
        return None, f"bwrap cannot create namespaces here: {proc.stderr.strip()[:200]}"
    return path, ""


@functools.lru_cache(maxsize=1)
def probe() -> Capabilities:
    """Probe once per process which isolation mechanisms work on this machine."""
    root = os.geteuid() == 0
    bwrap, why = _probe_bwrap(shutil.which("bwrap"))
    return Capabilities(
        root=root, bwrap=bwrap,
        unshare=shutil.which("unshare") if root else None,
        setpriv=shutil.which("setpriv") if root else None,
        prlimit=shutil.which("prlimit"),
        cgroups=probe_cgroups(),
        notes=(why,) if why else (),
    )


def require_isolation(policy: SandboxPolicy, caps: Capabilities | None = None) -> None:
    """Refuse to grade where kernels cannot be isolated, unless the instructor allowed it."""
    caps = caps or probe()
    if not caps.isolated and not policy.allow_unsandboxed:
        raise SandboxError(f"grading refused: kernels cannot be isolated here (missing {', '.join(caps.missing())}); "
                           "run the grader as root with bubblewrap, or set allow_unsandboxed = true in course.toml "
                           "[grading] (interplab grade --allow-unsandboxed) to grade without isolation")


def protections(policy: SandboxPolicy | None = None, caps: Capabilities | None = None) -> list[Protection]:
    """Which protections a grading kernel gets here, each active or not, with why."""
    policy = policy or SandboxPolicy()
    caps = caps or probe()
    ns = caps.bwrap or (caps.unshare if caps.root else None)
    ns_how = "bwrap" if caps.bwrap else ("util-linux unshare" if ns else "")
    no_ns = "; ".join(caps.notes) or "no bwrap"
    own_uid = bool(caps.root and caps.setpriv)
    limits = (f"memory {format_size(policy.memory)} (RLIMIT_DATA: MemoryError), file size "
              f"{format_size(policy.max_file_size)}, CPU {policy.cpu_limit} s, open files {policy.open_files}, "
              "no core dumps")
    cg = caps.cgroups
    return [
        Protection("filesystem isolation", bool(caps.bwrap),
                   "bwrap: only the working directory is writable; course directory, instructor store, "
                   "gradebook and other submissions are not visible" if caps.bwrap else
                   f"{no_ns}: the kernel can read every file its user can read, including the course directory"),
        Protection("private network namespace", bool(ns),
                   f"{ns_how}: no network, not even the grader's loopback" if ns else
                   "no bwrap and not root: the kernel can reach the network and local services"),
        Protection("private PID namespace", bool(ns),
                   f"{ns_how}: every process the kernel starts dies with it" if ns else
                   "processes the kernel starts may outlive grading (only killed by uid/cgroup sweep)"),
        Protection("unprivileged user", own_uid,
                   f"setpriv: uid/gid {policy.uid_base}+slot, no capabilities, no_new_privs" if own_uid else
                   f"not root (or no setpriv): the kernel runs as the grader's own user (uid {os.geteuid()})"),
        Protection("resource limits", bool(caps.prlimit),
                   f"prlimit: {limits}" if caps.prlimit else "prlimit missing: no memory, file size or CPU limits"),
        Protection("process limit", bool(caps.prlimit and own_uid) or bool(cg and cg.pids),
                   f"at most {policy.max_processes} processes+threads"
                   + (" (RLIMIT_NPROC of the slot's uid)" if caps.prlimit and own_uid else "")
                   + (f" (cgroup v{cg.version} pids)" if cg and cg.pids else "")
                   if (caps.prlimit and own_uid) or (cg and cg.pids) else
                   "no process limit (needs root for a per-sandbox uid or a writable pids cgroup): a fork bomb is not contained"),
        Protection("sandbox memory cap (cgroup)", bool(cg and cg.memory),
                   f"cgroup v{cg.version}: all processes and their tmpfs together at most {format_size(policy.memory)}"
                   if cg and cg.memory else "no writable memory cgroup: memory is limited per process only"),
        Protection("disk limit", bool(caps.root and caps.bwrap),
                   f"tmpfs: working directory at most {format_size(policy.disk_limit)}, /tmp at most "
                   f"{format_size(policy.tmp_size)}, each at most {policy.disk_inodes} files; the host disk is "
                   "never written" if caps.root and caps.bwrap else
                   "not root with bwrap: the kernel writes to the host disk (only RLIMIT_FSIZE per file)"),
        Protection("output caps", True,
                   f"{format_size(policy.max_cell_output)} per cell, {format_size(policy.max_notebook_output)} per "
                   f"notebook, check results {format_size(policy.max_check_output)} (test cells only); the kernel "
                   "is stopped at a cap"),
        Protection("per-cell timeout", True, f"{policy.cell_timeout} s (notebook client timeout, then interrupt)"),
        Protection("per-notebook timeout", True, f"{policy.notebook_timeout} s (the sandbox is killed)"),
    ]


def banner(policy: SandboxPolicy | None = None, caps: Capabilities | None = None) -> str:
    """Lines to print when grading starts: every protection, inactive ones as WARNING lines."""
    items = protections(policy, caps)
    active = sum(p.active for p in items)
    lines = [f"Grading sandbox: {active} of {len(items)} protections active"]
    for p in items:
        if p.active:
            lines.append(f"  [on]  {p.name}: {p.detail}")
        else:
            lines.append(f"WARNING: [OFF] {p.name.upper()} IS OFF: {p.detail}")
    if active < len(items):
        lines.append("WARNING: grading goes on with the protections above OFF; run the grader as root with "
                     "bubblewrap installed (apt-get install -y bubblewrap util-linux) to turn them on")
    return "\n".join(lines)
