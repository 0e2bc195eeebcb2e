"""Grading speed, three ways side by side on the same submissions:

    .venv/bin/python benchmarks/grading.py [--students 40] [--serial-students K] [--workers N]

Builds the circuits assignment in a temporary course, makes N submissions (correct, partial and
broken, mixed), copies the course three times and grades each copy on this machine:

- ``interplab grade`` with the default number of workers (the executor, fork server, overlapped
  recording), phases as it prints them;
- ``nbgrader autograde`` serially with the course's own ``nbgrader_config.py`` (our steps and the
  fork server: what the formgrader's button does);
- stock ``nbgrader autograde`` without our steps (stock Execute, no sandbox; the kernels still run
  in grading mode, so they do the same in-kernel work, with one seed for everybody).

The two serial runs take a minute per submission: ``--serial-students K`` grades only the first K
submissions serially (the same mix of kinds), and their ratios compare time per submission.

The first two also compute each student's hidden references (the master in reference mode with
that student's seed: `interplab grade` in batches of students per run of the master, the
formgrader's path one run per student); stock nbgrader does not. The compute bound is the
in-kernel execution time of every cell of every graded notebook plus the wall time of
`interplab grade`'s reference runs, over the cores; one master run per student (measured here) is
what the references cost before they were batched. Nothing here is asserted: these machines are
shared and noisy; the figures go in the README.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from interplab.autograder.cache import ReferenceCache
from interplab.autograder.course import Course
from interplab.autograder.executors import run_job
from interplab.autograder.store import BUILD_STUDENT

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from conftest import edit_solution, make_course  # noqa: E402  (the tests' course helpers)

WRONG = {
    "impl_per_token_loss": "def per_token_loss(logits, tokens):\n"
                           "    return -logits[:, 1:].log_softmax(-1).gather(-1, tokens[:, 1:, None])[..., 0]\n",
    "impl_logit_diff": "def logit_diff(logits, correct, wrong):\n"
                       "    return logits[:, 0].gather(-1, correct[:, None])[:, 0] - logits[:, 0].gather(-1, wrong[:, None])[:, 0]\n",
}
STOCK_CONFIG = """
c = get_config()
import os
here = os.path.dirname(os.path.abspath(__file__))
c.CourseDirectory.root = here
c.CourseDirectory.course_id = "interplab"
c.CourseDirectory.db_url = "sqlite:///" + os.path.join(here, "gradebook.db")
c.Execute.timeout = 120
"""


def run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return time.perf_counter() - start, proc.stdout


def in_kernel_seconds(nb: dict) -> float:
    """Sum over cells of (execute reply - execute input), from nbclient's timing metadata."""
    total = 0.0
    for cell in nb["cells"]:
        timing = cell.get("metadata", {}).get("execution", {})
        if "iopub.execute_input" in timing and "shell.execute_reply" in timing:
            start = datetime.fromisoformat(timing["iopub.execute_input"].replace("Z", "+00:00"))
            end = datetime.fromisoformat(timing["shell.execute_reply"].replace("Z", "+00:00"))
            total += (end - start).total_seconds()
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--students", type=int, default=40)
    parser.add_argument("--serial-students", type=int, default=None,
                        help="grade only this many submissions in the two serial runs (default: all)")
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args()
    py = sys.executable
    env = {"PATH": os.pathsep.join([str(Path(py).parent), os.environ["PATH"]]), "HF_HUB_OFFLINE": "1"}
    cores = len(os.sched_getaffinity(0))
    workers = min(cores, args.workers or cores)

    with tempfile.TemporaryDirectory(prefix="interplab-bench-") as tmp:
        ours = prepare(Path(tmp), args.students, env)
        configured, stock = Path(tmp) / "configured" / "course", Path(tmp) / "stock" / "course"
        serial = min(args.serial_students or args.students, args.students)
        for copy in (configured, stock):
            shutil.copytree(ours, copy)
            for extra in sorted((copy / "submitted").iterdir())[serial:]:
                shutil.rmtree(extra)
        (stock / "nbgrader_config.py").write_text(STOCK_CONFIG)
        course = Course.load(ours)
        (job, _), = ReferenceCache.of(course, "circuits").jobs([BUILD_STUDENT])
        reference = run_job(job)
        reference_compute = in_kernel_seconds(json.loads(reference.executed or "{}") or {"cells": []})
        seed = str(course.store.seed("circuits", BUILD_STUDENT))

        print(f"interplab grade, {args.students} submissions ...", flush=True)
        cmd = [py, "-m", "interplab.cli", "grade", "circuits", "--course", str(ours)]
        if args.workers:
            cmd += ["--workers", str(args.workers)]
        wall, out = run(cmd, REPO, env)
        phases = [line for line in out.splitlines() if line.startswith("timings:")]
        executions = ours / ".interplab" / "circuits" / "executions"
        compute = sum(in_kernel_seconds(json.loads(p.read_text())) for p in executions.glob("*/*.ipynb"))
        reference_runs = float(re.search(r"reference runs ([0-9.]+) s", out).group(1))
        compute += reference_runs

        print("nbgrader autograde, serial, the course's own config ...", flush=True)
        serial_ours = run([py, "-m", "nbgrader", "autograde", "circuits", "--force"], configured, env)[0]
        print("stock nbgrader autograde, serial, no InterpLab steps ...", flush=True)
        baseline = run([py, "-m", "nbgrader", "autograde", "circuits", "--force"], stock,
                       {**env, "INTERPLAB_MODE": "grading", "INTERPLAB_HIDDEN_SEED": seed})[0]

    bound = compute / workers
    per_submission = wall / args.students
    print(f"submissions:                          {args.students} (cores {cores}, workers {workers}); "
          f"serial runs on {serial}")
    print(f"interplab grade:                      {wall:.1f} s, {per_submission:.2f} s per submission  "
          f"({phases[0] if phases else 'no timings printed'})")
    print(f"nbgrader autograde, course config:    {serial_ours:.1f} s, {serial_ours / serial:.2f} s per submission  "
          f"({serial_ours / serial / per_submission:.2f}x ours per submission)")
    print(f"stock nbgrader autograde, no steps:   {baseline:.1f} s, {baseline / serial:.2f} s per submission  "
          f"({baseline / serial / per_submission:.2f}x ours per submission)")
    print(f"in-kernel compute:                    {compute:.1f} s (of which reference runs {reference_runs:.1f} s, "
          f"where one run per student would take {args.students} x {reference_compute:.1f} s; bound {bound:.1f} s "
          f"on {workers} cores)")
    print(f"wall / compute bound:                 {wall / bound:.2f}")


def prepare(tmp: Path, submissions: int, env: dict[str, str]) -> Path:
    """A course in ``tmp/ours`` with circuits built and ``submissions`` submissions of it."""
    py = sys.executable
    ours = make_course(tmp / "ours")
    print("building circuits ...", flush=True)
    run([py, "-m", "interplab.cli", "build", "--course", str(ours), "circuits", "--skip-validation"], REPO, env)
    source_nb = ours / "source" / "circuits" / "circuits.ipynb"
    release_nb = ours / "release" / "circuits" / "circuits.ipynb"
    for i in range(submissions):
        target = ours / "submitted" / f"student{i:02d}" / "circuits" / "circuits.ipynb"
        kind = i % 4
        if kind in (0, 1):  # correct
            target.parent.mkdir(parents=True)
            shutil.copy(source_nb, target)
        elif kind == 2:     # partial
            edit_solution(source_nb, WRONG, target)
        else:               # broken: untouched student version
            target.parent.mkdir(parents=True)
            shutil.copy(release_nb, target)
    return ours


if __name__ == "__main__":
    main()
