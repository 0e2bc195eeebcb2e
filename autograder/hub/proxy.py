"""configurable-http-proxy, the hub's HTTP proxy (an npm package), installed next to the venv.

``ensure_proxy()`` runs ``npm ci`` from the lock file in deploy/hub-proxy into the git-ignored
``.venv/hub-proxy/`` the first time it is needed (``interplab hub``, the hub tests, the load
benchmark), so a fresh clone needs nothing but node and npm. ``python -m
interplab.autograder.hub.proxy`` does the same from a Makefile's install step.
"""
from __future__ import annotations

import fcntl
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LOCK_DIR = REPO / "deploy" / "hub-proxy"
INSTALL_DIR = REPO / ".venv" / "hub-proxy"
BINARY = INSTALL_DIR / "node_modules" / ".bin" / "configurable-http-proxy"


class ProxyInstallError(RuntimeError):
    """The proxy could not be installed; the message says what to install or fix."""


def _installed_matches_lock() -> bool:
    stamp = INSTALL_DIR / "package-lock.json"
    return BINARY.exists() and stamp.is_file() and stamp.read_bytes() == (LOCK_DIR / "package-lock.json").read_bytes()


def ensure_proxy(quiet: bool = False) -> Path:
    """Path of the configurable-http-proxy executable, installing it from the lock file if needed."""
    if _installed_matches_lock():
        return BINARY
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        raise ProxyInstallError(
            "the hub needs configurable-http-proxy, an npm package, but node/npm are not installed: "
            "run `apt-get install -y nodejs npm` (or install Node.js 18+), then try again"
        )
    INSTALL_DIR.mkdir(parents=True, exist_ok=True)
    # Two processes (say, two test sessions) must not run npm in the same folder at once.
    with open(INSTALL_DIR / ".install-lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _installed_matches_lock():
            return BINARY
        shutil.copy(LOCK_DIR / "package.json", INSTALL_DIR / "package.json")
        shutil.copy(LOCK_DIR / "package-lock.json", INSTALL_DIR / "package-lock.json")
        if not quiet:
            print("installing configurable-http-proxy (npm ci) into", INSTALL_DIR, file=sys.stderr)
        proc = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--omit=dev", "--loglevel=error"],
            cwd=INSTALL_DIR,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if proc.returncode != 0 or not BINARY.exists():
            (INSTALL_DIR / "package-lock.json").unlink(missing_ok=True)
            raise ProxyInstallError(
                f"`npm ci` for configurable-http-proxy failed (exit {proc.returncode}) in {INSTALL_DIR}:\n"
                + (proc.stdout + proc.stderr)[-2000:]
            )
    return BINARY


if __name__ == "__main__":
    print(ensure_proxy())
