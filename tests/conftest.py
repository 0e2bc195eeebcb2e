"""Shared fixtures: temporary copies of the course, and the real CLI run as a subprocess."""
from __future__ import annotations

import csv
import fcntl
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TEST_ASSIGNMENTS = REPO / "tests" / "data" / "assignments"
INTERPLAB = [sys.executable, "-m", "interplab.cli"]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # One thread per worker (and per kernel it starts): the workers already use every core, and
    # oversubscribed BLAS threads make the tiny models' matmuls many times slower.
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(_var, "1")


def make_course(tmp: Path, assignments: Path = REPO / "assignments") -> Path:
    """A fresh course directory (config only, no generated state) whose masters come from ``assignments``."""
    course = tmp / "course"
    course.mkdir(parents=True)
    for name in ("nbgrader_config.py", "course.toml"):
        shutil.copy(REPO / "course" / name, course / name)
    text = (course / "course.toml").read_text().replace('assignments_dir = "../assignments"',
                                                       f'assignments_dir = "{assignments}"')
    from interplab.autograder.sandbox import probe
    if not probe().isolated:  # a laptop without root or bwrap: these test courses allow it explicitly
        text = text.replace("allow_unsandboxed = false", "allow_unsandboxed = true")
    (course / "course.toml").write_text(text)
    return course


def tool_env() -> dict[str, str]:
    """This environment with the venv's tools (nbgrader, alembic, dask) first on PATH."""
    return dict(os.environ, PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))


def interplab(*args: str, cwd: Path | None = None, check: bool = False, timeout: int = 900) -> subprocess.CompletedProcess:
    """Run the real `interplab` command line."""
    proc = subprocess.run([*INTERPLAB, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=tool_env())
    if check and proc.returncode != 0:
        raise AssertionError(f"interplab {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def read_csv(path: Path) -> dict[tuple[str, str], tuple[float, float]]:
    """(student, grade_id) -> (score, max_score) from a grades CSV."""
    return {key: (score, max_score) for key, (score, max_score, _) in read_csv_rows(path).items()}


def read_csv_rows(path: Path) -> dict[tuple[str, str], tuple[float, float, str]]:
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["student_id", "grade_id", "score", "max_score", "status"]
    return {(r[0], r[1]): (float(r[2]), float(r[3]), r[4]) for r in rows[1:]}


def edit_solution(notebook: Path, replacements: dict[str, str], out: Path) -> None:
    """Write a copy of ``notebook`` where each solution cell whose grade_id is a key gets new source."""
    nb = json.loads(notebook.read_text())
    found = set()
    for cell in nb["cells"]:
        grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        if grade_id in replacements:
            cell["source"] = replacements[grade_id]
            found.add(grade_id)
    assert found == set(replacements), f"no cells {set(replacements) - found} in {notebook}"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(nb))


def add_code_cell(notebook: Path, source: str, after_grade_id: str) -> None:
    """Insert a plain code cell (as a student would) after the cell with ``after_grade_id``."""
    nb = json.loads(notebook.read_text())
    index = next(i for i, c in enumerate(nb["cells"]) if c.get("metadata", {}).get("nbgrader", {}).get("grade_id") == after_grade_id)
    nb["cells"].insert(index + 1, {"cell_type": "code", "metadata": {}, "source": source, "outputs": [], "execution_count": None})
    notebook.write_text(json.dumps(nb))


def assignment_slugs() -> list[str]:
    """Every assignment of the course: a folder of ``assignments/`` with a master and its checks."""
    root = REPO / "assignments"
    return sorted(d.name for d in root.iterdir() if (d / f"{d.name}.py").is_file() and (d / "checks.py").is_file())


@pytest.fixture(scope="session")
def built_course(tmp_path_factory):
    """``built_course(slug)``: a course where ``slug`` was built by the real `interplab build`, once per
    test run and shared by every test that needs it, across pytest-xdist's workers too (a file lock:
    the first worker to ask builds, the others wait and reuse). Read it only: a test that writes
    submissions or grades works on its own :func:`copy_of_build`."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the run's folder, shared by its workers
    builds = root / "builds"
    builds.mkdir(exist_ok=True)

    def build(slug: str) -> Path:
        folder = builds / slug
        with open(builds / f"{slug}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            failed = builds / f"{slug}.failed"
            if failed.exists():
                raise AssertionError(failed.read_text())
            if not (folder / "built").exists():
                shutil.rmtree(folder, ignore_errors=True)
                course = make_course(folder)
                proc = interplab("build", "--course", str(course), slug, timeout=1800)
                if proc.returncode != 0:
                    failed.write_text(f"interplab build {slug} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
                    raise AssertionError(failed.read_text())
                (course / "build.log").write_text(proc.stdout)  # the steps' timings
                (folder / "built").touch()
        return folder / "course"

    return build


def copy_of_build(built: Path, tmp_path: Path) -> Path:
    """A private copy of a shared build (``built_course``) without any grading state, to grade in."""
    course = tmp_path / "course"
    shutil.copytree(built, course, symlinks=True)
    for name in ("submitted", "autograded", "feedback", "grades", "reports"):
        shutil.rmtree(course / name, ignore_errors=True)
    return course


SOLUTION_SECONDS = "solution notebook seconds"  # a build test's measurement, listed after the run


def pytest_terminal_summary(terminalreporter) -> None:
    """The measured time of each solution notebook (the build's reference run) against the 120 s
    budget: measured, never asserted (shared, noisy machines)."""
    rows = sorted((value, report.nodeid) for report in terminalreporter.stats.get("passed", [])
                  for name, value in report.user_properties if name == SOLUTION_SECONDS)
    if rows:
        terminalreporter.section("solution notebooks: seconds per run (budget 120 s on 2 cores)")
        for seconds, nodeid in rows:
            terminalreporter.write_line(f"{seconds:7.1f}  {nodeid}")


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's own hook reads the groups
def pytest_collection_modifyitems(config, items) -> None:
    """pytest-xdist's groups (`make test` runs ``--dist loadgroup``): the tests of one assignment in the
    shared files (a ``slug`` parameter: its build, its fairness cases) run on one worker, which builds
    it and loads its master once; every other module stays on one worker (its module fixtures: servers,
    a master's namespace, run once)."""
    slugs = set(assignment_slugs())
    for item in items:
        callspec = getattr(item, "callspec", None)
        named = [v for v in (callspec.params.values() if callspec else ()) if isinstance(v, str) and v in slugs]
        if not named and "built_course" in item.fixturenames:  # e.g. test_e2e_circuits: with circuits' build
            named = [s for s in slugs if s in item.module.__name__]
        group = named[0] if named else item.module.__name__
        item.add_marker(pytest.mark.xdist_group(group))
        if getattr(config.option, "loadgroup", False) and "@" not in item.nodeid:
            # pytest-xdist 3.8 tells its scheduler an item's group by the suffix "@group" on the
            # nodeid, written to an attribute pytest 9 no longer reads (``_nodeid``): write it where
            # pytest 9 keeps the nodeid, as xdist means to.
            from _pytest.nodeid import NodeId

            item._id = NodeId.parse(f"{item.nodeid}@{group}")


@pytest.fixture(autouse=True)
def autograd_mode_restored():
    """A master run in-process (``Master``) executes its setup cell, and several switch autograd off for
    the notebook (``torch.set_grad_enabled(False)``): that must not leak into the next test."""
    yield
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_grad_enabled(True)


@pytest.fixture(scope="module")
def mini_course(tmp_path_factory) -> Path:
    """The test-only `mini` assignment, built once per module."""
    course = make_course(tmp_path_factory.mktemp("mini"), TEST_ASSIGNMENTS)
    interplab("build", "--course", str(course), "mini", check=True)
    return course


def notebook(*sources: str):
    """A python3 notebook whose code cells are ``sources`` (dedented)."""
    import textwrap

    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(textwrap.dedent(s)) for s in sources]
    return nb


def texts(cell) -> str:
    """Everything a cell printed."""
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")


class Master:
    """An assignment's jupytext master and its checks. The reference solutions are the master's own
    solution cells executed into a namespace, so the tests keep no second copy that could drift."""

    def __init__(self, slug: str, hidden_seed: int = 4242) -> None:
        from interplab.checking import load_spec_module

        self.slug = slug
        self.path = REPO / "assignments" / slug / f"{slug}.py"
        self.checks = load_spec_module(REPO / "assignments" / slug / "checks.py")
        self.exercises = {ex.id: ex for ex in self.checks.EXERCISES}
        self.hidden_seed = hidden_seed

    def cells(self) -> list[tuple[str, str]]:
        """(header, source) of every cell of the jupytext percent master."""
        import re

        parts = re.split(r"^(# %%.*)$", self.path.read_text(), flags=re.M)
        return [(parts[i], parts[i + 1]) for i in range(1, len(parts), 2)]

    def namespace(self, roles: tuple[str, ...] = ("locked", "solution"), setup_only: bool = False) -> dict:
        """The master's cells of these roles (locked: setup; solution: the reference answers), run;
        with ``setup_only`` the one locked cell run is the ``setup`` cell."""
        namespace: dict = {}
        for header, source in self.cells():
            if setup_only and 'role="locked"' in header and 'grade_id="setup"' not in header:
                continue
            if any(f'role="{role}"' in header for role in roles):
                exec(compile(source, str(self.path), "exec"), namespace)
        return namespace

    def run(self, exercise_id: str, fn) -> dict[str, list]:
        exercise = self.exercises[exercise_id]
        from interplab.checking import PUBLIC_SEED

        return {"public": exercise.run(fn, "public", PUBLIC_SEED), "hidden": exercise.run(fn, "hidden", self.hidden_seed)}

    def assert_structure(self, min_exercises: int) -> None:
        """One solution cell (definitions only, nbgrader markers) and one check per exercise."""
        import re

        cells = self.cells()
        solution_ids = {re.search(r'grade_id="impl_(\w+)"', h).group(1) for h, _ in cells if 'role="solution"' in h}
        tested = set(re.findall(rf'check\("{self.slug}\.(\w+)"', self.path.read_text()))
        assert solution_ids == tested == {e.split(".", 1)[1] for e in self.exercises}
        assert len(self.exercises) >= min_exercises
        for header, source in cells:
            if 'role="solution"' in header:
                assert "### BEGIN SOLUTION" in source and "### END SOLUTION" in source, header
                assert re.match(r"\s*def ", source), f"solution cells hold definitions only: {header}"

    def assert_reference_passes_and_probes_are_named(self, exercise_id: str, fn) -> None:
        """The reference passes its own check (run twice: deterministic), and every known mistake
        fails with its message."""
        from interplab.checking import judge

        exercise = self.exercises[exercise_id]
        reference = self.run(exercise_id, fn)
        assert all("output" in o for split in reference.values() for o in split), reference
        verdict = judge(exercise, self.run(exercise_id, fn), reference, scored_split="hidden")
        assert verdict.passed and verdict.fraction == 1.0, verdict.message
        probe_outputs = {p.name: self.run(exercise_id, p.fn) for p in exercise.probes}
        public_only = {name: {"public": outs["public"]} for name, outs in probe_outputs.items()}  # as graded
        for probe in exercise.probes:
            v = judge(exercise, probe_outputs[probe.name], reference, probes=public_only, scored_split="hidden")
            assert not v.passed and v.fraction == 0.0, f"probe {probe.name} passes"
            assert probe.message in v.message, v.message


SECRET = "instructor-only-7f3a"  # what a grading kernel must never be able to read


def fake_course(tmp_path: Path) -> Path:
    """A course as the sandbox tests need it: instructor store, gradebook and another student's
    submission (each holding SECRET), and the working directory of the submission being graded
    (``workdir_of``), all world-readable, as files often are: only the sandbox hides them."""
    root = tmp_path / "course"
    (root / ".interplab" / "a1").mkdir(parents=True)
    (root / ".interplab" / "a1" / "references.json").write_text(json.dumps({"seed": SECRET}))
    (root / "gradebook.db").write_text(SECRET)
    (root / "submitted" / "bob" / "a1").mkdir(parents=True)
    (root / "submitted" / "bob" / "a1" / "a1.ipynb").write_text(SECRET)
    workdir_of(root).mkdir(parents=True)
    for path in root.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return root


def workdir_of(course: Path) -> Path:
    return course / "autograded" / "alice" / "a1"


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
