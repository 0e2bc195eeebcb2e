"""The local hub's own pieces: a spawner that needs no Unix users and the loopback-only demo login.

``CourseLocalSpawner`` runs every student's server as the hub's own Unix user, with HOME under the
hub's data directory. nbgrader's exchange would then see one Unix user for everyone (its
``get_username`` reads the process owner), so the server's nbgrader config
(deploy/singleuser/nbgrader_config.py) sets ``CourseDirectory.student_id`` from JUPYTERHUB_USER,
the identity the hub vouches for. That keeps submissions apart; it is no isolation between
students (they share a Unix user), which is why this spawner is for a laptop or a classroom demo
and real deployments use Kubernetes, Docker or SLURM (see deploy/README.md).
"""
from __future__ import annotations

import ipaddress
import json
import os
import secrets
from pathlib import Path

from jupyterhub.auth import Authenticator
from jupyterhub.spawner import SimpleLocalProcessSpawner
from traitlets import Dict, Unicode

REPO = Path(__file__).resolve().parents[2]
SINGLEUSER_CONFIG = REPO / "deploy" / "singleuser"
FORMGRADER_CONFIG = REPO / "deploy" / "formgrader"

DEMO_INSTRUCTOR = "instructor"
DEMO_STUDENTS = ("alice", "bob", "carol")


class CourseLocalSpawner(SimpleLocalProcessSpawner):
    """A local process per student, as the hub's Unix user, HOME = ``<data>/home/<name>``."""

    home_dir_template = Unicode("/tmp/interplab-home/{username}", config=True, help="HOME of each server")

    def make_preexec_fn(self, name):
        home = self.home_dir

        def preexec() -> None:
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


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an IP or name as given to ``JupyterHub.ip``) only listens on loopback."""
    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def demo_accounts(data_dir: Path, students: tuple[str, ...] = DEMO_STUDENTS) -> dict[str, str]:
    """The demo logins (name -> password), made once per data directory and kept in it (0600)."""
    path = Path(data_dir) / "demo-accounts.json"
    accounts: dict[str, str] = json.loads(path.read_text()) if path.is_file() else {}
    wanted = (DEMO_INSTRUCTOR, *students)
    if any(name not in accounts for name in wanted):
        for name in wanted:
            accounts.setdefault(name, secrets.token_urlsafe(9))
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(accounts, f, indent=1)
    return {name: accounts[name] for name in wanted}


class DemoAuthenticator(Authenticator):
    """Fixed demo accounts with generated passwords; only for a hub bound to loopback.

    jupyterhub_config.py refuses to start with it on any other address, and the check is repeated
    here so a copied config cannot expose it."""

    accounts = Dict(Unicode(), config=True, help="name -> password")
    bind_host = Unicode("127.0.0.1", config=True, help="the host the hub's proxy listens on")

    def check_allow_config(self) -> None:
        if not is_loopback(self.bind_host):
            raise ValueError(
                f"the demo login only runs on loopback, but the hub binds {self.bind_host!r}: "
                "set INTERPLAB_AUTH=native|oauth|lti13 for a public hub"
            )
        super().check_allow_config()

    async def authenticate(self, handler, data):
        name = (data or {}).get("username", "")
        password = (data or {}).get("password", "")
        expected = self.accounts.get(name)
        if expected is not None and secrets.compare_digest(expected, password):
            return name
        return None
