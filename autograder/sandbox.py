"""The sandbox that grading kernels run in.

A student's notebook is arbitrary code. While it is graded it runs:

- in a fresh mount namespace (bubblewrap) that shows only its working directory (writable, also its
  home), the Python environment and system directories (read-only), a private /tmp, /proc and /dev;
  the course directory, the instructor store, the gradebook and other submissions are not there;
- in a private network namespace (no network; the kernel talks to the grader over unix sockets);
- in a private PID namespace whose init dies with the kernel, so nothing the kernel started
  outlives it;
- as an unprivileged user, one uid per slot (61000 + slot), so process limits are per sandbox;
- under rlimits (memory as RLIMIT_DATA, so Python raises MemoryError; processes; file size; CPU;
  open files; no core dumps) and, where cgroups are writable, a memory and process cap on the
  whole sandbox;
- with a per-notebook deadline (the kernel manager kills the sandbox) and a per-cell timeout (the
  notebook client's ``timeout``, see :attr:`SandboxPolicy.cell_timeout`).

Each mechanism is probed; where one is missing (not root, no bwrap, no cgroups) grading goes on
without it and :func:`banner` says so in WARNING lines.

Tools: ``bwrap`` (Debian package ``bubblewrap``) and util-linux ``setpriv``/``prlimit``/``unshare``.

Use: :class:`SandboxedKernelManager` as nbclient's ``kernel_manager_class`` (the working directory
is the ``cwd`` nbclient passes, i.e. ``resources["metadata"]["path"]``: give it a fresh folder, never
the submission's); :func:`run_sandboxed` for plain commands; :func:`banner` when grading starts.
"""
from __future__ import annotations

import errno
import fcntl
import functools
import importlib.util
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
UID_BASE = 61000
MAX_SLOTS = 1000
SANDBOX_USER = "student"
APT_PACKAGES = ("bubblewrap", "util-linux")

# Variables of the grader's environment that reach the kernel; everything else (tokens, host paths,
# JPY_PARENT_PID, whose parent poller would misfire inside a PID namespace) is dropped.
ENV_KEEP = {"LANG", "LANGUAGE", "TZ", "TERM", "MPLBACKEND", "PYTHONHASHSEED", "PYTHONUNBUFFERED",
            "PYTHONWARNINGS", "JPY_SESSION_NAME"}
ENV_KEEP_PREFIXES = ("INTERPLAB_", "HF_", "TRANSFORMERS_", "OMP_", "MKL_", "OPENBLAS_", "TORCH_",
                     "CUDA_", "NVIDIA_", "CUBLAS_", "LC_")
# /etc entries a Python process and its libraries may need; nothing with secrets.
ETC_FILES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "timezone", "nsswitch.conf",
             "alternatives", "fonts", "mime.types", "os-release")
SYSTEM_TOP = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
GPU_DEVICES = ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", "/dev/nvidia-modeset", "/dev/dri")


class SandboxError(RuntimeError):
    """The sandbox cannot be set up as asked (a person must fix the configuration)."""


# ----------------------------------------------------------------------------------------------
# Policy


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?B?)?\s*$", re.IGNORECASE)


def parse_size(value: int | float | str) -> int:
    """Bytes from ``4294967296``, ``"4GiB"``, ``"4G"``, ``"512MiB"``, ``"512 MB"`` (powers of 1024)."""
    if isinstance(value, bool):
        raise ValueError(f"expected a size like \"4GiB\", found {value!r}")
    if isinstance(value, (int, float)):
        return int(value)
    match = _SIZE.match(str(value))
    if not match:
        raise ValueError(f"expected a size like \"4GiB\" or \"512MiB\", found {value!r}")
    number, unit = float(match.group(1)), match.group(2).upper()
    return int(number * {"": 1, "K": KiB, "M": MiB, "G": GiB, "T": 1 << 40}[unit])


@dataclass(frozen=True)
class SandboxPolicy:
    """Limits of one grading kernel. ``from_settings`` reads the ``[grading]`` table of course.toml."""

    memory: int = 4 * GiB            # RLIMIT_DATA per process and the cgroup cap of the whole sandbox
    max_processes: int = 256         # processes + threads (RLIMIT_NPROC of the sandbox uid, cgroup pids.max)
    max_file_size: int = 1 * GiB     # RLIMIT_FSIZE: a larger write fails with EFBIG
    cpu_seconds: int | None = None   # RLIMIT_CPU of each process; None: notebook_timeout x CPU count
    open_files: int = 1024           # RLIMIT_NOFILE
    cell_timeout: int = 120          # seconds per cell (pass to NotebookClient/Execute ``timeout``)
    notebook_timeout: int = 900      # seconds per notebook (the kernel manager kills the sandbox)
    tmp_size: int = 512 * MiB        # size of the private /tmp and /dev/shm (counted in the memory cap)
    gpu: bool = False                # expose /dev/nvidia* and /dev/dri
    extra_ro_paths: tuple[str, ...] = ()  # more host paths the kernel may read (e.g. a dataset folder)
    uid_base: int = UID_BASE         # slot N runs as uid/gid uid_base + N

    SETTINGS_KEYS = ("memory_limit", "max_processes", "max_file_size", "cpu_seconds", "open_files",
                     "cell_timeout", "notebook_timeout", "tmp_size", "gpu", "extra_ro_paths")

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any] | None) -> "SandboxPolicy":
        """A policy from the ``[grading]`` table of course.toml (or the whole parsed file).

        Keys: memory_limit = "4GiB", max_processes = 256, max_file_size = "1GiB", cpu_seconds,
        open_files, cell_timeout = 120, notebook_timeout = 900, tmp_size = "512MiB", gpu = false,
        extra_ro_paths = [...]. Missing keys keep their defaults; other keys are ignored."""
        table = dict(settings or {})
        if isinstance(table.get("grading"), Mapping):
            table = dict(table["grading"])
        kw: dict[str, Any] = {}
        try:
            if "memory_limit" in table:
                kw["memory"] = parse_size(table["memory_limit"])
            for key in ("max_file_size", "tmp_size"):
                if key in table:
                    kw[key] = parse_size(table[key])
            for key in ("max_processes", "open_files", "cell_timeout", "notebook_timeout"):
                if key in table:
                    kw[key] = _positive_int(key, table[key])
            if table.get("cpu_seconds") is not None:
                kw["cpu_seconds"] = _positive_int("cpu_seconds", table["cpu_seconds"])
            if "gpu" in table:
                if not isinstance(table["gpu"], bool):
                    raise ValueError(f"gpu must be true or false, found {table['gpu']!r}")
                kw["gpu"] = table["gpu"]
            if "extra_ro_paths" in table:
                kw["extra_ro_paths"] = tuple(str(p) for p in table["extra_ro_paths"])
        except ValueError as exc:
            raise SandboxError(f"course.toml [grading]: {exc}") from exc
        return cls(**kw)

    @property
    def cpu_limit(self) -> int:
        return self.cpu_seconds if self.cpu_seconds is not None else self.notebook_timeout * (os.cpu_count() or 1)


def _positive_int(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{key} must be a positive whole number, found {value!r}")
    return value


# ----------------------------------------------------------------------------------------------
# What this machine offers


@dataclass(frozen=True)
class Capabilities:
    """The mechanisms available here. Tests (and admins) may pass a reduced set to force fallbacks."""

    root: bool
    bwrap: str | None      # path of a bwrap that works with the namespaces we ask for
    unshare: str | None    # util-linux unshare, the namespace fallback when bwrap is missing (root only)
    setpriv: str | None    # util-linux setpriv, to drop to the sandbox uid (root only)
    prlimit: str | None    # util-linux prlimit
    cgroups: "CgroupKind | None"
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class CgroupKind:
    version: int                      # 1 or 2
    memory: Path | None               # the directory new memory cgroups go under
    pids: Path | None                 # the directory new pids cgroups go under (v1; same as memory on v2)


@dataclass(frozen=True)
class Protection:
    name: str
    active: bool
    detail: str


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
                if option in ("memory", "pids"):
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


def _probe_cgroups() -> CgroupKind | None:
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
        memory = memory if memory and _writable_parent(memory) else None
        pids = pids if pids and _writable_parent(pids) else None
        return CgroupKind(1, memory, pids) if memory or pids else None
    if "" in mounts:  # v2: a child of our own cgroup, if memory and pids are delegated to it
        base = mounts[""] / own.get("", "/").lstrip("/")
        try:
            enabled = (base / "cgroup.subtree_control").read_text().split()
        except OSError:
            return None
        if not _writable_parent(base):
            return None
        return CgroupKind(2, base if "memory" in enabled else None, base if "pids" in enabled else None)
    return None


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
    notes = []
    bwrap, why = _probe_bwrap(shutil.which("bwrap"))
    if why:
        notes.append(why)
    return Capabilities(
        root=root, bwrap=bwrap,
        unshare=shutil.which("unshare") if root else None,
        setpriv=shutil.which("setpriv") if root else None,
        prlimit=shutil.which("prlimit"),
        cgroups=_probe_cgroups(),
        notes=tuple(notes),
    )


def ensure_tools(install: bool = False) -> list[str]:
    """The Debian packages this sandbox wants but that are missing; with ``install=True`` (as root,
    with apt-get) install them. The Makefile line is ``apt-get install -y bubblewrap util-linux``."""
    missing = []
    if not shutil.which("bwrap"):
        missing.append("bubblewrap")
    if not all(shutil.which(tool) for tool in ("setpriv", "prlimit", "unshare")):
        missing.append("util-linux")
    if missing and install and os.geteuid() == 0 and shutil.which("apt-get"):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", *missing], check=True, env=env)
        probe.cache_clear()
        return ensure_tools(install=False)
    return missing


def protections(policy: SandboxPolicy | None = None, caps: Capabilities | None = None) -> list[Protection]:
    """Which protections a grading kernel gets here, each active or not, with why."""
    policy = policy or SandboxPolicy()
    caps = caps or probe()
    ns = caps.bwrap or (caps.unshare if caps.root else None)
    ns_how = "bwrap" if caps.bwrap else ("util-linux unshare" if ns else "")
    no_ns = "; ".join(caps.notes) or "no bwrap"
    limits = (f"memory {_fmt(policy.memory)} (RLIMIT_DATA: MemoryError), file size {_fmt(policy.max_file_size)}, "
              f"CPU {policy.cpu_limit} s, open files {policy.open_files}, no core dumps")
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
        Protection("unprivileged user", bool(caps.root and caps.setpriv),
                   f"setpriv: uid/gid {policy.uid_base}+slot, no capabilities, no_new_privs" if caps.root and caps.setpriv else
                   f"not root (or no setpriv): the kernel runs as the grader's own user (uid {os.geteuid()})"),
        Protection("resource limits", bool(caps.prlimit),
                   f"prlimit: {limits}" if caps.prlimit else "prlimit missing: no memory, file size or CPU limits"),
        Protection("process limit", bool(caps.prlimit and caps.root and caps.setpriv) or bool(cg and cg.pids),
                   f"at most {policy.max_processes} processes+threads"
                   + (" (RLIMIT_NPROC of the slot's uid)" if caps.prlimit and caps.root and caps.setpriv else "")
                   + (f" (cgroup v{cg.version} pids)" if cg and cg.pids else "")
                   if (caps.prlimit and caps.root and caps.setpriv) or (cg and cg.pids) else
                   "no process limit (needs root for a per-sandbox uid or a writable pids cgroup): a fork bomb is not contained"),
        Protection("sandbox memory cap (cgroup)", bool(cg and cg.memory),
                   f"cgroup v{cg.version}: all processes together at most {_fmt(policy.memory)}" if cg and cg.memory else
                   "no writable memory cgroup: memory is limited per process only"),
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


def _fmt(size: int) -> str:
    for unit, scale in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if size >= scale and size % scale == 0:
            return f"{size // scale} {unit}"
    return f"{size} B"


# ----------------------------------------------------------------------------------------------
# The command line


def python_paths(packages: Iterable[str] = ("interplab",)) -> list[str]:
    """Host paths the kernel's Python needs read-only: the environment's prefixes (and the real
    paths they resolve to) and the source folders of editable installs such as ``interplab``."""
    paths = []
    for p in (sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix, os.path.dirname(sys.executable)):
        paths += [os.path.abspath(p), os.path.realpath(p)]
    paths.append(os.path.dirname(os.path.realpath(sys.executable)))
    for name in packages:
        spec = importlib.util.find_spec(name)
        if spec is None:
            continue
        for location in spec.submodule_search_locations or ([os.path.dirname(spec.origin)] if spec.origin else []):
            paths += [os.path.abspath(location), os.path.realpath(location)]
    return _dedupe_nested([p for p in paths if os.path.exists(p)])


def _dedupe_nested(paths: Iterable[str]) -> list[str]:
    """Sorted, without paths that lie inside another one of the list."""
    kept: list[str] = []
    for p in sorted(set(paths), key=lambda s: (s.count("/"), s)):
        if not any(_inside(p, k) for k in kept):
            kept.append(p)
    return sorted(kept)


def _inside(path: str, folder: str) -> bool:
    """``path`` is ``folder`` or lies under it."""
    folder = folder.rstrip("/") or "/"
    return path == folder or path.startswith(folder + "/") or folder == "/"


def _ancestors(path: str) -> list[str]:
    parts = Path(path).parts[1:-1]
    return ["/" + "/".join(parts[: i + 1]) for i in range(len(parts))]


def sandbox_uid(policy: SandboxPolicy, slot: int, caps: Capabilities | None = None) -> tuple[int, int]:
    caps = caps or probe()
    if caps.root and caps.setpriv:
        return policy.uid_base + slot, policy.uid_base + slot
    return os.getuid(), os.getgid()


def sandbox_argv(argv: list[str], workdir: str | os.PathLike, policy: SandboxPolicy | None = None, slot: int = 0, *,
                 runtime_dir: str | os.PathLike | None = None, cgroup_procs: Iterable[Path] = (),
                 forbidden: Iterable[str | os.PathLike] = (), caps: Capabilities | None = None) -> list[str]:
    """``argv`` wrapped so that it runs in the sandbox of ``slot`` with cwd and HOME ``workdir``.

    Pure: it builds a command line and touches nothing. :class:`Sandbox` prepares what the command
    expects (``workdir`` owned by the slot's uid, the ``runtime_dir`` with /etc/passwd and the IPC
    sockets, the cgroups whose ``cgroup.procs`` files are given) and cleans up afterwards. Raises
    :class:`SandboxError` if a path the sandbox would show contains one of ``forbidden`` or
    ``workdir``'s parent."""
    policy = policy or SandboxPolicy()
    caps = caps or probe()
    workdir = os.path.abspath(workdir)
    uid, gid = sandbox_uid(policy, slot, caps)
    inner = list(argv)
    if caps.root and caps.setpriv:
        inner = [caps.setpriv, f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--inh-caps=-all",
                 "--bounding-set=-all", "--no-new-privs", "--", *inner]
    if caps.prlimit:
        limits = [f"--data={policy.memory}", f"--fsize={policy.max_file_size}", f"--nofile={policy.open_files}",
                  f"--cpu={policy.cpu_limit}:{policy.cpu_limit + 5}", "--core=0"]
        if caps.root and caps.setpriv:  # RLIMIT_NPROC counts per uid: only meaningful with the slot's own uid
            limits.append(f"--nproc={policy.max_processes}")
        inner = [caps.prlimit, *limits, "--", *inner]

    if caps.bwrap:
        ro = python_paths() + [os.path.abspath(p) for p in policy.extra_ro_paths]
        rw = [workdir] + ([os.path.abspath(runtime_dir)] if runtime_dir else [])
        _check_exposure(ro, rw, workdir, [os.path.abspath(p) for p in forbidden])
        outer = _bwrap_args(caps.bwrap, policy, ro, rw, runtime_dir, workdir) + ["--", *inner]
    elif caps.root and caps.unshare:
        outer = [caps.unshare, "--net", "--pid", "--ipc", "--uts", "--fork", "--kill-child=SIGKILL",
                 "--mount-proc", "--", *inner]
    else:
        outer = inner
    procs = [str(p) for p in cgroup_procs]
    if procs:  # join the sandbox's cgroups first: everything started below inherits them
        joins = " && ".join(f"echo $$ > {shlex.quote(p)}" for p in procs)
        outer = ["/bin/sh", "-c", f'{joins} && exec "$@"', "sandbox", *outer]
    return outer


def _check_exposure(ro: list[str], rw: list[str], workdir: str, forbidden: list[str]) -> None:
    parent = os.path.dirname(workdir)
    for path in ro + rw:
        if path != workdir and _inside(parent, path):
            raise SandboxError(f"the sandbox would show {path}, which contains the working directory's parent "
                               f"{parent} (other submissions); move the working directory or the Python environment")
        for hidden in forbidden:
            if _inside(hidden, path) or _inside(path, hidden):
                raise SandboxError(f"the sandbox would show {path}, which overlaps {hidden} (must stay hidden)")


def _bwrap_args(bwrap: str, policy: SandboxPolicy, ro: list[str], rw: list[str], runtime_dir: Any,
                workdir: str) -> list[str]:
    args = [bwrap, "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
            "--die-with-parent", "--new-session", "--hostname", "sandbox"]
    mounted: list[str] = []   # every mount point
    binds: list[str] = []     # bind mounts: what lies under them exists already (and may be read-only)
    made: set[str] = set()

    def need_parents(dest: str) -> None:  # bwrap would create missing parents with mode 0700
        for ancestor in _ancestors(dest):
            if ancestor in made or ancestor in mounted or any(_inside(ancestor, b) for b in binds):
                continue
            args.extend(["--perms", "0755", "--dir", ancestor])
            made.add(ancestor)

    args += ["--ro-bind", "/usr", "/usr"]
    mounted.append("/usr")
    binds.append("/usr")
    for top in SYSTEM_TOP:
        host = Path("/") / top
        if host.is_symlink():
            args += ["--symlink", os.readlink(host), str(host)]
        elif host.is_dir():
            args += ["--ro-bind", str(host), str(host)]
            mounted.append(str(host))
            binds.append(str(host))
    args += ["--perms", "0755", "--dir", "/etc"]
    made.add("/etc")
    for name in ETC_FILES:
        args += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    if runtime_dir:
        for name in ("passwd", "group", "hosts"):
            args += ["--ro-bind-try", str(Path(runtime_dir) / "etc" / name), f"/etc/{name}"]
    args += ["--proc", "/proc", "--dev", "/dev",
             "--perms", "1777", "--size", str(policy.tmp_size), "--tmpfs", "/tmp",
             "--perms", "1777", "--size", str(policy.tmp_size), "--tmpfs", "/dev/shm"]
    mounted += ["/proc", "/dev", "/tmp"]
    if policy.gpu:
        devices = sorted(str(p) for p in Path("/dev").glob("nvidia[0-9]*")) + list(GPU_DEVICES)
        for device in devices:
            args += ["--dev-bind-try", device, device]
    for path in ro:
        if any(_inside(path, b) for b in binds):
            continue  # already visible through a read-only mount above it
        need_parents(path)
        args += ["--ro-bind", path, path]
        mounted.append(path)
        binds.append(path)
    for path in rw:
        need_parents(path)
        args += ["--bind", path, path]
        mounted.append(path)
        binds.append(path)
    # jupyter_client sets JPY_PARENT_PID (the grader's host pid) after our env filter; inside the PID
    # namespace the kernel's parent is bwrap's init, pid 1, and ipykernel's parent poller would take
    # the mismatch for an orphaned kernel. 1 is what ipykernel treats as "no parent to poll".
    args += ["--chdir", workdir, "--setenv", "JPY_PARENT_PID", "1"]
    return args


def sandbox_env(env: Mapping[str, str] | None, workdir: str | os.PathLike, policy: SandboxPolicy | None = None,
                slot: int = 0, caps: Capabilities | None = None) -> dict[str, str]:
    """The kernel's environment: the allow-listed variables of ``env`` (grading mode, hidden seed,
    thread counts, locale), HOME = ``workdir``, caches in the private /tmp, nothing else."""
    policy = policy or SandboxPolicy()
    env = dict(os.environ if env is None else env)
    kept = {k: v for k, v in env.items() if k in ENV_KEEP or k.startswith(ENV_KEEP_PREFIXES)}
    uid, _ = sandbox_uid(policy, slot, caps)
    isolated = bool((caps or probe()).bwrap)
    tmp = "/tmp" if isolated else os.path.join(str(workdir), ".tmp")
    bindir = os.path.dirname(os.path.abspath(sys.executable))
    kept.update({
        "HOME": str(os.path.abspath(workdir)),
        "USER": SANDBOX_USER if uid != os.getuid() else env.get("USER", SANDBOX_USER),
        "LOGNAME": SANDBOX_USER if uid != os.getuid() else env.get("LOGNAME", SANDBOX_USER),
        "PATH": os.pathsep.join([bindir, "/usr/local/bin", "/usr/bin", "/bin"]),
        "TMPDIR": tmp,
        "IPYTHONDIR": os.path.join(tmp, ".ipython"),
        "MPLCONFIGDIR": os.path.join(tmp, ".matplotlib"),
        "XDG_CACHE_HOME": os.path.join(tmp, ".cache"),
        "XDG_CONFIG_HOME": os.path.join(tmp, ".config"),
        "PYTHONNOUSERSITE": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "HF_HUB_OFFLINE": "1",
    })
    return kept


# ----------------------------------------------------------------------------------------------
# Cgroups


class _Cgroups:
    """The memory and pids cgroups of one sandbox (v1 or v2)."""

    def __init__(self, kind: CgroupKind, name: str):
        self.kind = kind
        self.dirs: dict[str, Path] = {}
        if kind.memory:
            self.dirs["memory"] = kind.memory / name
        if kind.pids and (kind.version == 1 or "memory" not in self.dirs):
            self.dirs["pids"] = kind.pids / name

    def create(self, policy: SandboxPolicy) -> None:
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
                    _kill(pid)
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


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _alive(pid: int) -> bool:
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


# ----------------------------------------------------------------------------------------------
# One sandbox's lifetime


def _runtime_root() -> Path:
    if os.geteuid() == 0:
        for base in (Path("/run/interplab-sandbox"), Path(tempfile.gettempdir()) / "interplab-sandbox-0"):
            try:
                base.mkdir(mode=0o755, exist_ok=True)
                st = base.lstat()
                if st.st_uid == 0 and not base.is_symlink():
                    os.chmod(base, 0o755)
                    return base
            except OSError:
                continue
        raise SandboxError("cannot create a runtime directory for the sandbox under /run or the temp dir")
    base = Path(tempfile.gettempdir()) / f"interplab-sandbox-{os.getuid()}"
    base.mkdir(mode=0o700, exist_ok=True)
    st = base.lstat()
    if st.st_uid != os.getuid() or base.is_symlink():
        raise SandboxError(f"{base} exists and is not ours; remove it")
    return base


class Sandbox:
    """The sandbox of one slot around one working directory: ``open()`` prepares it (a short
    runtime dir for sockets and /etc/passwd, the workdir owned by the slot's uid, cgroups, a lock so
    a slot serves one sandbox at a time), :meth:`argv`/:meth:`env` wrap commands, ``close()`` kills
    whatever is left of it and gives the workdir back. Use as a context manager."""

    def __init__(self, workdir: str | os.PathLike, policy: SandboxPolicy | None = None, slot: int | None = None, *,
                 forbidden: Iterable[str | os.PathLike] = (), caps: Capabilities | None = None):
        self.workdir = Path(workdir).resolve()
        self.policy = policy or SandboxPolicy()
        self.slot = None if slot is None else int(slot)  # None: the first free slot, chosen by open()
        self.forbidden = [str(Path(p).resolve()) for p in forbidden]
        self.caps = caps or probe()
        self.uid, self.gid = sandbox_uid(self.policy, self.slot or 0, self.caps)
        self.runtime_dir: Path | None = None
        self._lock: int | None = None
        self._owner: tuple[int, int] | None = None
        self._cgroups: _Cgroups | None = None

    @property
    def switches_user(self) -> bool:
        return bool(self.caps.root and self.caps.setpriv)

    def open(self) -> "Sandbox":
        if self.runtime_dir is not None:
            return self
        if not self.workdir.is_dir():
            raise SandboxError(f"working directory {self.workdir} does not exist")
        sandbox_argv(["true"], self.workdir, self.policy, self.slot or 0, forbidden=self.forbidden, caps=self.caps)  # checks only
        root = _runtime_root()
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
                shutil.rmtree(runtime)
            (runtime / "etc").mkdir(parents=True)
            self._write_etc(runtime / "etc")
            os.chmod(runtime, 0o700)
            self._chown_tree(runtime, self.uid, self.gid, only_top=True)
            self.runtime_dir = runtime
            st = self.workdir.stat()
            self._owner = (st.st_uid, st.st_gid)
            if self.switches_user:
                self._chown_tree(self.workdir, self.uid, self.gid)
            if self.caps.cgroups:
                self._cgroups = _Cgroups(self.caps.cgroups, f"interplab-sandbox-slot-{self.slot}")
                self._cgroups.create(self.policy)
        except BaseException:
            self.close()
            raise
        return self

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
                            cgroup_procs=self._cgroups.procs_files if self._cgroups else (),
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
            left = {pid for pid in self.processes() if _alive(pid)}
            if not left or time.monotonic() >= end:
                return left
            time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL every process of the sandbox (the PID namespace usually has done it already)."""
        for pid in self.processes():
            _kill(pid)

    def _sweep_uid(self) -> None:
        for _ in range(100):
            left = pids_of_uid(self.uid)
            if not left:
                return
            for pid in left:
                _kill(pid)
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


# ----------------------------------------------------------------------------------------------
# The kernel manager

from jupyter_client.kernelspec import KernelSpec  # noqa: E402
from jupyter_client.manager import AsyncKernelManager  # noqa: E402
from traitlets import Bool, Dict, Instance, Integer, List, Unicode, default  # noqa: E402

_BANNER_SHOWN = False


class SandboxedKernelManager(AsyncKernelManager):
    """An ipykernel started in the sandbox of ``slot``, its working directory the ``cwd`` given to
    ``start_kernel`` (nbclient passes the notebook's folder), talking over unix sockets.

    ``policy`` defaults to ``SandboxPolicy.from_settings(grading_settings)``; configure it from
    nbgrader_config.py with ``c.SandboxedKernelManager.grading_settings = {...course.toml [grading]...}``,
    ``c.SandboxedKernelManager.slot = N`` and ``forbidden_paths`` (checked never to be shown)."""

    slot = Integer(None, allow_none=True,
                   help="sandbox slot (uid/gid uid_base + slot); None: the first free one").tag(config=True)
    grading_settings = Dict(help="the [grading] table of course.toml").tag(config=True)
    forbidden_paths = List(Unicode(), help="host paths the sandbox must never show").tag(config=True)
    workdir = Unicode("", help="the kernel's working directory (default: the cwd given to start_kernel)").tag(config=True)
    show_banner = Bool(True, help="log the protections banner once per process").tag(config=True)
    policy = Instance(SandboxPolicy)
    sandbox = Instance(Sandbox, allow_none=True)
    notebook_timed_out = Bool(False)

    @default("policy")
    def _policy_default(self) -> SandboxPolicy:
        return SandboxPolicy.from_settings(self.grading_settings)

    @default("transport")
    def _transport_default(self) -> str:
        return "ipc"  # the kernel has no network: unix sockets on a shared bind mount

    @property
    def kernel_spec(self) -> KernelSpec:
        if self._kernel_spec is None:
            self._kernel_spec = KernelSpec(
                argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                display_name="Python 3 (grading sandbox)", language="python",
                interrupt_mode="message",  # a signal would reach bwrap, not the kernel
                metadata={"debugger": False})
        return self._kernel_spec

    def _show_banner_once(self, *extra: str) -> None:
        """Log the protections banner (and ``extra`` lines) once per process."""
        global _BANNER_SHOWN
        if self.show_banner and not _BANNER_SHOWN:
            _BANNER_SHOWN = True
            for line in [*banner(self.policy).splitlines(), *extra]:
                (self.log.warning if line.startswith("WARNING") else self.log.info)(line)

    async def _async_pre_start_kernel(self, **kw: Any):
        self._show_banner_once()
        workdir = self.workdir or kw.get("cwd") or os.getcwd()
        if self.sandbox is None:
            self.sandbox = Sandbox(workdir, self.policy, self.slot, forbidden=self.forbidden_paths).open()
        assert self.sandbox.runtime_dir is not None
        self.transport = "ipc"
        self.ip = str(self.sandbox.runtime_dir / "kernel")
        self.connection_file = str(self.sandbox.runtime_dir / "kernel.json")
        kw["cwd"] = str(self.sandbox.workdir)
        kw["env"] = self.sandbox.env(kw.get("env"))
        cmd, kw = await super()._async_pre_start_kernel(**kw)
        return self.sandbox.argv(cmd), kw

    def write_connection_file(self, **kwargs: Any) -> None:
        super().write_connection_file(**kwargs)
        if self.sandbox is not None and os.path.exists(self.connection_file):
            self.sandbox.chown_for_sandbox(self.connection_file)

    async def _async_post_start_kernel(self, **kw: Any) -> None:
        await super()._async_post_start_kernel(**kw)
        previous = getattr(self, "_deadline", None)
        if previous is not None:  # a restart: the new kernel gets its own deadline
            previous.cancel()
        self._deadline = threading.Timer(self.policy.notebook_timeout, self._expire)
        self._deadline.daemon = True
        self._deadline.start()

    def _expire(self) -> None:
        self.notebook_timed_out = True
        self.log.warning("notebook timeout (%s s): killing the grading sandbox", self.policy.notebook_timeout)
        box = self.sandbox  # read once: the event loop's thread may close it meanwhile
        if box is not None:
            box.kill()

    async def _async_is_alive(self) -> bool:
        alive = await super()._async_is_alive()
        if not alive and self.has_kernel and self.sandbox is not None and not self.shutting_down:
            # The kernel died (notebook deadline, CPU limit, crash). nbclient then skips
            # shutdown_kernel, so tear the sandbox down here: cgroups, runtime dir, slot lock, workdir.
            self._close_sandbox()
        return alive

    def _close_sandbox(self) -> None:
        deadline = getattr(self, "_deadline", None)
        if deadline is not None:
            deadline.cancel()
        if self.sandbox is not None:
            self.sandbox.close()
            self.sandbox = None

    async def _async_cleanup_resources(self, restart: bool = False) -> None:
        await super()._async_cleanup_resources(restart=restart)
        if restart and self.sandbox is not None:
            self.sandbox.kill()
        else:
            self._close_sandbox()

    def sandbox_processes(self) -> set[int]:
        return self.sandbox.processes() if self.sandbox is not None else set()
