"""The kernel managers nbclient starts grading kernels with, and which one to use.

:class:`SandboxedKernelManager` starts ``python -m ipykernel_launcher`` under :meth:`Sandbox.argv`
(a fresh process per kernel). :class:`ForkServerKernelManager` asks this process's warm
:class:`~.forkserver.ForkServer` for a forked kernel instead, in the same slot, uid and cgroups; if
the fork server cannot start, it says so in a WARNING line (once per process) and starts the kernel
the plain way, so a broken fork server slows grading down but never fails it. Both keep a
per-notebook deadline that kills the sandbox, talk over ipc sockets in the runtime dir, and tear
the sandbox down when the kernel dies or shuts down. :func:`kernel_manager_for` picks the class
for a policy (the fork server needs root, bwrap, setpriv and memory for the preloaded modules).
Configure either from nbgrader_config.py: ``c.SandboxedKernelManager.grading_settings`` (the
``[grading]`` table), ``slot`` and ``forbidden_paths``.
"""
from __future__ import annotations

import os
import shutil
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

from jupyter_client.kernelspec import KernelSpec
from jupyter_client.manager import AsyncKernelManager
from jupyter_client.provisioning import LocalProvisioner
from traitlets import Bool, Dict, Instance, Integer, List, Unicode, default

from .box import Sandbox
from .command import inside
from .forkserver import DEFAULT_PRELOAD, MIN_HEADROOM, ForkedKernel, ForkServer, JobDir, shared_server
from .output import GradingKernelClient, max_message_bytes
from .policy import GiB, SandboxError, SandboxPolicy
from .protections import banner, probe

FORK_SERVER_MIN_MEMORY = 3 * GiB  # a forked kernel inherits ~1.6 GiB of preloaded modules
_BANNER_SHOWN = False
_FALLBACK_SHOWN = False


def kernel_manager_for(policy: SandboxPolicy, log: Any = None) -> type["SandboxedKernelManager"]:
    """The fork-server kernel manager where the policy asks for it and it can give the same
    protections (root, bubblewrap, setpriv, memory for the preloaded modules), else the plain
    sandbox, saying why."""
    if not policy.fork_server:
        return SandboxedKernelManager
    caps = probe()
    missing = [name for name, ok in (("root", caps.root), ("bubblewrap", caps.bwrap), ("setpriv", caps.setpriv),
                                     ("memory_limit >= 3GiB", policy.memory >= FORK_SERVER_MIN_MEMORY)) if not ok]
    if missing:
        if log is not None:
            log.warning("fork server off (needs %s): every kernel starts from scratch", ", ".join(missing))
        return SandboxedKernelManager
    return ForkServerKernelManager


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

    @default("client_factory")
    def _client_factory_default(self) -> type:
        return GradingKernelClient

    def client(self, **kwargs: Any) -> GradingKernelClient:
        """The grader's client, refusing any message larger than the output caps allow."""
        return super().client(max_message=max_message_bytes(self.policy), **kwargs)

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
        return await self._plain_pre_start(**kw)

    async def _plain_pre_start(self, **kw: Any):
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
    server_dir = Unicode("", help="a root-only folder for the fork server's own (default: a fresh mkdtemp "
                                  "folder in the temp dir)").tag(config=True)
    fork_server = Instance(ForkServer, allow_none=True, help="default: this process's shared server")
    job = Instance(JobDir, allow_none=True)
    _own_job = False

    fork_failed = Bool(False, help="the fork server could not start: this kernel was started the plain way")

    def _warn_fallback(self, exc: Exception) -> None:
        global _FALLBACK_SHOWN
        if not _FALLBACK_SHOWN:
            _FALLBACK_SHOWN = True
            self.log.warning("WARNING: [OFF] FORK SERVER IS OFF: it could not start (%s); every kernel of this "
                             "process starts from scratch in the plain sandbox (slower, same protections)", exc)

    def server(self) -> ForkServer:
        if self.fork_server is None or not self.fork_server.alive:
            self.fork_server = shared_server(self.preload, self.policy, forbidden=self.forbidden_paths,
                                             base_dir=self.server_dir or None)
        return self.fork_server

    async def _async_pre_start_kernel(self, **kw: Any):
        self._show_banner_once("  [on]  fork server: kernels are forked from a warm sandboxed server, each in "
                               "its own namespaces")
        try:
            server = self.server()
        except SandboxError as exc:  # slower, never failing: start this kernel the plain way
            self._warn_fallback(exc)
            self.fork_failed = True
            return await self._plain_pre_start(**kw)
        preloaded = int(server.ready.get("data_bytes", 0))
        if self.policy.memory < preloaded + MIN_HEADROOM:  # RLIMIT_DATA counts what the kernel inherits
            raise SandboxError(f"memory_limit ({self.policy.memory >> 20} MiB) leaves a forked kernel less than "
                               f"{MIN_HEADROOM >> 20} MiB beyond the {preloaded >> 20} MiB its preloaded modules "
                               "take; raise memory_limit or preload fewer modules")
        if self.job is None:
            workdir = Path(self.workdir or kw.get("cwd") or os.getcwd()).resolve()
            assert server.jobs_root is not None
            if inside(str(workdir), str(server.jobs_root)) and workdir.parent.parent == server.jobs_root:
                run = workdir.parent / "r"
                run.mkdir(mode=0o700, exist_ok=True)
                self.job, self._own_job = JobDir(workdir.parent, workdir, run), False
            else:
                for hidden in self.forbidden_paths:
                    if inside(str(workdir), str(Path(hidden).resolve())):
                        raise SandboxError(f"the working directory {workdir} lies in {hidden} (must stay hidden)")
                self.job, self._own_job = server.job_dir(workdir), True
        if self.sandbox is None:  # slot, uid and cgroups; the forked kernel mounts its own tmpfs disk
            self.sandbox = Sandbox(self.job.work, self.policy, self.slot, forbidden=self.forbidden_paths,
                                   disk=False).open()
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
        if self.fork_failed:
            return super()._close_sandbox()
        process = getattr(self.provisioner, "process", None)
        if isinstance(process, ForkedKernel):
            process.kill()
            process.close()
        super()._close_sandbox()
        if self.job is not None:  # a copy we made goes; a workdir we were given stays (its run dir goes)
            shutil.rmtree(self.job.root if self._own_job else self.job.run, ignore_errors=True)
            self.job = None

