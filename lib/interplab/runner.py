"""Self-study commands: ``interplab check NOTEBOOK``, ``interplab lab``, ``interplab fetch`` and
``interplab progress`` (the workspace itself is :mod:`interplab.workspace`)."""
from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import nbformat

from interplab.checking import RESULT_MIME, iter_bundles

_CHECK_CALL = re.compile(r"""check\(\s*["']([A-Za-z0-9_]+\.[A-Za-z0-9_]+)["']""")


@dataclass
class Row:
    exercise: str
    passed: bool
    message: str


def exercise_rows(nb: nbformat.NotebookNode, unrun_ok: bool = False) -> list[Row]:
    """One row per ``check(...)`` call of an executed self-study notebook, in notebook order.

    A check that reported a result gives its verdict; a check whose cell failed before reporting
    (an unsolved exercise raises NotImplementedError, a typo raises NameError) gives that error.
    With ``unrun_ok`` (a notebook saved by a learner) a cell that was never run says "not run yet"."""
    rows: list[Row] = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        if unrun_ok and cell.get("execution_count") is None and not cell.get("outputs"):
            rows.extend(Row(exercise, False, "not run yet") for exercise in _CHECK_CALL.findall(cell.source))
            continue
        reported = {r["exercise"]: r for r in iter_bundles(cell.get("outputs", []), RESULT_MIME) if isinstance(r, dict)}
        error = next((o for o in cell.get("outputs", []) if o.get("output_type") == "error"), None)
        for exercise in _CHECK_CALL.findall(cell.source):
            if error is not None and error.get("ename") == "NotImplementedError":
                rows.append(Row(exercise, False, "not implemented yet (NotImplementedError)"))
            elif exercise in reported:
                rows.append(Row(exercise, bool(reported[exercise]["passed"]), str(reported[exercise]["message"])))
            elif error is not None:
                rows.append(Row(exercise, False, f"{error.get('ename', 'Error')}: {error.get('evalue', '')}".strip()))
            else:
                rows.append(Row(exercise, False, "the check did not run"))
    return rows


def format_table(rows: list[Row]) -> str:
    width = max([len(r.exercise) for r in rows] + [8])
    lines = [f"{'exercise':{width}}  result  message", f"{'-' * width}  ------  -------"]
    for r in rows:
        message = r.message.splitlines()[0] if r.message else ""
        lines.append(f"{r.exercise:{width}}  {'pass' if r.passed else 'FAIL':6}  {message if not r.passed else 'ok'}")
    passed = sum(r.passed for r in rows)
    lines.append(f"{passed} of {len(rows)} exercises pass")
    return "\n".join(lines)


def run_checks(nb: nbformat.NotebookNode, path: Path, timeout: int) -> None:
    """Execute a notebook in place, offline and in self-study mode, in its own folder."""
    from interplab.autograder.notebooks import execute, mode_env

    execute(nb, path.parent.resolve(), mode_env("self-study"), timeout=timeout)


def check_notebook_command(args: argparse.Namespace) -> int:
    from interplab.errors import UserError

    path: Path = args.notebook
    if not path.is_file():
        raise UserError(f"no notebook at {path}")
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as exc:  # corrupt JSON: say so in one line
        raise UserError(f"{path} is not a readable notebook: {exc}") from exc
    print(f"running {path} offline ...", file=sys.stderr)
    run_checks(nb, path, args.timeout)
    rows = exercise_rows(nb)
    if not rows:
        raise UserError(f"{path} has no check(...) calls")
    print(format_table(rows))
    return 0 if all(r.passed for r in rows) else 1


def _released(course: Path) -> Path:
    """The course's release folder, built first (without validation) if nothing is released yet."""
    release = Path(course) / "release"
    if not release.is_dir() or not any(release.iterdir()):
        print("no released assignments yet: building the course first (a few minutes per assignment) ...",
              file=sys.stderr)
        from interplab.autograder.build import build_command

        build_command(argparse.Namespace(course=course, assignments=[], skip_validation=True))
    return release


def fetch_command(args: argparse.Namespace) -> int:
    """Fetch released assignments into the learner's workspace (never over a file already there)."""
    from interplab import workspace

    results = workspace.fetch(_released(args.course), args.workspace)
    for line in workspace.describe(results, args.workspace):
        print(line)
    print(f"workspace: {args.workspace} ({len(results)} assignments)")
    return 0


def progress_command(args: argparse.Namespace) -> int:
    from interplab import workspace

    report = workspace.progress(args.workspace, run=args.run, timeout=args.timeout)
    print(workspace.format_progress(report, args.workspace))
    return 0


def lab_command(args: argparse.Namespace) -> int:
    """JupyterLab on the learner's workspace (self-study mode: offline checks against public
    references), after fetching what is new. Builds the course first if nothing is released yet."""
    from interplab.errors import UserError

    fetch_command(args)
    jupyter = shutil.which("jupyter-lab", path=str(Path(sys.executable).parent)) or shutil.which("jupyter-lab")
    if jupyter is None:
        raise UserError("jupyter-lab is not installed in this environment")
    argv = [jupyter, f"--notebook-dir={args.workspace}", f"--port={args.port}", "--ip=127.0.0.1"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        argv.append("--allow-root")  # a container or a lab machine's admin shell: the learner is root
    if args.no_browser:
        argv.append("--no-browser")
    sys.stdout.flush()
    os.execv(argv[0], argv)  # JupyterLab takes this process over: Ctrl-C and signals reach it directly
