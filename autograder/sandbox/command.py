"""The command line and environment of a sandboxed process (pure: builds lists, touches nothing).

:func:`sandbox_argv` wraps a command: bwrap (mount, network, PID, IPC and UTS namespaces; only the
system and Python directories read-only and the working directory and runtime dir read-write),
prlimit (the policy's rlimits), setpriv (the slot's uid, no capabilities, no_new_privs) and the
cgroup join, outermost first. Where the working directory and /tmp are the sandbox's own tmpfs
(:class:`Disk`, mounted by :class:`~.box.Sandbox`), they are bound in from there, so the kernel
never writes to the host disk. :func:`sandbox_env` is the kernel's environment (an allow-list of
the grader's, HOME the working directory, caches in /tmp), :func:`server_env` the fork server's
(the same allow-list without grading data such as the hidden seed). The fork server reuses
:func:`bwrap_args` and :func:`check_exposure` for its own sandbox.
"""
from __future__ import annotations

import importlib.util
import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from .policy import SANDBOX_USER, SandboxError, SandboxPolicy
from .protections import Capabilities, probe

# Variables of the grader's environment that reach the kernel; everything else (tokens, host paths,
# JPY_PARENT_PID, whose parent poller would misfire inside a PID namespace) is dropped.
ENV_KEEP = {"LANG", "LANGUAGE", "TZ", "TERM", "MPLBACKEND", "PYTHONHASHSEED", "PYTHONUNBUFFERED",
            "PYTHONWARNINGS", "JPY_SESSION_NAME"}
ENV_KEEP_PREFIXES = ("INTERPLAB_", "HF_", "TRANSFORMERS_", "OMP_", "MKL_", "OPENBLAS_", "TORCH_",
                     "CUDA_", "NVIDIA_", "CUBLAS_", "LC_")
# The fork server imports modules once for every kernel: nothing of one grading run may reach it.
SERVER_ENV_DROP = ("INTERPLAB_", "JPY_", "TERM")
SERVER_ENV_NEVER = ("TOKEN", "SECRET", "SEED", "PASSWORD", "KEY")
# /etc entries a Python process and its libraries may need; nothing with secrets.
ETC_FILES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "timezone", "nsswitch.conf",
             "alternatives", "fonts", "mime.types", "os-release")
SYSTEM_TOP = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
GPU_DEVICES = ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", "/dev/nvidia-modeset", "/dev/dri")
PRLIMIT_FLAGS = {"RLIMIT_DATA": "--data", "RLIMIT_FSIZE": "--fsize", "RLIMIT_NOFILE": "--nofile",
                 "RLIMIT_CPU": "--cpu", "RLIMIT_CORE": "--core", "RLIMIT_NPROC": "--nproc"}


@dataclass(frozen=True)
class Disk:
    """Host folders on the sandbox's own tmpfs, bound in as the working directory and /tmp."""

    work: Path
    tmp: Path


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
        if not any(inside(p, k) for k in kept):
            kept.append(p)
    return sorted(kept)


def inside(path: str, folder: str) -> bool:
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
                 disk: Disk | None = None, forbidden: Iterable[str | os.PathLike] = (), caps: Capabilities | None = None) -> list[str]:
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
        limits = [f"{PRLIMIT_FLAGS[name]}={soft}:{hard}"
                  for name, (soft, hard) in policy.rlimits(own_uid=bool(caps.root and caps.setpriv)).items()]
        inner = [caps.prlimit, *limits, "--", *inner]

    if caps.bwrap:
        ro = python_paths() + [os.path.abspath(p) for p in policy.extra_ro_paths]
        rw = [workdir] + ([os.path.abspath(runtime_dir)] if runtime_dir else [])
        check_exposure(ro, rw, workdir, [os.path.abspath(p) for p in forbidden])
        outer = bwrap_args(caps.bwrap, policy, ro, rw, runtime_dir, workdir, disk) + ["--", *inner]
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


def check_exposure(ro: list[str], rw: list[str], workdir: str, forbidden: list[str]) -> None:
    parent = os.path.dirname(workdir)
    for path in ro + rw:
        if path != workdir and inside(parent, path):
            raise SandboxError(f"the sandbox would show {path}, which contains the working directory's parent "
                               f"{parent} (other submissions); move the working directory or the Python environment")
        for hidden in forbidden:
            if inside(hidden, path) or inside(path, hidden):
                raise SandboxError(f"the sandbox would show {path}, which overlaps {hidden} (must stay hidden)")


def bwrap_args(bwrap: str, policy: SandboxPolicy, ro: list[str], rw: list[str], runtime_dir: Any,
                workdir: str, disk: Disk | None = None) -> list[str]:
    """bwrap's arguments: ``ro`` bound read-only, ``rw`` read-write (``workdir`` from ``disk.work``
    when the sandbox has its own tmpfs), a private /tmp (``disk.tmp``, else a bwrap tmpfs)."""
    args = [bwrap, "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
            "--die-with-parent", "--new-session", "--hostname", "sandbox"]
    mounted: list[str] = []   # every mount point
    binds: list[str] = []     # bind mounts: what lies under them exists already (and may be read-only)
    made: set[str] = set()

    def need_parents(dest: str) -> None:  # bwrap would create missing parents with mode 0700
        for ancestor in _ancestors(dest):
            if ancestor in made or ancestor in mounted or any(inside(ancestor, b) for b in binds):
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
    args += ["--proc", "/proc", "--dev", "/dev"]
    args += ["--bind", str(disk.tmp), "/tmp"] if disk else ["--perms", "1777", "--size", str(policy.tmp_size), "--tmpfs", "/tmp"]
    args += ["--perms", "1777", "--size", str(policy.tmp_size), "--tmpfs", "/dev/shm"]
    mounted += ["/proc", "/dev", "/tmp"]
    if policy.gpu:
        devices = sorted(str(p) for p in Path("/dev").glob("nvidia[0-9]*")) + list(GPU_DEVICES)
        for device in devices:
            args += ["--dev-bind-try", device, device]
    for path in ro:
        if any(inside(path, b) for b in binds):
            continue  # already visible through a read-only mount above it
        need_parents(path)
        args += ["--ro-bind", path, path]
        mounted.append(path)
        binds.append(path)
    for path in rw:
        need_parents(path)
        args += ["--bind", str(disk.work) if disk and path == workdir else path, path]
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
    user = SANDBOX_USER if uid != os.getuid() else env.get("USER", SANDBOX_USER)
    return _with_home(kept, os.path.abspath(workdir), "/tmp" if isolated else os.path.join(str(workdir), ".tmp"), user)


def server_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The fork server's environment: the kernel's allow-list minus anything of a grading run (mode,
    seed, tokens), HOME in its private /tmp. It imports the preload list with it, for every kernel."""
    env = dict(os.environ if env is None else env)
    kept = {k: v for k, v in env.items() if (k in ENV_KEEP or k.startswith(ENV_KEEP_PREFIXES))
            and not k.startswith(SERVER_ENV_DROP) and not any(word in k.upper() for word in SERVER_ENV_NEVER)}
    return _with_home(kept, "/tmp", "/tmp", SANDBOX_USER)


def _with_home(kept: dict[str, str], home: str, tmp: str, user: str) -> dict[str, str]:
    bindir = os.path.dirname(os.path.abspath(sys.executable))
    kept.update({
        "HOME": home, "USER": user, "LOGNAME": user,
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
