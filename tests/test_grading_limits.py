"""Output floods, disk floods and missing isolation, with real sandboxed kernels run the way
`interplab grade`'s workers run them (executors.run_job: nbgrader's Execute with our budget).

Every flood kind stops the kernel at its cap with an ``OutputLimit`` error in the cell that broke
it, "not run" after it, and a status naming the cap; the grader's memory stays bounded. Kernels
start from scratch here (fork_server = false): the fork server's own disk limit is tested in
tests/test_forkserver.py. Caps are small so each case is cheap on a shared 2-core machine.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import threading
from dataclasses import replace
from pathlib import Path

import nbformat
import psutil
import pytest

from interplab.autograder.executors import Job, JobResult, run_job
from interplab.autograder.sandbox import MiB, Sandbox, SandboxError, SandboxPolicy, probe, run_sandboxed
from interplab.checking import BUNDLE_MIME

from conftest import TEST_ASSIGNMENTS, interplab, make_course, notebook, tool_env

CAPS = probe()
pytestmark = pytest.mark.skipif(not CAPS.isolated, reason=f"needs root, bwrap and setpriv; here {CAPS}")
POLICY = SandboxPolicy(fork_server=False, cell_timeout=60, notebook_timeout=240, max_cell_output=256 * 1024,
                       max_notebook_output=1 * MiB, max_check_output=512 * 1024, disk_limit=8 * MiB, disk_inodes=300,
                       tmp_size=8 * MiB)
BUNDLE = "from IPython.display import display\ndef bundle(n):\n" \
         f"    display({{{BUNDLE_MIME!r}: {{'version': 1, 'exercise': 'e', 'outputs': {{'x': 'y' * n}}}}}}, raw=True)\n"


def graded_cell(source: str, grade_id: str = "test_e") -> nbformat.NotebookNode:
    cell = nbformat.v4.new_code_cell(source)
    cell.metadata["nbgrader"] = {"grade": True, "solution": False, "locked": True, "grade_id": grade_id,
                                 "points": 1, "schema_version": 3}
    return cell


def run(nb: nbformat.NotebookNode, policy: SandboxPolicy = POLICY, files: dict[str, bytes] | None = None) -> tuple[JobResult, nbformat.NotebookNode]:
    job = Job(assignment="a1", student="mallory", notebook="a1", sanitized=nbformat.writes(nb), files=files or {},
              seed=7, key="k", policy=policy)
    result = run_job(job)
    assert result.executed is not None and result.infrastructure_error is None, result.status
    return result, nbformat.reads(result.executed, as_version=4)


def errors(cell) -> list[tuple[str, str]]:
    return [(o.ename, o.evalue) for o in cell.outputs if o.output_type == "error"]


def assert_stopped_at(result: JobResult, nb, index: int, cap: str) -> None:
    """The kernel was stopped in cell ``index`` for ``cap``; later cells did not run."""
    assert "output limit" in result.status and cap in result.status, result.status
    assert errors(nb.cells[index])[-1][0] == "OutputLimit", nb.cells[index].outputs
    for cell in nb.cells[index + 1:]:
        assert errors(cell) and errors(cell)[0][1].startswith("not run"), cell.outputs
    size = len(result.executed or "")
    assert size < POLICY.max_notebook_output + POLICY.max_check_output + 64 * 1024, size


# ------------------------------------------------------------------------------------------------
# output


def test_one_huge_print_is_refused_before_the_grader_holds_it():
    nb = notebook("print('before')", "print('x' * 300_000_000)", "print('after')")
    process = psutil.Process()
    baseline = process.memory_info().rss
    peak = [baseline]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], process.memory_info().rss)
            done.wait(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        result, out = run(nb)
    finally:
        done.set()
        sampler.join()
    assert_stopped_at(result, out, 1, "larger than")
    assert "before" in out.cells[0].outputs[0].text
    # 300 MB printed; the grader never allocated it (zmq refuses messages over the caps unread)
    assert peak[0] - baseline < 120 * MiB, (peak[0] - baseline) / MiB


def test_many_prints_in_one_cell_hit_the_cell_cap():
    result, out = run(notebook("for i in range(100_000):\n    print('y' * 100, flush=i % 50 == 0)", "print('after')"))
    assert_stopped_at(result, out, 0, "max_cell_output")
    kept = sum(len(o.get("text", "")) for o in out.cells[0].outputs)
    assert kept <= POLICY.max_cell_output


def test_many_cells_each_under_the_cell_cap_hit_the_notebook_cap():
    cells = [f"print('z' * 200_000)  # cell {i}" for i in range(8)]  # 8 x 200 KB: each cell fine, 1.6 MB in all
    result, out = run(notebook(*cells))
    assert_stopped_at(result, out, 5, "max_notebook_output")  # 6 x 200 KB > 1 MiB


def test_display_updates_count():
    code = ("from IPython.display import display\nh = display('start', display_id=True)\n"
            "for i in range(200):\n    h.update('u' * 10_000)")  # 2 MB of updates to a single output
    result, out = run(notebook(code, "print('after')"))
    assert_stopped_at(result, out, 0, "max_cell_output")


def test_unknown_mime_types_count():
    code = ("from IPython.display import display\n"
            "for i in range(40):\n    display({'application/x-mystery': 'm' * 10_000}, raw=True)")
    result, out = run(notebook(code))
    assert_stopped_at(result, out, 0, "max_cell_output")


def test_check_bundles_only_from_test_cells_and_under_their_own_cap():
    nb = notebook(BUNDLE, "bundle(10)")
    nb.cells.append(graded_cell("bundle(10)"))
    result, out = run(nb)
    assert result.status == "ok", result.status
    assert not any(BUNDLE_MIME in o.get("data", {}) for o in out.cells[1].outputs)  # dropped: not a test cell
    assert [BUNDLE_MIME in o.get("data", {}) for o in out.cells[2].outputs] == [True]

    flood = notebook(BUNDLE)
    flood.cells.append(graded_cell("for _ in range(20):\n    bundle(50_000)"))  # 1 MB of bundles > 512 KiB
    flood.cells.append(graded_cell("bundle(10)", "test_f"))
    result, out = run(flood)
    assert_stopped_at(result, out, 1, "max_check_output")


def test_output_that_lags_the_reply_on_a_loaded_grader_is_kept_and_the_run_goes_on():
    """On a busy grading machine a cell's outputs (iopub) can arrive seconds after its reply (shell):
    nbgrader gives up after 4 s and ends the whole run, so every later exercise would score 0 for a
    correct submission. Here the kernel sends each iopub message 8 s late from the second cell on:
    both check results and the print must still be recorded, and the run end "ok"."""
    hold_iopub = ("from IPython import get_ipython\npub = get_ipython().kernel.iopub_thread\n"
                  "pub._really_send = (lambda send, later: lambda *a, **k: later(8, lambda: send(*a, **k)))"
                  "(pub._really_send, pub.io_loop.call_later)\n")
    nb = notebook(BUNDLE)
    nb.cells.append(graded_cell(hold_iopub + "bundle(10)\nprint('late')"))
    nb.cells.append(graded_cell("bundle(10)", "test_f"))
    result, out = run(nb)
    assert result.status == "ok", result.status
    for cell in out.cells[1:]:
        assert [BUNDLE_MIME in o.get("data", {}) for o in cell.outputs if o.output_type == "display_data"] == [True]
    assert "late" in "".join(o.get("text", "") for o in out.cells[1].outputs if o.output_type == "stream")


# ------------------------------------------------------------------------------------------------
# disk


FULL = "cell 1: the kernel's disk is full"


@pytest.mark.parametrize("code", [
    "open('big.bin', 'wb').write(b'0' * (64 * 2**20))",                     # one big file, under max_file_size
    "for i in range(100_000):\n    open(f'f{i}', 'w').write('x' * 512)",    # many small files
    "import os\nfor i in range(100_000):\n    os.mkdir(f'd{i}')",           # inodes only
    "open('/tmp/big.bin', 'wb').write(b'0' * (64 * 2**20))",                # the private /tmp too
], ids=["big-file", "small-files", "inodes", "tmp"])
def test_disk_floods_are_stopped_at_the_limit_and_the_host_disk_is_untouched(code):
    before = shutil.disk_usage(tempfile.gettempdir()).used
    result, out = run(notebook(code, "import os; print(len(os.listdir('.')))"), files={"data.txt": b"released"})
    assert result.status.startswith(FULL), result.status
    assert "disk_limit" in result.status
    assert any("No space left on device" in e[1] for e in errors(out.cells[0])), out.cells[0].outputs
    # the next cell still runs (the disk is full, the kernel is fine)
    assert not errors(out.cells[1])
    assert shutil.disk_usage(tempfile.gettempdir()).used - before < 32 * MiB


def test_released_files_are_copied_into_the_kernels_disk(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (work / "data.txt").write_text("released")
    result = run_sandboxed(["/bin/sh", "-c", "cat data.txt; echo; echo new > new.txt; df -k . /tmp | tail -2"], work,
                           POLICY, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("released")
    assert not (work / "new.txt").exists()  # written to the tmpfs, never to the host folder
    sizes = [int(line.split()[1]) for line in result.stdout.splitlines()[1:]]
    assert sizes == [POLICY.disk_limit // 1024, POLICY.tmp_size // 1024], result.stdout


# ------------------------------------------------------------------------------------------------
# isolation impossible


def test_grading_without_isolation_is_refused_unless_allowed(tmp_path):
    degraded = replace(CAPS, bwrap=None, notes=("bwrap not found (apt-get install bubblewrap)",))
    with pytest.raises(SandboxError, match="grading refused.*bwrap.*allow_unsandboxed = true"):
        Sandbox(tmp_path, POLICY, caps=degraded).open()
    not_root = replace(CAPS, root=False, setpriv=None)
    with pytest.raises(SandboxError, match="missing root"):
        Sandbox(tmp_path, POLICY, caps=not_root).open()
    with Sandbox(tmp_path, replace(POLICY, allow_unsandboxed=True), caps=degraded) as box:
        assert box.runtime_dir is not None  # allowed explicitly: it runs (and the banner says what is off)


def test_grade_command_refuses_in_one_line_without_bwrap(tmp_path):
    """`interplab grade` on a machine without bwrap: exit 2, one line saying what is missing and how
    to allow it, before anything is executed."""
    course = make_course(tmp_path, TEST_ASSIGNMENTS)
    interplab("build", "--course", str(course), "mini", "--skip-validation", check=True)
    (course / "submitted" / "alice" / "mini").mkdir(parents=True)
    shutil.copy(course / "release" / "mini" / "mini.ipynb", course / "submitted" / "alice" / "mini" / "mini.ipynb")
    env = dict(tool_env(), PATH=str(Path(sys.executable).parent))  # no bwrap, setpriv or prlimit on PATH
    proc = subprocess.run([sys.executable, "-m", "interplab.cli", "grade", "mini", "--course", str(course)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    line = proc.stderr.strip()
    assert "\n" not in line and "grading refused" in line and "allow_unsandboxed" in line, line
    assert not (course / "grades").exists()
