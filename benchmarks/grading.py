"""Grading speed: `interplab grade` against stock `nbgrader autograde`, side by side, same submissions.

    .venv/bin/python benchmarks/grading.py [--submissions 20] [--workers N]

Builds the circuits assignment in a temporary course, makes N submissions (correct, partial and
broken, mixed), then grades them twice on this machine:

- baseline: stock `nbgrader autograde` (serial, stock preprocessors; its kernels run in grading
  mode too, so they do the same in-kernel work);
- ours: `interplab grade` with the default number of workers.

It prints the speedup over nbgrader, and our wall time divided by the compute bound (the sum of the
in-kernel execution time of every cell, over the number of cores). Nothing here is asserted: these
machines are shared and noisy; the figures go in the README.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from conftest import edit_solution, make_course  # noqa: E402  (the tests' course helpers)

WRONG = {
    "impl_per_token_loss": "def per_token_loss(logits, tokens):\n"
                           "    return -logits[:, 1:].log_softmax(-1).gather(-1, tokens[:, 1:, None])[..., 0]\n",
    "impl_previous_token_score": "def previous_token_score(pattern):\n"
                                 "    return pattern.diagonal(0, -2, -1).mean((0, -1))\n",
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


def in_kernel_seconds(notebook: Path) -> float:
    """Sum over cells of (execute reply - execute input), from nbclient's timing metadata."""
    total = 0.0
    for cell in json.loads(notebook.read_text())["cells"]:
        timing = cell.get("metadata", {}).get("execution", {})
        if "iopub.execute_input" in timing and "shell.execute_reply" in timing:
            start = datetime.fromisoformat(timing["iopub.execute_input"].replace("Z", "+00:00"))
            end = datetime.fromisoformat(timing["shell.execute_reply"].replace("Z", "+00:00"))
            total += (end - start).total_seconds()
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--submissions", type=int, default=20)
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args()
    py = sys.executable
    env = {"PATH": os.pathsep.join([str(Path(py).parent), os.environ["PATH"]]), "HF_HUB_OFFLINE": "1"}
    cores = len(os.sched_getaffinity(0))

    with tempfile.TemporaryDirectory(prefix="interplab-bench-") as tmp:
        ours = prepare(Path(tmp), args.submissions, env)
        stock = Path(tmp) / "stock" / "course"
        shutil.copytree(ours, stock)
        (stock / "nbgrader_config.py").write_text(STOCK_CONFIG)
        seed = (ours / ".interplab" / "circuits" / "seed").read_text().strip()
        print(f"stock nbgrader autograde, serial, {args.submissions} submissions ...", flush=True)
        baseline = run([py, "-m", "nbgrader", "autograde", "circuits", "--force"], stock,
                       {**env, "INTERPLAB_MODE": "grading", "INTERPLAB_HIDDEN_SEED": seed})[0]

        print("interplab grade ...", flush=True)
        cmd = [py, "-m", "interplab.cli", "grade", "circuits", "--course", str(ours)]
        if args.workers:
            cmd += ["--workers", str(args.workers)]
        wall, out = run(cmd, REPO, env)
        phases = [line for line in out.splitlines() if line.startswith("timings:")]
        executions = ours / ".interplab" / "circuits" / "executions"
        compute = sum(in_kernel_seconds(p) for p in executions.glob("*/*.ipynb"))

    workers = args.workers or cores
    bound = compute / min(cores, workers)
    print(f"submissions:                {args.submissions}")
    print(f"cores:                      {cores} (workers {workers})")
    print(f"stock nbgrader autograde:   {baseline:.1f} s")
    print(f"interplab grade:            {wall:.1f} s  ({phases[0] if phases else 'no timings printed'})")
    print(f"in-kernel compute:          {compute:.1f} s (bound {bound:.1f} s on {min(cores, workers)} cores)")
    print(f"speedup over nbgrader:      {baseline / wall:.2f}x")
    print(f"wall / compute bound:       {wall / bound:.2f}")


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
