"""Self-study never loses a learner's work: the workspace (`interplab fetch` / `lab`), the progress
view, a root start of JupyterLab, and a clean install of the package that checks a notebook offline.

Everything runs the real command line on a real build of the test-only `mini` assignment."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import nbformat
import pytest
import requests

from interplab import workspace

from conftest import REPO, TEST_ASSIGNMENTS, interplab, make_course, tool_env
from hubtools import free_port

pytestmark = pytest.mark.slow

SOLVED_SOFTMAX = "def softmax(x):\n    z = np.exp(x - x.max(axis=-1, keepdims=True))\n    return z / z.sum(axis=-1, keepdims=True)\n"


@pytest.fixture(scope="module")
def course(tmp_path_factory) -> Path:
    """A course whose `mini` master is a copy we may edit (a changed master is a new release)."""
    root = tmp_path_factory.mktemp("selfstudy")
    masters = root / "assignments"
    shutil.copytree(TEST_ASSIGNMENTS / "mini", masters / "mini")
    course = make_course(root, masters)
    interplab("build", "--course", str(course), "mini", check=True)
    return course


def solve(notebook: Path, function: str, source: str) -> None:
    """Replace the learner's (unsolved) definition of ``function`` by ``source``, as a learner edits."""
    nb = nbformat.read(notebook, as_version=4)
    cell = next(c for c in nb.cells if c.cell_type == "code" and f"def {function}(" in c.source)
    cell.source = source
    nbformat.write(nb, notebook)


def test_learner_work_survives_rebuilds_and_new_releases(course, tmp_path) -> None:
    work = tmp_path / "work"
    out = interplab("fetch", "--course", str(course), "--workspace", str(work), check=True).stdout
    mine = work / "mini" / "mini.ipynb"
    assert "mini: fetched mini/mini.ipynb" in out and mine.is_file()
    assert (work / "mini" / "checks.py").is_file() and (work / "mini" / "references.json").is_file()
    solve(mine, "softmax", SOLVED_SOFTMAX)
    edited = mine.read_bytes()

    # the build of the same assignment, and fetching again (what `make lab` does first): nothing moves
    interplab("build", "--course", str(course), "mini", check=True)
    out = interplab("fetch", "--course", str(course), "--workspace", str(work), check=True).stdout
    assert mine.read_bytes() == edited
    assert not (work / "mini" / "v2").exists(), out

    # a changed master: the newer release appears beside the learner's copy, never over it
    master = course.parent / "assignments" / "mini" / "mini.py"
    master.write_text(master.read_text().replace("## Row norms", "## Row norms (the Euclidean norm of each row)"))
    interplab("build", "--course", str(course), "mini", check=True)
    out = interplab("fetch", "--course", str(course), "--workspace", str(work), check=True).stdout
    newer = work / "mini" / "v2" / "mini.v2.ipynb"
    assert "a newer release exists" in out and "mini/v2/mini.v2.ipynb" in out, out
    assert mine.read_bytes() == edited and newer.is_file()
    assert "Euclidean norm" in newer.read_text() and "Euclidean norm" not in mine.read_text()
    assert (work / "mini" / "v2" / "checks.py").is_file()  # each version checks against its own release
    # the old copy still checks against the references it was released with
    proc = interplab("check", str(mine))
    assert "mini.softmax" in proc.stdout and "1 of 2 exercises pass" in proc.stdout, proc.stdout + proc.stderr


def test_fetch_never_replaces_a_file(tmp_path) -> None:
    """A folder the bookkeeping does not know (copied in by hand) is kept; the release goes beside it."""
    release = tmp_path / "release" / "a"
    release.mkdir(parents=True)
    (release / "a.ipynb").write_text("{}")
    (release / "checks.py").write_text("ASSIGNMENT = 'a'\n")
    work = tmp_path / "work"
    (work / "a").mkdir(parents=True)
    (work / "a" / "a.ipynb").write_text("mine")
    results = workspace.fetch(tmp_path / "release", work)
    assert (work / "a" / "a.ipynb").read_text() == "mine"
    assert results[0].version == 2 and (work / "a" / "v2" / "a.v2.ipynb").read_text() == "{}"
    assert workspace.fetch(tmp_path / "release", work)[0].new is False


def test_progress_counts_exactly_what_passes(course, tmp_path) -> None:
    work = tmp_path / "work"
    interplab("fetch", "--course", str(course), "--workspace", str(work), check=True)
    mine = work / "mini" / "mini.ipynb"

    out = interplab("progress", "--workspace", str(work), check=True).stdout
    assert "mini: 0 of 2 exercises pass (not run yet" in out, out
    assert "- write a numerically stable softmax;" in out  # the week's learning objectives

    solve(mine, "softmax", SOLVED_SOFTMAX)
    out = interplab("progress", "--workspace", str(work), "--run", check=True).stdout
    assert "mini: 1 of 2 exercises pass" in out and "course: 1 of 2 exercises pass" in out, out
    assert "pass  mini.softmax" in out and "FAIL  mini.row_norms: not implemented yet" in out, out

    # the results a learner's own run saved in the notebook: executed and saved, read without running
    from interplab.runner import run_checks

    nb = nbformat.read(mine, as_version=4)
    run_checks(nb, mine, timeout=120)
    nbformat.write(nb, mine)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    # what the learner sees under the unsolved check: one line, no traceback through our machinery
    assert [o.traceback for o in errors] == [["NotImplementedError: mini.row_norms: not implemented yet"]]
    report = workspace.progress(work)
    assert [(r.exercise, r.passed) for r in report[0].rows] == [("mini.softmax", True), ("mini.row_norms", False)]
    assert "<script" not in workspace.progress_html(report) and "mini.softmax" in workspace.progress_html(report)
    assert (work / "progress.ipynb").is_file()  # the progress page in the lab


def test_check_output_is_one_line_per_exercise(course) -> None:
    """No kernel transport warnings or tracebacks from our machinery in what a learner sees."""
    proc = interplab("check", str(course / "release" / "mini" / "mini.ipynb"))
    assert proc.returncode == 1
    assert proc.stdout.splitlines()[2:] == [
        line for line in proc.stdout.splitlines()[2:] if line.startswith("mini.") or "exercises pass" in line]
    noise = [line for line in proc.stderr.splitlines() if line.strip() and not line.startswith("running ")]
    assert noise == [], proc.stderr


def test_lab_starts_as_root_on_the_workspace(course, tmp_path) -> None:
    if os.geteuid() != 0:
        pytest.skip("this test is about starting as root")
    work, port = tmp_path / "work", free_port()
    env = dict(tool_env(), JUPYTER_CONFIG_DIR=str(tmp_path / "jupyter"), JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"))
    proc = subprocess.Popen([sys.executable, "-m", "interplab.cli", "lab", "--course", str(course), "--workspace",
                             str(work), "--port", str(port), "--no-browser"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline, answer = time.time() + 120, None
        while time.time() < deadline and proc.poll() is None:
            try:
                answer = requests.get(f"http://127.0.0.1:{port}/lab", timeout=2)
                break
            except requests.ConnectionError:
                time.sleep(1)
        assert proc.poll() is None, proc.stdout.read()
        assert answer is not None and answer.status_code in (200, 302, 403)
        assert (work / "mini" / "mini.ipynb").is_file()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # JupyterLab and whatever it started
        proc.wait(timeout=60)


def test_clean_install_checks_a_released_notebook_offline(course, tmp_path) -> None:
    """The package as a laptop installs it (a wheel, not this checkout), in a new virtual environment
    whose third-party packages come from this one (no network): `interplab check` works offline."""
    source, dist = tmp_path / "source", tmp_path / "dist"
    source.mkdir()
    for part in ("pyproject.toml", "README.md", "lib", "autograder"):  # what the distribution is made of
        (shutil.copytree if (REPO / part).is_dir() else shutil.copy)(REPO / part, source / part)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist),
                    str(source)], check=True, capture_output=True, timeout=600)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    site = next((venv / "lib").glob("python3*/site-packages"))
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # .pth files there are not run
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", *map(str, dist.glob("*.whl"))],
                   check=True, capture_output=True, timeout=300)
    where = subprocess.run([str(python), "-c", "import interplab, interplab.zoo; print(interplab.__file__)"],
                           capture_output=True, text=True, check=True, cwd=tmp_path).stdout
    assert str(site) in where and str(REPO) not in where
    notebook = tmp_path / "study" / "mini"
    shutil.copytree(course / "release" / "mini", notebook)
    solve(notebook / "mini.ipynb", "softmax", SOLVED_SOFTMAX)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["PATH"] = f"{venv / 'bin'}:{env.get('PATH', '')}"
    proc = subprocess.run([str(venv / "bin" / "interplab"), "check", str(notebook / "mini.ipynb")], capture_output=True,
                          text=True, timeout=600, cwd=tmp_path, env=env)
    assert proc.returncode == 1 and "1 of 2 exercises pass" in proc.stdout, proc.stdout + proc.stderr
    assert json.loads((notebook / "references.json").read_text())  # the released references were used
