"""The sandbox that grading kernels run in: a student's notebook is arbitrary code.

One job per module, in the order data flows when grading starts:

- :mod:`.policy`: the typed settings (``course.toml`` ``[grading]`` -> :class:`SandboxPolicy`),
  parsed once and passed everywhere; every limit and its default is written there once;
- :mod:`.protections`: what this machine offers (:func:`probe`), which protections a kernel gets,
  the banner printed when grading starts, and the refusal rule (:func:`require_isolation`);
- :mod:`.cgroups`: the slot's memory and pids cgroups, and process helpers;
- :mod:`.command`: the bwrap/prlimit/setpriv command line and the kernel's environment (pure);
- :mod:`.box`: one sandbox's lifetime (slot lock, runtime dir, tmpfs disk, cgroups) and
  :func:`run_sandboxed` for plain commands;
- :mod:`.forkserver` (host side) and ``forkserver_child.py`` (inside its sandbox): kernels forked
  from a warm server that imported torch & co. once;
- :mod:`.kernels`: the kernel managers nbclient uses, the fork server's fallback, and
  :func:`kernel_manager_for`;
- :mod:`.output`: the output budget (per cell, per notebook, check bundles) counted as messages
  arrive.

ARCHITECTURE.md ("The grading sandbox") describes the protections as a whole. The names below are
the package's public interface.
"""
from .box import Sandbox, SandboxResult, run_sandboxed
from .cgroups import pids_of_uid
from .command import python_paths, sandbox_argv, sandbox_env
from .forkserver import DEFAULT_PRELOAD, ForkServer, shared_server
from .kernels import ForkServerKernelManager, SandboxedKernelManager, kernel_manager_for
from .output import OutputBudget, OutputCapExceeded
from .policy import GiB, KiB, MiB, SandboxError, SandboxPolicy, format_size, parse_size
from .protections import Capabilities, banner, probe, protections, require_isolation

__all__ = [
    "DEFAULT_PRELOAD", "Capabilities", "ForkServer", "ForkServerKernelManager", "GiB", "KiB", "MiB", "OutputBudget",
    "OutputCapExceeded", "Sandbox", "SandboxError", "SandboxPolicy", "SandboxResult", "SandboxedKernelManager",
    "banner", "format_size", "kernel_manager_for", "parse_size", "pids_of_uid", "probe", "protections",
    "python_paths", "require_isolation", "run_sandboxed", "sandbox_argv", "sandbox_env", "shared_server",
]
