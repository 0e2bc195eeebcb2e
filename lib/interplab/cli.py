"""The ``interplab`` command line (see README). Each subcommand's work lives in its own module;
this file only parses arguments and turns known errors into one clear line and exit code 2."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from interplab.errors import UserError


def default_course() -> Path:
    """``--course`` default: ``$INTERPLAB_COURSE``, else ``course/`` at the repository root."""
    if os.environ.get("INTERPLAB_COURSE"):
        return Path(os.environ["INTERPLAB_COURSE"])
    return repo_root() / "course"


def repo_root() -> Path:
    """The checkout this package is installed from (editable install), else the working directory."""
    here = Path(__file__).resolve().parents[2]
    return here if (here / "assignments").is_dir() else Path.cwd()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="interplab", description="InterpLab course platform")
    sub = parser.add_subparsers(dest="command", required=True)

    def course_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument("--course", type=Path, default=None, help="course root (default: $INTERPLAB_COURSE or ./course)")

    p = sub.add_parser("build", help="build assignments: source, release, references, validation")
    course_arg(p)
    p.add_argument("assignments", nargs="*", help="assignment slugs (default: all in assignments/)")
    p.add_argument("--skip-validation", action="store_true", help="do not execute the student version")

    p = sub.add_parser("grade", help="autograde every submission of an assignment")
    course_arg(p)
    p.add_argument("assignment")
    p.add_argument("--workers", type=int, default=None, help="parallel grading kernels (default: all cores)")
    p.add_argument("--executor", choices=["local", "dask"], default="local")
    p.add_argument("--scheduler", default=None, help="dask.distributed scheduler address")
    p.add_argument("--allow-unsandboxed", action="store_true",
                   help="grade even where kernels cannot be isolated (no bwrap, not root); see course.toml")

    p = sub.add_parser("report", help="class analytics after grading: scores, pass rates, misconceptions, limits")
    course_arg(p)
    p.add_argument("assignment")
    p.add_argument("--threshold", type=float, default=50.0, help="list students below this percentage (default 50)")

    p = sub.add_parser("similarity", help="rank pairs of submissions by the similarity of their solution cells")
    course_arg(p)
    p.add_argument("assignment")
    p.add_argument("--threshold", type=float, default=0.5, help="show pairs at or above this score side by side (default 0.5)")
    p.add_argument("--top", type=int, default=10, help="pairs to print (default 10; the CSV has every pair)")

    p = sub.add_parser("export", help="the gradebook of an assignment in an LMS's import format")
    course_arg(p)
    p.add_argument("assignment")
    p.add_argument("--format", choices=["canvas", "moodle", "csv"], required=True)
    p.add_argument("--mapping", type=Path, default=None,
                   help="CSV mapping hub user names to LMS ids (default: <course>/lms_users.csv if present)")
    p.add_argument("--title", default=None, help="the assignment's column title in the LMS (default: its slug)")
    p = sub.add_parser("extend", help="give a student a later due date for an assignment (course.toml [schedule])")
    course_arg(p)
    p.add_argument("assignment")
    p.add_argument("student")
    when = p.add_mutually_exclusive_group(required=True)
    when.add_argument("--until", help="the new due date: 2027-02-10 (end of that day) or 2027-02-10T12:00, "
                                      "in the schedule's time zone unless it names an offset")
    when.add_argument("--revoke", action="store_true", help="remove the student's extension")

    p = sub.add_parser("site", help="build the course website into course/site/ (index.html), offline")
    course_arg(p)
    p.add_argument("--out", type=Path, default=None, help="where to write it (default: <course>/site)")

    p = sub.add_parser("check", help="self-study: run a notebook and report every exercise")
    p.add_argument("notebook", type=Path)
    p.add_argument("--timeout", type=int, default=600, help="seconds per cell (default 600)")

    def workspace_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument("--workspace", type=Path, default=None,
                       help="your own copies of the assignments (default: $INTERPLAB_WORKSPACE or ./work)")

    p = sub.add_parser("lab", help="self-study: fetch new assignments into your workspace and open JupyterLab there")
    course_arg(p)
    workspace_arg(p)
    p.add_argument("--port", type=int, default=8888)
    p.add_argument("--no-browser", action="store_true", help="do not open a browser")

    p = sub.add_parser("fetch", help="self-study: copy released assignments into your workspace (never over your files)")
    course_arg(p)
    workspace_arg(p)

    p = sub.add_parser("progress", help="self-study: which exercises pass, per assignment in your workspace")
    workspace_arg(p)
    p.add_argument("--run", action="store_true", help="re-run every notebook offline now (default: saved results)")
    p.add_argument("--timeout", type=int, default=600, help="seconds per cell with --run (default 600)")

    p = sub.add_parser("hub", help="the local JupyterHub (what `make hub` runs)")
    course_arg(p)

    p = sub.add_parser("secret", help="the course secret every student's hidden seed is derived from")
    secret = p.add_subparsers(dest="secret_command", required=True)
    course_arg(secret.add_parser("rotate", help="a new secret (a new term): new hidden inputs for everybody; "
                                               "cached references and executions are dropped"))

    p = sub.add_parser("zoo", help="the shipped models")
    zoo = p.add_subparsers(dest="zoo_command", required=True)
    zoo.add_parser("list", help="list models and their cards")
    t = zoo.add_parser("train", help="retrain a model with its fixed seeds")
    t.add_argument("name")
    t.add_argument("--out", type=Path, default=None, help="where to write weights (default: the package)")
    t.add_argument("--seed", type=int, default=None, help="replace the recipe's seed (needs --out)")
    zoo.add_parser("verify", help="check every shipped model against its card")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if getattr(args, "course", "unset") is None:
        args.course = default_course()
    if getattr(args, "workspace", "unset") is None:
        from interplab.workspace import default_workspace

        args.workspace = default_workspace()
    try:
        if args.command == "build":
            from interplab.autograder.build import build_command
            return build_command(args)
        if args.command == "grade":
            from interplab.autograder.grade import grade_command
            return grade_command(args)
        if args.command == "report":
            from interplab.autograder.report import report_command
            return report_command(args)
        if args.command == "similarity":
            from interplab.autograder.similarity import similarity_command
            return similarity_command(args)
        if args.command == "export":
            from interplab.autograder.export import export_command
            return export_command(args)
        if args.command == "extend":
            from interplab.autograder.deadlines import extend_command
            return extend_command(args)
        if args.command == "site":
            from interplab.autograder.site import site_command
            return site_command(args)
        if args.command == "check":
            from interplab.runner import check_notebook_command
            return check_notebook_command(args)
        if args.command == "lab":
            from interplab.runner import lab_command
            return lab_command(args)
        if args.command == "fetch":
            from interplab.runner import fetch_command
            return fetch_command(args)
        if args.command == "progress":
            from interplab.runner import progress_command
            return progress_command(args)
        if args.command == "hub":
            from interplab.autograder.hub.command import hub_command
            return hub_command(args)
        if args.command == "secret":
            from interplab.autograder.course import Course

            Course.load(args.course).store.rotate_secret()
            print(f"interplab secret: rotated; every student's hidden seed in {args.course} is new "
                  "(their references are recomputed at the next `interplab grade`)")
            return 0
        if args.command == "zoo":
            from interplab.zoo.cli import zoo_command
            return zoo_command(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except UserError as exc:
        print(f"interplab {args.command}: {exc}", file=sys.stderr)
        return 2
    return 2


if __name__ == "__main__":
    sys.exit(main())
