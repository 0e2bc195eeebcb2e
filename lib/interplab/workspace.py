"""A self-study learner's workspace: their own copies of the released assignments, never overwritten.

``interplab lab`` (and ``interplab fetch``) copies each released assignment, ``<course>/release/<a>/``,
into ``<workspace>/<a>/`` once, the way nbgrader's fetch does. The build, the hub and later fetches
never write into a file that is already in the workspace: when the release of an assignment changes
(a rebuilt or updated master), the new release is fetched *beside* the learner's copy, into
``<workspace>/<a>/v2/`` with its notebook renamed ``<a>.v2.ipynb`` (then ``v3``, ...), together with
its own ``checks.py`` and references, so every version keeps checking against the references it was
released with. What was fetched is recorded in ``<workspace>/.interplab/fetched.json`` (release
fingerprints only, never the learner's files).

``interplab progress`` reads the workspace: for every assignment, the newest version's notebook, the
learning objectives from its first cell, and which exercises pass, either from the check results the
learner's last run saved in the notebook, or (``--run``) by executing it offline now.
"""
from __future__ import annotations

import hashlib
import html
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from interplab.errors import UserError

BOOKKEEPING = ".interplab"
FETCHED = "fetched.json"
PROGRESS_NOTEBOOK = "progress.ipynb"


def default_workspace() -> Path:
    """``$INTERPLAB_WORKSPACE``, else ``work/`` at the repository root (git-ignored)."""
    if os.environ.get("INTERPLAB_WORKSPACE"):
        return Path(os.environ["INTERPLAB_WORKSPACE"])
    from interplab.cli import repo_root

    return repo_root() / "work"


def release_fingerprint(folder: Path) -> str:
    """One hash of what a released assignment says: file names and bytes, and for notebooks what
    their cells say (a rebuild of the same master draws new random cell ids: not a new release)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode() + b"\0")
        digest.update(hashlib.sha256(_content(path)).digest())
    return digest.hexdigest()


def _content(path: Path) -> bytes:
    if path.suffix == ".ipynb":
        try:
            nb = json.loads(path.read_text())
            cells = [(c.get("cell_type"), "".join(c.get("source", "")), c.get("metadata", {}).get("nbgrader"))
                     for c in nb.get("cells", [])]
            return json.dumps(cells, sort_keys=True).encode()
        except (ValueError, AttributeError, TypeError):
            pass  # not a notebook we can read: its bytes are what it says
    return path.read_bytes()


def _version_dir(workspace: Path, assignment: str, version: int) -> Path:
    return workspace / assignment if version == 1 else workspace / assignment / f"v{version}"


def _notebook_name(name: str, version: int) -> str:
    if version == 1 or not name.endswith(".ipynb"):
        return name
    return f"{name[:-len('.ipynb')]}.v{version}.ipynb"


def _copy_new(source: Path, target: Path, version: int) -> list[Path]:
    """Copy a release folder into ``target`` without ever replacing an existing file."""
    written = []
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        relative = path.relative_to(source)
        destination = target / relative.parent / _notebook_name(relative.name, version)
        if destination.exists() or destination.is_symlink():
            raise UserError(f"{destination} already exists; not overwriting it (move it away to fetch again)")
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, destination)
        written.append(destination)
    return written


@dataclass
class FetchResult:
    assignment: str
    version: int
    notebooks: list[Path]
    new: bool  # False: this release is already in the workspace


def _load_fetched(workspace: Path) -> dict[str, list[dict]]:
    path = workspace / BOOKKEEPING / FETCHED
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{path} is not valid JSON ({exc}); delete it to start the bookkeeping afresh") from exc
    return data if isinstance(data, dict) else {}


def _save_fetched(workspace: Path, fetched: dict[str, list[dict]]) -> None:
    path = workspace / BOOKKEEPING / FETCHED
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(fetched, indent=1, sort_keys=True))
    tmp.replace(path)


def fetch(release_root: Path, workspace: Path) -> list[FetchResult]:
    """Fetch every released assignment into the workspace (new ones, and newer releases beside the old)."""
    if not release_root.is_dir():
        raise UserError(f"no released assignments at {release_root}; run `interplab build` first")
    workspace.mkdir(parents=True, exist_ok=True)
    fetched = _load_fetched(workspace)
    results = []
    for folder in sorted(p for p in release_root.iterdir() if p.is_dir()):
        assignment = folder.name
        fingerprint = release_fingerprint(folder)
        versions = fetched.setdefault(assignment, [])
        known = next((v for v in versions if v["fingerprint"] == fingerprint), None)
        if known is not None:
            directory = _version_dir(workspace, assignment, known["version"])
            results.append(FetchResult(assignment, known["version"], sorted(directory.glob("*.ipynb")), new=False))
            continue
        version = max([v["version"] for v in versions], default=0) + 1
        if version == 1 and (workspace / assignment).exists():
            # a folder the bookkeeping does not know (copied in by hand, bookkeeping deleted): keep it
            version = 2
            while _version_dir(workspace, assignment, version).exists():
                version += 1
        written = _copy_new(folder, _version_dir(workspace, assignment, version), version)
        versions.append({"version": version, "fingerprint": fingerprint})
        _save_fetched(workspace, fetched)
        results.append(FetchResult(assignment, version, [p for p in written if p.suffix == ".ipynb"], new=True))
    _ensure_progress_notebook(workspace)
    return results


def describe(results: list[FetchResult], workspace: Path) -> list[str]:
    """What a fetch did, one line per assignment."""
    lines = []
    for r in results:
        shown = ", ".join(str(p.relative_to(workspace)) for p in r.notebooks) or "(no notebook)"
        if not r.new:
            continue
        if r.version == 1:
            lines.append(f"{r.assignment}: fetched {shown}")
        else:
            lines.append(f"{r.assignment}: a newer release exists; fetched it beside your work as {shown} "
                         "(your earlier copy is untouched)")
    return lines


def _ensure_progress_notebook(workspace: Path) -> None:
    """A notebook in the lab that shows the progress table (written once, never overwritten)."""
    path = workspace / PROGRESS_NOTEBOOK
    if path.exists():
        return
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("# Your progress through the course\n\nRun the cell below: it reads the check "
                                      "results saved in your notebooks (run a notebook's test cells and save it to "
                                      "update them). From a terminal: `interplab progress` (add `--run` to re-run "
                                      "every notebook offline now)."),
        nbformat.v4.new_code_cell("from interplab.workspace import show_progress\nshow_progress()"),
    ]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nbformat.write(nb, path)


# ------------------------------------------------------------------------------------------------
# Progress
# ------------------------------------------------------------------------------------------------

_OBJECTIVES_HEADING = re.compile(r"\*\*After this (?:notebook|assignment|week) you will be able to\*\*", re.I)


@dataclass
class AssignmentProgress:
    assignment: str
    notebook: Path
    title: str
    objectives: list[str]
    rows: list = field(default_factory=list)  # interplab.runner.Row
    ran: bool = False  # False: no check has run in the saved notebook yet

    @property
    def passed(self) -> int:
        return sum(r.passed for r in self.rows)


def title_and_objectives(nb: nbformat.NotebookNode) -> tuple[str, list[str]]:
    """The notebook's title (first heading) and the bullets under "After this ... you will be able to"."""
    title, objectives = "", []
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            continue
        lines = cell.source.splitlines()
        if not title:
            title = next((line.lstrip("# ").strip() for line in lines if line.startswith("# ")), "")
        for i, line in enumerate(lines):
            if _OBJECTIVES_HEADING.search(line):
                bullets: list[str] = []
                for following in lines[i + 1:]:
                    if following.startswith("- "):
                        bullets.append(following[2:].strip())
                    elif following.startswith("  ") and bullets:
                        bullets[-1] += " " + following.strip()
                    elif following.strip() and bullets:
                        break
                return title, bullets
    return title, objectives


def newest_notebooks(workspace: Path) -> dict[str, Path]:
    """assignment -> the notebook of its newest fetched version."""
    fetched = _load_fetched(workspace)
    found = {}
    for assignment, versions in sorted(fetched.items()):
        if not versions:
            continue
        version = max(v["version"] for v in versions)
        notebook = _version_dir(workspace, assignment, version) / _notebook_name(f"{assignment}.ipynb", version)
        if notebook.is_file():
            found[assignment] = notebook
    return found


def progress(workspace: Path, run: bool = False, timeout: int = 600) -> list[AssignmentProgress]:
    from interplab.runner import exercise_rows, run_checks

    notebooks = newest_notebooks(workspace)
    if not notebooks:
        raise UserError(f"no assignments in the workspace {workspace}; run `interplab lab` (or `interplab fetch`) first")
    report = []
    for assignment, path in notebooks.items():
        nb = nbformat.read(path, as_version=4)
        title, objectives = title_and_objectives(nb)
        if run:
            run_checks(nb, path, timeout)
        rows = exercise_rows(nb, unrun_ok=not run)
        ran = run or any(r.message != "not run yet" for r in rows)
        report.append(AssignmentProgress(assignment, path, title, objectives, rows, ran))
    return report


def format_progress(report: list[AssignmentProgress], workspace: Path) -> str:
    lines = []
    total = sum(len(p.rows) for p in report)
    for p in report:
        lines.append(f"{p.assignment}: {p.passed} of {len(p.rows)} exercises pass"
                     + ("" if p.ran else " (not run yet: run its test cells, or `interplab progress --run`)")
                     + f"  [{p.notebook.relative_to(workspace)}]")
        if p.title:
            lines.append(f"  {p.title}")
        for objective in p.objectives:
            lines.append(f"  - {objective}")
        for r in p.rows:
            mark = "pass" if r.passed else ("----" if r.message == "not run yet" else "FAIL")
            lines.append(f"    {mark}  {r.exercise}" + ("" if r.passed or r.message == "not run yet" else
                                                         f": {r.message.splitlines()[0] if r.message else ''}"))
    lines.append(f"course: {sum(p.passed for p in report)} of {total} exercises pass")
    return "\n".join(lines)


def progress_html(report: list[AssignmentProgress]) -> str:
    """The progress table as HTML (everything escaped: notebook text is the learner's)."""
    parts = ["<table><tr><th>assignment</th><th>passing</th><th>learning objectives</th></tr>"]
    for p in report:
        objectives = "".join(f"<li>{html.escape(o)}</li>" for o in p.objectives)
        exercises = "<br>".join(("&#10004; " if r.passed else "&#10008; ") + html.escape(r.exercise) for r in p.rows)
        parts.append(f"<tr><td><b>{html.escape(p.assignment)}</b><br>{html.escape(p.title)}</td>"
                     f"<td>{p.passed} of {len(p.rows)}<br><small>{exercises}</small></td><td><ul>{objectives}</ul></td></tr>")
    parts.append("</table>")
    return "".join(parts)


def show_progress(workspace: Path | None = None) -> None:
    """Display the progress table in a notebook (the lab's progress.ipynb calls this)."""
    from IPython.display import HTML, display

    if workspace is None:
        cwd = Path.cwd()
        workspace = cwd if (cwd / BOOKKEEPING / FETCHED).is_file() else default_workspace()
    display(HTML(progress_html(progress(workspace))))
