"""The grading settings: the one typed object every part of grading reads its limits from.

``course.toml``'s ``[grading]`` table is parsed once, by :meth:`SandboxPolicy.from_settings`, into a
frozen :class:`SandboxPolicy`; a malformed or unknown key is a :class:`SandboxError` of one line.
The policy then travels everywhere grading happens: into each :class:`~.executors.Job` (it pickles,
so it crosses process and Dask boundaries), the kernel managers, the command line, the fork server
and the output budget. Each limit is written here once, with its default and its meaning; the
rlimits derived from it are computed here once too (:meth:`SandboxPolicy.rlimits`), for prlimit
(plain sandbox) and for ``resource.setrlimit`` (forked kernels) alike.
"""
from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping

from interplab.errors import UserError

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
UID_BASE = 61000
MAX_SLOTS = 1000
SANDBOX_USER = "student"


class SandboxError(UserError):
    """The sandbox cannot be set up as asked (a person must fix the configuration or the machine)."""


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


def format_size(size: int) -> str:
    for unit, scale in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if size >= scale and size % scale == 0:
            return f"{size // scale} {unit}"
    return f"{size} B"


def _positive_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"must be a positive whole number, found {value!r}")
    return value


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, found {value!r}")
    return value


def _paths(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        raise ValueError(f"must be a list of paths, found {value!r}")
    return tuple(value)


@dataclass(frozen=True)
class SandboxPolicy:
    """The limits of one grading kernel and how grading runs; ``from_settings`` reads course.toml."""

    memory: int = 4 * GiB            # RLIMIT_DATA per process and the cgroup cap of the whole sandbox
    max_processes: int = 256         # processes + threads (RLIMIT_NPROC of the sandbox uid, cgroup pids.max)
    max_file_size: int = 1 * GiB     # RLIMIT_FSIZE: a larger write fails with EFBIG
    cpu_seconds: int | None = None   # RLIMIT_CPU of each process; None: notebook_timeout x CPU count
    open_files: int = 1024           # RLIMIT_NOFILE
    cell_timeout: int = 120          # seconds per cell (the notebook client's ``timeout``)
    notebook_timeout: int = 900      # seconds per notebook (the kernel manager kills the sandbox)
    tmp_size: int = 512 * MiB        # size of the private /tmp and /dev/shm (tmpfs, counted in the memory cap)
    disk_limit: int = 1 * GiB        # size of the working directory (a tmpfs, counted in the memory cap)
    disk_inodes: int = 20_000        # files + folders in the working directory, and again in /tmp
    # Output caps: generous next to what the solution notebooks send (a figure is 50-200 KB; all
    # check bundles of attribution, the largest, 1.9 MB), small next to a flood.
    max_cell_output: int = 4 * MiB   # bytes of output one cell may send (beyond: the kernel is stopped)
    max_notebook_output: int = 32 * MiB  # bytes of output the whole notebook may send
    max_check_output: int = 16 * MiB  # bytes of check bundles (test cells only) in the whole notebook
    gpu: bool = False                # expose /dev/nvidia* and /dev/dri
    extra_ro_paths: tuple[str, ...] = ()  # more host paths the kernel may read (e.g. a dataset folder)
    fork_server: bool = True         # fork kernels from a warm sandboxed server (needs root, bwrap, setpriv)
    allow_unsandboxed: bool = False  # grade even where isolation is impossible (no bwrap, not root)
    uid_base: int = UID_BASE         # slot N runs as uid/gid uid_base + N

    # course.toml key -> (attribute, parser)
    SETTINGS = {
        "memory_limit": ("memory", parse_size), "max_processes": ("max_processes", _positive_int),
        "max_file_size": ("max_file_size", parse_size), "cpu_seconds": ("cpu_seconds", _positive_int),
        "open_files": ("open_files", _positive_int), "cell_timeout": ("cell_timeout", _positive_int),
        "notebook_timeout": ("notebook_timeout", _positive_int), "tmp_size": ("tmp_size", parse_size),
        "disk_limit": ("disk_limit", parse_size), "disk_inodes": ("disk_inodes", _positive_int),
        "max_cell_output": ("max_cell_output", parse_size),
        "max_notebook_output": ("max_notebook_output", parse_size),
        "max_check_output": ("max_check_output", parse_size),
        "gpu": ("gpu", _boolean), "extra_ro_paths": ("extra_ro_paths", _paths),
        "fork_server": ("fork_server", _boolean), "allow_unsandboxed": ("allow_unsandboxed", _boolean),
    }

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any] | None) -> "SandboxPolicy":
        """A policy from the ``[grading]`` table of course.toml (or the whole parsed file). Missing
        keys keep their defaults; an unknown key or a bad value is a one-line :class:`SandboxError`."""
        table = dict(settings or {})
        if isinstance(table.get("grading"), Mapping):
            table = dict(table["grading"])
        kw: dict[str, Any] = {}
        for key, value in table.items():
            if key not in cls.SETTINGS:
                raise SandboxError(f"course.toml [grading]: unknown key {key!r}; known: {', '.join(sorted(cls.SETTINGS))}")
            attribute, parse = cls.SETTINGS[key]
            try:
                kw[attribute] = parse(value)
            except ValueError as exc:
                raise SandboxError(f"course.toml [grading] {key}: {exc}") from None
        return cls(**kw)

    @classmethod
    def from_course_toml(cls, path: str | os.PathLike) -> "SandboxPolicy":
        """The policy of a ``course.toml`` file (defaults if it does not exist)."""
        path = Path(path)
        if not path.is_file():
            return cls()
        try:
            return cls.from_settings(tomllib.loads(path.read_text()))
        except tomllib.TOMLDecodeError as exc:
            raise SandboxError(f"{path}: not valid TOML ({exc})") from None

    @property
    def cpu_limit(self) -> int:
        return self.cpu_seconds if self.cpu_seconds is not None else self.notebook_timeout * (os.cpu_count() or 1)

    def rlimits(self, own_uid: bool = True) -> dict[str, tuple[int, int]]:
        """The kernel's rlimits (soft, hard), for prlimit and ``resource.setrlimit`` alike.
        RLIMIT_NPROC counts per uid, so it is only set where the kernel has the slot's own uid."""
        limits = {"RLIMIT_DATA": (self.memory, self.memory),
                  "RLIMIT_FSIZE": (self.max_file_size, self.max_file_size),
                  "RLIMIT_NOFILE": (self.open_files, self.open_files),
                  "RLIMIT_CPU": (self.cpu_limit, self.cpu_limit + 5),
                  "RLIMIT_CORE": (0, 0)}
        if own_uid:
            limits["RLIMIT_NPROC"] = (self.max_processes, self.max_processes)
        return limits

    def as_settings(self) -> dict[str, Any]:
        """The course.toml table that gives this policy (for traitlets config, which wants plain data)."""
        by_attribute = {attribute: key for key, (attribute, _) in self.SETTINGS.items()}
        return {by_attribute[f.name]: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
                for f in fields(self) if f.name in by_attribute and getattr(self, f.name) is not None}
