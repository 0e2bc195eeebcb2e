"""The instructor store: ``<course>/.interplab/`` (mode 0700).

Holds, per assignment, the secret seed of the hidden inputs and the hidden references (outputs of
the master solution on public and hidden inputs, the probes' outputs, and which test cell checks
which exercises). Nothing here is ever copied to release/, feedback, or a student's home.
"""
from __future__ import annotations

import json
import os
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STORE_DIRNAME = ".interplab"


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

    def seed(self, assignment: str, create: bool = True) -> int:
        """The assignment's secret seed: drawn once at the first build and kept, so rebuilding
        does not change the hidden inputs of submissions already graded."""
        path = self.root / assignment / "seed"
        if path.is_file():
            return int(path.read_text().strip())
        if not create:
            raise FileNotFoundError(f"no secret seed for {assignment!r}: run `interplab build {assignment}` first")
        seed = secrets.randbits(62)
        write_atomic(self.assignment_dir(assignment) / "seed", f"{seed}\n", mode=0o600)
        return seed

    def references_path(self, assignment: str) -> Path:
        return self.root / assignment / "references.json"

    def save_references(self, assignment: str, references: dict[str, Any]) -> None:
        write_atomic(self.assignment_dir(assignment) / "references.json", json.dumps(references), mode=0o600)

    def load_references(self, assignment: str) -> dict[str, Any]:
        path = self.references_path(assignment)
        if not path.is_file():
            raise FileNotFoundError(f"no hidden references for {assignment!r} in {self.root}: run `interplab build {assignment}`")
        return json.loads(path.read_text())
