"""The course directory: its settings (``course.toml``), its folders, and stock nbgrader run on it."""
from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from interplab.autograder.sandbox import SandboxPolicy
from interplab.autograder.store import Store
from interplab.errors import UserError


class CourseError(UserError):
    """Something about the course directory a person must fix; printed as one line."""


@dataclass
class Course:
    root: Path
    settings: dict[str, Any] = field(default_factory=dict)
    # course.toml's [grading] table, parsed and validated once; what every grading step reads.
    policy: SandboxPolicy = field(default_factory=SandboxPolicy)
    _nbgrader_config: Any = field(default=None, repr=False, compare=False)

    @classmethod
    def load(cls, root: Path) -> "Course":
        root = Path(root).resolve()
        if not (root / "nbgrader_config.py").is_file():
            raise CourseError(f"{root} is not a course directory (no nbgrader_config.py); pass --course DIR")
        settings = {}
        if (root / "course.toml").is_file():
            try:
                settings = tomllib.loads((root / "course.toml").read_text())
            except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
                raise CourseError(f"{root / 'course.toml'} is not valid TOML: {exc}") from exc
        for table in ("course", "grading"):
            if not isinstance(settings.get(table, {}), dict):
                raise CourseError(f"{root / 'course.toml'}: [{table}] must be a table")
        return cls(root, settings, SandboxPolicy.from_settings(settings.get("grading", {})))

    @property
    def id(self) -> str:
        return self.settings.get("course", {}).get("id", "interplab")

    @property
    def assignments_dir(self) -> Path:
        configured = os.environ.get("INTERPLAB_ASSIGNMENTS") or self.settings.get("course", {}).get("assignments_dir", "../assignments")
        return (self.root / configured).resolve()

    @property
    def store(self) -> Store:
        return Store(self.root)

    def source(self, assignment: str) -> Path:
        return self.root / "source" / assignment

    def release(self, assignment: str) -> Path:
        return self.root / "release" / assignment

    @property
    def submitted(self) -> Path:
        return self.root / "submitted"

    def nbgrader_config(self) -> Any:
        """The configuration an nbgrader command run here sees: the ``nbgrader_config.py`` files of
        the Jupyter config paths, then the course's own (loaded once)."""
        if self._nbgrader_config is None:
            from jupyter_core.paths import jupyter_config_path
            from traitlets.config import Config
            from traitlets.config.loader import PyFileConfigLoader

            config = Config()
            for folder in [*reversed(jupyter_config_path()), str(self.root)]:
                if (Path(folder) / "nbgrader_config.py").is_file():
                    config.merge(PyFileConfigLoader("nbgrader_config.py", path=folder).load_config())
            self._nbgrader_config = config
        return self._nbgrader_config

    @property
    def db_url(self) -> str:
        """The gradebook nbgrader uses (``CourseDirectory.db_url``, e.g. Postgres), by default
        ``gradebook.db`` in the course."""
        configured = self.nbgrader_config().get("CourseDirectory", {}).get("db_url")
        return str(configured) if configured else "sqlite:///" + str(self.root / "gradebook.db")

    def known_assignments(self) -> list[str]:
        base = self.assignments_dir
        if not base.is_dir():
            raise CourseError(f"no assignments directory at {base}")
        return sorted(p.name for p in base.iterdir() if (p / f"{p.name}.py").is_file() and (p / "checks.py").is_file())

    def nbgrader(self, *args: str, check: bool = True, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """Run a stock nbgrader command on this course (its nbgrader_config.py applies)."""
        cmd = [sys.executable, "-m", "nbgrader", *args, f"--CourseDirectory.root={self.root}"]
        env = {**os.environ, **(env or {})}
        # nbgrader shells out to `alembic`: make the tools of this environment reachable.
        env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")])
        proc = subprocess.run(cmd, cwd=self.root, capture_output=True, text=True, env=env)
        if check and proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-25:])
            raise CourseError(f"`nbgrader {' '.join(args)}` failed (exit {proc.returncode}):\n{tail}")
        return proc
