"""Notebook plumbing shared by build, grade and ``interplab check``: the master format and execution."""
from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import jupytext
import nbformat
from jupyter_client.manager import AsyncKernelManager
from jupyter_core.utils import run_sync
from nbclient import NotebookClient
from nbformat import NotebookNode

from interplab.errors import UserError

# solution/test/locked: code nbgrader clears, grades or locks; answer: a written answer (markdown)
# an instructor grades by hand in the formgrader (its mark scheme sits in the locked question cell
# above it, between ### BEGIN MARK SCHEME and ### END MARK SCHEME: removed from the release, shown
# in the formgrader).
ROLES = ("solution", "test", "locked", "answer")
KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}


class MasterFormatError(UserError, ValueError):
    """A master whose cell headers nbgrader cannot use; says which file and cell."""


def is_test_cell(cell: Any) -> bool:
    """A graded test cell: a code cell nbgrader grades that is not a solution (the one rule)."""
    meta = cell.get("metadata", {}).get("nbgrader", {})
    return cell.get("cell_type") == "code" and bool(meta.get("grade")) and not meta.get("solution")


def is_solution_cell(cell: Any) -> bool:
    """A code cell the student writes (nbgrader clears its solution in the release)."""
    return cell.get("cell_type") == "code" and bool(cell.get("metadata", {}).get("nbgrader", {}).get("solution"))


def test_cell_ids(nb: NotebookNode) -> set[str]:
    return {cell.metadata["nbgrader"]["grade_id"] for cell in nb.cells if is_test_cell(cell)}


def is_released_file(path: Path, folder: Path) -> bool:
    """A file a grading kernel gets beside the notebook (the one rule): every file of the
    assignment's source folder but notebooks and bytecode caches."""
    return path.is_file() and path.suffix != ".ipynb" and "__pycache__" not in path.relative_to(folder).parts


def released_files(source: Path) -> dict[str, bytes]:
    """The released files of a source folder (the instructor's copies, never a student's), by
    relative path."""
    return {str(p.relative_to(source)): p.read_bytes() for p in sorted(source.rglob("*")) if is_released_file(p, source)}


def nbgrader_metadata(role: str, grade_id: str, points: Any) -> dict[str, Any]:
    """nbgrader cell metadata (schema 3) for a master cell's role."""
    meta: dict[str, Any] = {"schema_version": 3, "grade_id": grade_id, "solution": role in ("solution", "answer"),
                            "grade": role in ("test", "answer"), "locked": role in ("test", "locked")}
    if role in ("test", "answer"):
        meta["points"] = points
    return meta


def master_to_notebook(master: Path) -> NotebookNode:
    """Read a jupytext percent master and turn its ``role=... grade_id=... points=...`` cell
    headers into nbgrader cell metadata."""
    nb = jupytext.read(master, fmt="py:percent")
    seen: set[str] = set()
    for index, cell in enumerate(nb.cells, start=1):
        cell.metadata.pop("lines_to_next_cell", None)
        role = cell.metadata.pop("role", None)
        grade_id = cell.metadata.pop("grade_id", None)
        points = cell.metadata.pop("points", None)
        where = f"{master.name}, cell {index}"
        if role is None:
            if grade_id is not None or points is not None:
                raise MasterFormatError(f"{where}: grade_id/points given without role=")
            continue
        if role not in ROLES:
            raise MasterFormatError(f"{where}: role={role!r}, expected one of {', '.join(ROLES)}")
        if not isinstance(grade_id, str) or not grade_id:
            raise MasterFormatError(f"{where}: role={role!r} needs grade_id=\"...\"")
        if grade_id in seen:
            raise MasterFormatError(f"{where}: grade_id {grade_id!r} is used twice")
        seen.add(grade_id)
        if role in ("test", "answer") and (not isinstance(points, (int, float)) or points <= 0):
            raise MasterFormatError(f"{where}: a {role} cell needs points=N (N > 0)")
        if role == "answer" and cell.cell_type != "markdown":
            raise MasterFormatError(f"{where}: an answer cell is a markdown cell (# %% [markdown] role=\"answer\" ...)")
        if "BEGIN MARK SCHEME" in cell.source and not (role == "locked" and cell.cell_type == "markdown"):
            raise MasterFormatError(f"{where}: a mark scheme belongs in a locked markdown question cell (role=\"locked\")")
        if role == "solution" and cell.cell_type == "code" and "### BEGIN SOLUTION" not in cell.source:
            raise MasterFormatError(f"{where}: a solution cell needs ### BEGIN SOLUTION / ### END SOLUTION")
        cell.metadata["nbgrader"] = nbgrader_metadata(role, grade_id, points)
    nb.metadata = {"kernelspec": dict(KERNELSPEC), "language_info": {"name": "python"}}
    nbformat.validator.normalize(nb)
    return nb


class LocalIPCKernelManager(AsyncKernelManager):
    """A local kernel that talks over unix sockets in a private temporary folder: no TCP port is
    opened, and no "running over TCP without encryption" warning reaches what a learner reads."""

    _runtime_dir: str | None = None

    async def _async_pre_start_kernel(self, **kw: Any):
        self._runtime_dir = tempfile.mkdtemp(prefix="interplab-kernel-")
        self.transport = "ipc"
        self.ip = os.path.join(self._runtime_dir, "kernel")
        self.connection_file = os.path.join(self._runtime_dir, "kernel.json")
        return await super()._async_pre_start_kernel(**kw)

    async def _async_cleanup_resources(self, restart: bool = False) -> None:
        await super()._async_cleanup_resources(restart=restart)
        if not restart and self._runtime_dir:
            shutil.rmtree(self._runtime_dir, ignore_errors=True)

    cleanup_resources = _async_cleanup_resources


def execute(nb: NotebookNode, cwd: Path, env: dict[str, str], timeout: int = 600) -> NotebookNode:
    """Execute ``nb`` in place in a fresh kernel with working directory ``cwd``, going on after
    errors (their outputs stay in the cells)."""
    return execute_concurrently([(nb, cwd, env)], timeout)[0][0]


def execute_concurrently(runs: list[tuple[NotebookNode, Path, dict[str, str]]],
                         timeout: int = 600) -> list[tuple[NotebookNode, float]]:
    """Execute several notebooks at once, each in place in a fresh kernel of its own (notebook,
    working directory, environment), as :func:`execute` does one; each with its wall time."""
    seconds = [0.0] * len(runs)

    async def one(index: int, nb: NotebookNode, cwd: Path, env: dict[str, str]) -> None:
        # iopub_timeout: a cell's outputs that arrive late on a loaded machine (nbclient waits 4 s by
        # default, then drops them: a check result lost) are waited for as long as a cell may run.
        client = NotebookClient(nb, timeout=timeout, iopub_timeout=timeout, kernel_name=KERNELSPEC["name"],
                                allow_errors=True,
                                kernel_manager_class=LocalIPCKernelManager,
                                resources={"metadata": {"path": str(cwd)}},
                                extra_arguments=["--HistoryManager.hist_file=:memory:"])
        start = time.perf_counter()
        await client.async_execute(env=env)
        seconds[index] = time.perf_counter() - start

    async def all_of_them() -> None:
        await asyncio.gather(*(one(i, *run) for i, run in enumerate(runs)))

    run_sync(all_of_them)()
    return [(nb, s) for (nb, _, _), s in zip(runs, seconds)]


def mode_env(mode: str) -> dict[str, str]:
    """This environment for a kernel in ``mode`` with no hidden seed (self-study: `interplab check`)."""
    env = dict(os.environ)
    env["INTERPLAB_MODE"] = mode
    env["HF_HUB_OFFLINE"] = "1"
    env.pop("INTERPLAB_HIDDEN_SEED", None)
    env.pop("INTERPLAB_ASSIGNMENT_DIR", None)
    return env


def error_outputs(nb: NotebookNode) -> list[tuple[int, str, str]]:
    """(cell index, ename, evalue) of every error output."""
    return [(i, o.get("ename", ""), o.get("evalue", "")) for i, cell in enumerate(nb.cells)
            if cell.cell_type == "code" for o in cell.get("outputs", []) if o.get("output_type") == "error"]
