"""The instructor store: ``<course>/.interplab/`` (mode 0700).

Holds the course secret (``secret``) from which every student's hidden seed is derived, and per
assignment the build's references (outputs of the master solution on public and hidden inputs, the
probes' outputs, and which test cell checks which exercises), each student's hidden references
(``references/``) and the cached executions (``executions/``, see ``cache.py``). Nothing here is ever
copied to release/, feedback, or a student's home.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STORE_DIRNAME = ".interplab"
SECRET_FILE = "secret"
# The hidden seed the build validates the master with: not a valid student id, so no student has it.
BUILD_STUDENT = "(build)"


def write_atomic(path: Path, text: str, mode: int = 0o644) -> None:
    """Write ``text`` to ``path`` so that a reader never sees half a file (crash safety)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class Store:
    course_root: Path

    @property
    def root(self) -> Path:
        return Path(self.course_root) / STORE_DIRNAME

    def assignment_dir(self, assignment: str) -> Path:
        path = self.root / assignment
        for directory in (self.root, path):
            directory.mkdir(mode=0o700, exist_ok=True)
            os.chmod(directory, 0o700)
        return path

    def folder(self, assignment: str, name: str) -> Path:
        """A private folder of the assignment's (``executions``, ``references``), created 0700."""
        path = self.assignment_dir(assignment) / name
        path.mkdir(mode=0o700, exist_ok=True)
        return path

    def secret(self, create: bool = False) -> bytes:
        """The course secret (32 random bytes, hex in ``.interplab/secret``): drawn once at the first
        build and kept, so rebuilding does not change the hidden inputs of submissions already graded."""
        path = self.root / SECRET_FILE
        if path.is_file():
            return bytes.fromhex(path.read_text().strip())
        if not create:
            raise FileNotFoundError(f"no course secret in {self.root}: run `interplab build` first")
        return self.rotate_secret()

    def rotate_secret(self) -> bytes:
        """A new course secret (a new term): every hidden seed changes, so every student's cached
        hidden references and executions are dropped (they would never match again)."""
        self.root.mkdir(mode=0o700, exist_ok=True)
        os.chmod(self.root, 0o700)
        secret = secrets.token_bytes(32)
        write_atomic(self.root / SECRET_FILE, secret.hex() + "\n", mode=0o600)
        for folder in [*self.root.glob("*/references"), *self.root.glob("*/executions")]:
            shutil.rmtree(folder)
        return secret

    def seed(self, assignment: str, student: str, create: bool = False) -> int:
        """The hidden seed of ``student`` on ``assignment``: HMAC-SHA256 of the course secret, so a
        seed a student prints tells nothing about another student's (or next term's) inputs."""
        digest = hmac.new(self.secret(create), f"{assignment}\0{student}".encode(), hashlib.sha256).digest()
        return int.from_bytes(digest[:8], "big") >> 2  # 62 bits: a plain non-negative int everywhere

    def checks_path(self, assignment: str) -> Path:
        """The instructor's full ``checks.py`` (probes included; the source and release hold a copy
        without them), which a student's references are computed with."""
        return self.root / assignment / "checks.py"

    def references_path(self, assignment: str) -> Path:
        return self.root / assignment / "references.json"

    def save_references(self, assignment: str, references: dict[str, Any]) -> None:
        write_atomic(self.assignment_dir(assignment) / "references.json", json.dumps(references), mode=0o600)

    def load_references(self, assignment: str) -> dict[str, Any]:
        path = self.references_path(assignment)
        if not path.is_file():
            raise FileNotFoundError(f"no hidden references for {assignment!r} in {self.root}: run `interplab build {assignment}`")
        return json.loads(path.read_text())
