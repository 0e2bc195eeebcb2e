"""Hostile and broken submissions, graded in one run with the real sandbox: each gets 0 on what it
breaks and a reason in the CSV's status column, and every other submission is graded correctly.

Limits are made small (10 s per cell, 3 GiB, 64 processes, 16 MiB files) so the faults are cheap
on a shared 2-core machine. The only network address any test uses is 127.0.0.1.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading

import pytest

from conftest import TEST_ASSIGNMENTS, edit_solution, interplab, make_course, read_csv_rows

pytestmark = pytest.mark.slow

SOFTMAX = ("import numpy as np\n"
           "def softmax(x):\n    z = np.exp(x - x.max(axis=-1, keepdims=True))\n"
           "    return z / z.sum(axis=-1, keepdims=True)\n")
NORMS = "def row_norms(x):\n    return np.sqrt((x ** 2).sum(axis=1))\n"
LIMITS = {"cell_timeout": 10, "notebook_timeout": 90, "memory_limit": '"3GiB"', "max_processes": 64,
          "max_file_size": '"16MiB"', "disk_limit": '"32MiB"', "disk_inodes": 500}


def _course(tmp_path):
    course = make_course(tmp_path, TEST_ASSIGNMENTS)
    text = (course / "course.toml").read_text()
    for key, value in LIMITS.items():
        text = "\n".join(f"{key} = {value}" if line.split("=")[0].strip() == key else line for line in text.splitlines())
    (course / "course.toml").write_text(text + "\n")
    interplab("build", "--course", str(course), "mini", "--skip-validation", check=True)
    return course


class LoopbackServer:
    """A TCP server on the host's 127.0.0.1 that records whether anybody connected."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.sock.settimeout(0.5)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
                self.connections += 1
                conn.close()
            except OSError:
                pass

    def close(self):
        self.stop.set()
        self.thread.join(5)
        self.sock.close()


def test_faults_are_contained(tmp_path):
    course = _course(tmp_path)
    server = LoopbackServer()
    release_nb = course / "release" / "mini" / "mini.ipynb"
    sub = course / "submitted"

    def student(name, softmax_cell, norms_cell=NORMS):
        edit_solution(release_nb, {"impl_softmax": softmax_cell, "impl_row_norms": norms_cell},
                      sub / name / "mini" / "mini.ipynb")

    student("good", SOFTMAX)
    student("infinite_loop", "while True:\n    pass\n" + SOFTMAX)
    student("memory_hog", "hog = bytearray(8 * 2**30)\n" + SOFTMAX)
    student("fork_bomb", "import os, subprocess, sys\n"
                         "subprocess.Popen([sys.executable, '-c', 'import os\\nwhile True:\\n    try: os.fork()\\n    except OSError: pass'])\n"
                         "while True:\n    os.fork()\n")
    student("background", "import subprocess\nsubprocess.Popen(['sleep', '600'], start_new_session=True)\n" + SOFTMAX)
    student("os_exit", "import os\nos._exit(3)\n")
    student("sys_exit", "import sys\nsys.exit(1)\n")
    student("kill_parent", "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nos.kill(1, signal.SIGKILL)\n")
    student("huge_file", "open('big.bin', 'wb').write(b'0' * (64 * 2**20))\n" + SOFTMAX)
    student("flood", "print('x' * 100_000_000)\n" + SOFTMAX)
    student("many_files", "for i in range(100_000):\n    open(f'f{i}.txt', 'w').write('x')\n" + SOFTMAX)
    student("network", f"import socket\nsocket.create_connection(('127.0.0.1', {server.port}), timeout=3).close()\n" + SOFTMAX)
    secrets = [course / ".interplab" / "mini" / "references.json", course / "gradebook.db",
               sub / "good" / "mini" / "mini.ipynb"]
    student("snoop", "import numpy as np\nstolen = []\n"
                     + "".join(f"try:\n    stolen.append(open({str(p)!r}, 'rb').read())\nexcept OSError:\n    pass\n" for p in secrets)
                     + "assert stolen, 'nothing readable'\n" + SOFTMAX.split("\n", 1)[1])
    student("no_traceback", "get_ipython().showtraceback = lambda *a, **k: None\n"
                            "get_ipython().showsyntaxerror = lambda *a, **k: None\n"
                            "def softmax(x):\n    return x\n")

    # Broken files and structure.
    (sub / "corrupt" / "mini").mkdir(parents=True)
    (sub / "corrupt" / "mini" / "mini.ipynb").write_text('{"cells": [ this is not json')
    (sub / "renamed" / "mini").mkdir(parents=True)
    shutil.copy(sub / "good" / "mini" / "mini.ipynb", sub / "renamed" / "mini" / "mini-final.ipynb")
    (sub / "empty" / "mini").mkdir(parents=True)

    def rewrite(name, change):
        path = sub / name / "mini" / "mini.ipynb"
        path.parent.mkdir(parents=True)
        nb = json.loads((sub / "good" / "mini" / "mini.ipynb").read_text())
        change(nb["cells"])
        path.write_text(json.dumps(nb))

    def grade_id(cell):
        return cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")

    rewrite("deleted_test", lambda cells: cells.remove(next(c for c in cells if grade_id(c) == "test_row_norms")))

    def reorder(cells):
        test = next(c for c in cells if grade_id(c) == "test_softmax")
        cells.remove(test)
        cells.insert(1, test)  # the test before the solution it checks
    rewrite("reordered", reorder)

    def inflate(cells):
        for c in cells:
            if grade_id(c) == "test_softmax":
                c["metadata"]["nbgrader"]["points"] = 100
    rewrite("edited_points", inflate)

    def rename(cells):
        for c in cells:
            if grade_id(c) == "test_row_norms":
                c["metadata"]["nbgrader"]["grade_id"] = "test_row_norms_mine"
    rewrite("edited_grade_id", rename)

    def edit_tests(cells):
        for c in cells:
            if grade_id(c) in ("test_softmax", "test_row_norms"):
                c["source"] = "print('all good')"
    rewrite("edited_tests", edit_tests)

    before = {p: p.read_bytes() for p in sub.rglob("*") if p.is_file()}
    try:
        proc = interplab("grade", "mini", "--course", str(course), timeout=1500)
    finally:
        server.close()
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "protections active" in proc.stdout

    rows = read_csv_rows(course / "grades" / "mini.csv")

    def scores(name):
        return rows[(name, "test_softmax")][0], rows[(name, "test_row_norms")][0]

    def status(name):
        return rows[(name, "test_softmax")][2]

    expected = {
        "good": (2, 1), "infinite_loop": (0, 1), "memory_hog": (0, 1), "background": (2, 1),
        "os_exit": (0, 0), "sys_exit": (0, 1), "huge_file": (0, 1), "flood": (0, 0), "many_files": (0, 1), "network": (0, 1),
        "snoop": (0, 1), "no_traceback": (0, 1), "corrupt": (0, 0), "renamed": (0, 0), "empty": (0, 0),
        "deleted_test": (2, 0), "reordered": (0, 1), "edited_points": (2, 1), "edited_tests": (2, 1),
        # nbgrader refuses a notebook whose locked cells' ids were changed: 0, with the reason.
        "edited_grade_id": (0, 0),
    }
    for name, want in expected.items():
        assert scores(name) == want, (name, scores(name), status(name))
    assert scores("fork_bomb")[0] == 0
    assert scores("kill_parent")[0] == 0
    assert all(rows[(name, "test_softmax")][1] == 2 for name in expected)  # points come from the gradebook

    assert "time limit" in status("infinite_loop")
    assert "memory" in status("memory_hog")
    assert "kernel died" in status("os_exit")
    assert "output limit" in status("flood")
    assert "disk is full" in status("many_files") and "disk_limit" in status("many_files")
    assert "not a valid notebook" in status("corrupt")
    assert "mini-final.ipynb" in status("renamed")
    assert "empty submission" in status("empty")
    assert "test_row_norms" in status("deleted_test") and "metadata" in status("edited_grade_id")
    assert status("good") == "ok"

    assert server.connections == 0
    flood = (course / "autograded" / "flood" / "mini" / "mini.ipynb").stat().st_size
    assert flood < 5 * 2**20, "100 MB of output must not reach the autograded notebook"
    # Nothing the kernels started is still running, and no submission was modified.
    left = subprocess.run(["pgrep", "-f", "sleep 600"], capture_output=True, text=True).stdout.split()
    assert not left
    assert before == {p: p.read_bytes() for p in sub.rglob("*") if p.is_file()}
    snoop_feedback = course / "feedback" / "snoop" / "mini" / "mini.html"
    assert "nothing readable" in snoop_feedback.read_text()
    assert os.path.exists(course / "feedback" / "good" / "mini" / "mini.html")
