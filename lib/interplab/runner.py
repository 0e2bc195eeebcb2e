"""Self-study commands: ``interplab check NOTEBOOK`` and ``interplab lab``."""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
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


def exercise_rows(nb: nbformat.NotebookNode) -> list[Row]:
    """One row per ``check(...)`` call of an executed self-study notebook, in notebook order.

    A check that reported a result gives its verdict; a check whose cell failed before reporting
    (an unsolved exercise raises NotImplementedError, a typo raises NameError) gives that error."""
    rows: list[Row] = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        reported = {r["exercise"]: r for r in iter_bundles(cell.get("outputs", []), RESULT_MIME) if isinstance(r, dict)}
        error = next((o for o in cell.get("outputs", []) if o.get("output_type") == "error"), None)
        for exercise in _CHECK_CALL.findall(cell.source):
            if exercise in reported:
                rows.append(Row(exercise, bool(reported[exercise]["passed"]), str(reported[exercise]["message"])))
            elif error is not None:
                ename, evalue = error.get("ename", "Error"), error.get("evalue", "")
                if ename == "NotImplementedError":
                    rows.append(Row(exercise, False, "not implemented yet (NotImplementedError)"))
                else:
                    rows.append(Row(exercise, False, f"{ename}: {evalue}".strip()))
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


def check_notebook_command(args: argparse.Namespace) -> int:
    from interplab.autograder.notebooks import execute, mode_env
    from interplab.errors import UserError

    path: Path = args.notebook
    if not path.is_file():
        raise UserError(f"no notebook at {path}")
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as exc:  # corrupt JSON: say so in one line
        raise UserError(f"{path} is not a readable notebook: {exc}") from exc
    print(f"running {path} offline ...", file=sys.stderr)
    execute(nb, path.parent.resolve(), mode_env("self-study"), timeout=args.timeout)
    rows = exercise_rows(nb)
    if not rows:
        raise UserError(f"{path} has no check(...) calls")
    print(format_table(rows))
    return 0 if all(r.passed for r in rows) else 1


def lab_command(args: argparse.Namespace) -> int:
    """JupyterLab on the released notebooks (self-study mode: offline checks against public
    references). Builds the course first if nothing is released yet."""
    from interplab.errors import UserError

    release = Path(args.course) / "release"
    if not release.is_dir() or not any(release.iterdir()):
        print("no released assignments yet: building the course first ...", file=sys.stderr)
        from interplab.autograder.build import build_command

        build_command(argparse.Namespace(course=args.course, assignments=[], skip_validation=True))
    jupyter = shutil.which("jupyter-lab", path=str(Path(sys.executable).parent)) or shutil.which("jupyter-lab")
    if jupyter is None:
        raise UserError("jupyter-lab is not installed in this environment")
    return subprocess.call([jupyter, f"--notebook-dir={release}", f"--port={args.port}", "--ip=127.0.0.1"])
