"""Where a student's server runs, and which combinations of spawner and login may start at all.

``CourseLocalSpawner`` runs every student's server as one shared Unix user: the hub's own, with
HOME under the hub's data directory; or, when the hub runs as root, the unprivileged demo account
(``demo_account``, ``interplab-demo`` by default), with HOMEs under that account's home, so that
no student ever gets a root terminal. nbgrader's exchange would then see one Unix user for
everyone (its ``get_username`` reads the process owner), so the server's nbgrader config
(deploy/singleuser/nbgrader_config.py) sets ``CourseDirectory.student_id`` from JUPYTERHUB_USER,
the identity the hub vouches for. That keeps submissions apart; it is no isolation between
students (they share a Unix user), which is why ``refusal`` lets it run only with the demo login
on loopback.

``SystemUserSpawner`` is a class on one server (``INTERPLAB_SPAWNER=system``): each student's
server runs as a Unix user of its own, created on first login (``unix_name_template``, uids from
``uid_min``-``uid_max``, home 0700), in cgroups that cap its memory, processes and CPU (the grading
sandbox's cgroups, v1 or v2; the log says what is enforced), with the GPUs of a GPU profile leased
to it alone until it stops (``CUDA_VISIBLE_DEVICES``, and the device files of every other GPU of the
inventory are /dev/null in its mount namespace). The course directory, the instructor store
and the gradebook belong to the instructors' account (``secure_course``), which also runs the
formgrader and owns nbgrader's exchange, whose own modes keep outbound read-only and inbound
write-only for students.
"""
from __future__ import annotations

import grp
import os
import pwd
import re
import subprocess
import sys
from pathlib import Path

from jupyterhub.spawner import LocalProcessSpawner, SimpleLocalProcessSpawner, set_user_setuid
from tornado import web
from traitlets import Integer, List, Unicode, default

from interplab.autograder.hub import profiles
from interplab.autograder.hub.login import is_loopback
from interplab.autograder.sandbox.cgroups import Cgroups, probe_cgroups
from interplab.autograder.sandbox.policy import SandboxPolicy

REPO = Path(__file__).resolve().parents[2]
SINGLEUSER_CONFIG = REPO / "deploy" / "singleuser"
FORMGRADER_CONFIG = REPO / "deploy" / "formgrader"

SPAWNERS = ("local", "system", "docker", "kubernetes", "slurm")
LOGINS = ("demo", "native", "oauth", "lti13")
# useradd's portable names: lower case, digits, _ and -, at most 32 characters
UNIX_NAME = re.compile(r"[a-z_][a-z0-9_-]{0,31}")


def default_exchange(spawner: str, course: Path) -> Path:
    """nbgrader's exchange root unless INTERPLAB_EXCHANGE says otherwise: beside the course for the
    local demo; a shared folder where servers are containers or the course is closed to students."""
    return Path("/srv/nbgrader/exchange") if spawner in ("docker", "kubernetes", "system") else Path(course) / "exchange"


def refusal(spawner: str, auth: str, host: str, euid: int, tls: bool, uid_min: int, uid_max: int,
            demo_account_error: str | None = None) -> str | None:
    """Why the hub must not start with this configuration (one line: what is wrong, what to
    choose), or None. Every rule of which combination is safe lives here. ``demo_account_error``:
    why the demo account (``demo_account``) cannot run the local spawner's servers, if it cannot."""
    if spawner not in SPAWNERS:
        return f"INTERPLAB_SPAWNER={spawner!r}: choose {', '.join(SPAWNERS)}"
    if auth not in LOGINS:
        return f"INTERPLAB_AUTH={auth!r}: choose {', '.join(LOGINS)}"
    if auth == "demo" and not is_loopback(host):
        return (f"refusing to start: the demo login has published passwords and the hub would listen on {host}. "
                "Bind to 127.0.0.1, or choose a real login with INTERPLAB_AUTH=native|oauth|lti13.")
    if spawner == "local" and auth != "demo":
        return ("refusing to start: INTERPLAB_SPAWNER=local runs every student's server as one shared Unix user "
                "(the hub's, or the demo account when the hub is root), so it serves only the demo login on loopback. "
                "For a class on one server choose INTERPLAB_SPAWNER=system (one Unix user per student), or docker, "
                "kubernetes or slurm.")
    if spawner == "local" and euid == 0 and demo_account_error:
        return (f"refusing to start: as root, INTERPLAB_SPAWNER=local runs the demo's servers as an unprivileged demo "
                f"account, never as root, and {demo_account_error}. Fix that, set INTERPLAB_DEMO_ACCOUNT to another "
                "name, or run the hub as a normal user.")
    if spawner == "system":
        if euid != 0:
            return ("refusing to start: INTERPLAB_SPAWNER=system creates a Unix user per student and starts "
                    "servers as them, which needs the hub to run as root (sudo interplab hub).")
        if not 1000 <= uid_min <= uid_max:
            return (f"refusing to start: the students' uid range {uid_min}-{uid_max} must lie at or above 1000 "
                    "(never root, never a system account): set INTERPLAB_UID_MIN and INTERPLAB_UID_MAX.")
    if auth != "demo" and not is_loopback(host) and not tls:
        return (f"refusing to start: a public hub ({host}) without TLS sends passwords in clear. Set "
                "INTERPLAB_SSL_CERT and INTERPLAB_SSL_KEY (deploy/README.md: TLS), or INTERPLAB_TLS_TERMINATED=1 "
                "behind a proxy that terminates TLS.")
    return None


class CourseLocalSpawner(SimpleLocalProcessSpawner):
    """A local process per student as one shared Unix user, HOME = ``home_dir_template``: the hub's
    own user, or ``demo_account`` when the hub is root (never root itself)."""

    home_dir_template = Unicode("/tmp/interplab-home/{username}", config=True, help="HOME of each server")
    demo_account = Unicode("", config=True,
                           help="the unprivileged Unix account every server runs as when the hub is root")

    async def start(self):
        if os.geteuid() == 0 and not self.demo_account:  # fail closed: no configuration makes a root server
            raise web.HTTPError(500, "refusing to start a student's server as root: set CourseLocalSpawner.demo_account")
        return await super().start()

    def make_preexec_fn(self, name):
        home = self.home_dir
        setuid = set_user_setuid(self.demo_account, chdir=False) if self.demo_account else None

        def preexec() -> None:
            if setuid:
                setuid()  # first: the home is made by the demo account, never by root
            os.makedirs(home, 0o700, exist_ok=True)
            os.chdir(home)

        return preexec

    def get_env(self) -> dict[str, str]:
        env = super().get_env()
        # The hub's own config dirs must not leak in; the course's single-user config must.
        env["JUPYTER_CONFIG_PATH"] = str(SINGLEUSER_CONFIG)
        env["JUPYTER_CONFIG_DIR"] = os.path.join(self.home_dir, ".jupyter")
        env["JUPYTER_DATA_DIR"] = os.path.join(self.home_dir, ".local", "share", "jupyter")
        env["JUPYTER_RUNTIME_DIR"] = os.path.join(self.home_dir, ".local", "share", "jupyter", "runtime")
        env["IPYTHONDIR"] = os.path.join(self.home_dir, ".ipython")
        return env


# Run as the demo account by ``demo_account``: the server's interpreter, its packages and extension,
# and each folder named on the command line must be usable by it.
USABILITY_PROBE = (
    "import os, sys, jupyterhub.singleuser, nbgrader, interplab.autograder.student_course\n"
    "closed = [p for p in sys.argv[1:] if not os.access(p, os.R_OK | os.X_OK)]\n"
    "sys.exit('it cannot read ' + ', '.join(closed) if closed else 0)\n"
)


class AccountError(RuntimeError):
    """A Unix account could not be made or is unsafe to use; the message says which and why."""


def ensure_account(name: str, uid_min: int, uid_max: int, home: Path, comment: str) -> pwd.struct_passwd:
    """The Unix account ``name``, created with the lowest free uid of the range and a home of
    mode 0700 if it does not exist. An existing account outside the range (root, a system
    account, someone else's) is refused, never reused."""
    if not UNIX_NAME.fullmatch(name):
        raise AccountError(f"{name!r} is not a valid Unix user name (a-z, 0-9, _ and -, at most 32): "
                           "change the hub user's name or INTERPLAB_UNIX_NAME")
    try:
        account = pwd.getpwnam(name)
    except KeyError:
        taken = {p.pw_uid for p in pwd.getpwall()} | {g.gr_gid for g in grp.getgrall()}
        uid = next((u for u in range(uid_min, uid_max + 1) if u not in taken), None)
        if uid is None:
            raise AccountError(f"no free uid left in {uid_min}-{uid_max} for {name}: widen INTERPLAB_UID_MIN/MAX")
        proc = subprocess.run(["useradd", "--uid", str(uid), "--user-group", "--no-create-home", "--home-dir",
                               str(home), "--shell", "/bin/bash", "--comment", comment, name],
                              capture_output=True, text=True)
        if proc.returncode != 0 and "already exists" not in proc.stderr:  # a concurrent first login made it
            raise AccountError(f"useradd {name} failed: {proc.stderr.strip()}")
        account = pwd.getpwnam(name)
    if not uid_min <= account.pw_uid <= uid_max:
        raise AccountError(f"the Unix user {name} exists with uid {account.pw_uid}, outside the students' range "
                           f"{uid_min}-{uid_max}: refusing to start anything as it")
    home = Path(account.pw_dir)
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chown(home, account.pw_uid, account.pw_gid)
    home.chmod(0o700)
    return account


def demo_account(name: str, uid_min: int, uid_max: int, home_root: Path, needs: list[Path]) -> pwd.struct_passwd:
    """The unprivileged account the local spawner's servers run as when the hub is root, made with
    ``ensure_account`` (home ``<home_root>/<name>``, 0700) and proven usable: it runs this
    interpreter with the server's packages and can read every folder of ``needs``. Raises
    ``AccountError`` saying what stops it (on most machines, a Python under /root, mode 0700)."""
    account = ensure_account(name, uid_min, uid_max, home_root / name, "interplab demo servers")
    try:
        probe = subprocess.run([sys.executable, "-c", USABILITY_PROBE, *map(str, needs)], user=account.pw_uid,
                               group=account.pw_gid, extra_groups=[], cwd=account.pw_dir, env={"PATH": "/usr/bin:/bin"},
                               capture_output=True, text=True, timeout=300)
    except OSError as exc:
        raise AccountError(f"the demo account {name} cannot run {sys.executable} ({exc.strerror}): every folder "
                           "above it must be open to others (chmod o+x, e.g. /root where Python lives under it)") from None
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["no output"])[-1]
        raise AccountError(f"the demo account {name} cannot use the hub's Python and folders: {last}")
    return account


def secure_course(course: Path, account: pwd.struct_passwd) -> None:
    """The course directory (with the instructor store and the gradebook in it) owned by the
    instructors' account and closed to everyone else."""
    for root, dirs, files in os.walk(course):
        for name in [root, *(os.path.join(root, f) for f in dirs + files)]:
            os.lchown(name, account.pw_uid, account.pw_gid)
    course.chmod(0o700)


def prepare_exchange(exchange: Path, course_id: str, account: pwd.struct_passwd) -> None:
    """The exchange root as nbgrader documents it (writable by all, sticky: nobody removes another's
    entries); its course folder is the instructors' account's, where nbgrader's release made
    ``outbound`` 0755, ``inbound`` 0733 (write-only) and ``feedback`` 0711 (by hash)."""
    exchange.mkdir(parents=True, exist_ok=True)
    exchange.chmod(0o1777)
    course_dir = exchange / course_id
    course_dir.mkdir(exist_ok=True)
    for path in [course_dir, *course_dir.rglob("*")]:
        os.lchown(path, account.pw_uid, account.pw_gid)
    course_dir.chmod(0o755)


CLONE_NEWNS, MS_BIND, MS_REC, MS_PRIVATE = 0x00020000, 4096, 16384, 1 << 18


def hide_device_files(paths: list[str]) -> None:
    """In a server's process, before it drops root: a mount namespace of its own in which each of
    ``paths`` (the device files of GPUs it does not hold) is /dev/null. The server's user cannot
    undo it (no capability) nor reach the host's mounts; a failure stops the start (fail closed)."""
    import ctypes
    import ctypes.util

    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)

    def ok(result: int, what: str) -> None:
        if result != 0:
            raise OSError(ctypes.get_errno(), f"hiding GPU device files: {what}: {os.strerror(ctypes.get_errno())}")

    ok(libc.unshare(CLONE_NEWNS), "unshare")
    ok(libc.mount(None, b"/", None, ctypes.c_ulong(MS_REC | MS_PRIVATE), None), "private mounts")
    for path in paths:
        ok(libc.mount(b"/dev/null", path.encode(), None, ctypes.c_ulong(MS_BIND), None), path)


class SystemUserSpawner(LocalProcessSpawner):
    """Each student's server as a Unix user of its own, in cgroups, with leased GPUs."""

    unix_name_template = Unicode("ilab-{username}", config=True,
                                 help="the Unix name of a hub user; {username} is the hub's name")
    uid_min = Integer(62000, config=True, help="lowest uid given to a student's account")
    uid_max = Integer(62999, config=True, help="highest uid given to a student's account")
    home_root = Unicode("/home", config=True, help="students' homes are <home_root>/<unix name>, mode 0700")
    max_processes = Integer(512, config=True, help="processes and threads of one server (cgroup pids.max)")
    configured_gpus = List(Unicode(), config=True,
                           help="GPUs to lease where nvidia-smi is absent: UUID or UUID=/dev/nvidiaN (device files)")

    _leases: profiles.GpuLeases | None = None  # one inventory per hub process, shared by every server

    def _options_form_default(self) -> str:
        choices = "".join(
            f'<label><input type="radio" name="profile" value="{p.slug}"{" checked" if p.default else ""}> '
            f"{p.display_name}: {p.description}</label><br>" for p in profiles.PROFILES)
        return f"<div>{choices}</div>"

    @default("apply_user_options")
    def _check_the_profile(self):
        # the profile is read at start; asking for an unknown one is an HTTP 400 before anything starts
        return lambda spawner, options: spawner.profile

    def options_from_form(self, form_data: dict) -> dict:
        return {"profile": form_data.get("profile", [""])[0]}

    @property
    def unix_name(self) -> str:
        return self.unix_name_template.format(username=self.user.name)

    @property
    def profile(self) -> profiles.Profile:
        slug = (self.user_options or {}).get("profile") or next(p.slug for p in profiles.PROFILES if p.default)
        for p in profiles.PROFILES:
            if p.slug == slug:
                return p
        raise web.HTTPError(400, f"no profile {slug!r}: choose {', '.join(p.slug for p in profiles.PROFILES)}")

    def leases(self) -> profiles.GpuLeases:
        if SystemUserSpawner._leases is None:
            SystemUserSpawner._leases = profiles.GpuLeases(profiles.gpu_inventory(tuple(self.configured_gpus)))
        return SystemUserSpawner._leases

    def account(self) -> pwd.struct_passwd:
        try:
            return ensure_account(self.unix_name, self.uid_min, self.uid_max,
                                  Path(self.home_root) / self.unix_name, f"interplab student {self.user.name}")
        except AccountError as exc:
            raise web.HTTPError(500, str(exc)) from None

    def _cgroups(self) -> Cgroups | None:
        kind = probe_cgroups()
        return Cgroups(kind, f"interplab-server-{self.unix_name}") if kind else None

    def make_preexec_fn(self, name: str):
        setuid = set_user_setuid(self.unix_name)
        procs = [str(p) for p in self._cgroup.procs_files] if self._cgroup else []
        hidden = self.leases().hidden_files(self._gpus)

        def preexec() -> None:
            for path in procs:  # join the server's cgroups before dropping root: all it starts is counted
                with open(path, "w") as f:
                    f.write(str(os.getpid()))
            if hidden:
                hide_device_files(hidden)
            setuid()

        return preexec

    def user_env(self, env: dict[str, str]) -> dict[str, str]:
        account = pwd.getpwnam(self.unix_name)
        env.update(USER=self.unix_name, LOGNAME=self.unix_name, HOME=account.pw_dir, SHELL=account.pw_shell)
        return env

    def get_env(self) -> dict[str, str]:
        env = super().get_env()
        env["JUPYTER_CONFIG_PATH"] = str(SINGLEUSER_CONFIG)
        # an empty list hides every GPU from a CPU server
        env["CUDA_VISIBLE_DEVICES"] = ",".join(gpu.uuid for gpu in self._gpus)
        return env

    async def start(self):
        self._gpus: list[profiles.Gpu] = []
        self._cgroup = None
        profile = self.profile
        if profile.gpus:
            try:
                self._gpus = self.leases().lease(self.user.name, profile.gpus)
            except profiles.NoGpuFree as exc:
                raise web.HTTPError(409, str(exc)) from None
        try:
            account = self.account()
            self._cgroup = self._cgroups()
            memory = int(self.mem_limit or profile.mem_bytes)
            cpus = float(self.cpu_limit or profile.cpu)
            if self._cgroup:
                self._cgroup.create(SandboxPolicy(memory=memory, max_processes=self.max_processes), cpus=cpus)
                enforced = ", ".join(self._cgroup.enforced(cpus))
            else:
                enforced = "nothing (no writable cgroups: run the hub as root on a host that delegates them)"
            self.log.info("server of %s as %s (uid %d), profile %s, GPUs %s; limits enforced: %s",
                          self.user.name, self.unix_name, account.pw_uid, profile.slug,
                          ", ".join(gpu.uuid for gpu in self._gpus) or "none", enforced)
            return await super().start()
        except BaseException:
            self._release()
            raise

    async def stop(self, now: bool = False) -> None:
        await super().stop(now=now)
        self._release()

    def _release(self) -> None:
        self.leases().release(self.user.name)
        cgroup = getattr(self, "_cgroup", None) or self._cgroups()
        if cgroup:
            cgroup.destroy()
