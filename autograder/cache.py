"""What grading keeps between runs, in the instructor store, each kept by one class:

- :class:`ExecutionCache`: each student's executed notebooks (``executions/<student>/<nb>.ipynb``
  and a ``.json`` beside it with the key and the status). ``interplab grade``'s executors fill it;
  the :class:`~interplab.autograder.steps.ReplayExecution` step of nbgrader's autograde pipeline
  reads it, so recording never executes a notebook twice, and a killed run resumes where it stopped.
- :class:`ReferenceCache`: each student's hidden references (``references/<key>.json``): the master
  solution executed in reference mode with that student's hidden seed.

A key names everything an execution depends on: the notebook's cells, the files beside it, the
hidden seed and the mode. Only outcomes of the student's own code are saved; an infrastructure
failure (the sandbox did not start, a worker was lost) is never saved, so the next run retries it.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
from nbformat import NotebookNode

from interplab.autograder.course import Course
from interplab.autograder.executors import Job, JobResult
from interplab.autograder.notebooks import released_files
from interplab.autograder.sandbox import SandboxPolicy
from interplab.autograder.store import Store, write_atomic


def execution_key(nb: NotebookNode, files: dict[str, bytes], seed: int, mode: str = "grading") -> str:
    """The one key of an execution: the cells' types and sources in order, the files beside the
    notebook, the hidden seed and the mode."""
    digest = hashlib.sha256(mode.encode() + b"\0" + str(seed).encode() + b"\0")
    for cell in nb.cells:
        digest.update(cell.get("cell_type", "").encode() + b"\0" + cell.get("source", "").encode() + b"\1")
    for name, content in sorted(files.items()):
        digest.update(name.encode() + b"\0" + hashlib.sha256(content).digest())
    return digest.hexdigest()


@dataclass(frozen=True)
class CachedExecution:
    executed: NotebookNode
    status: str


class ExecutionCache:
    """The executions of one assignment's submissions (see the module docstring)."""

    def __init__(self, store: Store, assignment: str, files: dict[str, bytes]) -> None:
        self.store, self.assignment, self.files = store, assignment, files
        self.folder = store.root / assignment / "executions"

    @classmethod
    def of(cls, course_root: Path, assignment: str) -> "ExecutionCache":
        return cls(Store(course_root), assignment, released_files(Path(course_root) / "source" / assignment))

    def key(self, student: str, sanitized: NotebookNode) -> str:
        return execution_key(sanitized, self.files, self.store.seed(self.assignment, student))

    def path(self, student: str, notebook: str) -> Path:
        return self.folder / student / f"{notebook}.ipynb"

    def save(self, result: JobResult) -> bool:
        """Keep ``result`` unless the infrastructure failed (then the next run executes it again)."""
        if result.infrastructure_error is not None or result.executed is None:
            return False
        path = self.path(result.student, result.notebook)
        self.store.folder(self.assignment, "executions")
        path.parent.mkdir(exist_ok=True, mode=0o700)
        write_atomic(path, result.executed, mode=0o600)
        write_atomic(path.with_suffix(".json"), json.dumps(
            {"key": result.key, "status": result.status, "seconds": round(result.seconds, 3)}), mode=0o600)
        return True

    def load(self, student: str, notebook: str, key: str) -> CachedExecution | None:
        """The saved execution with exactly this key, or None."""
        path = self.path(student, notebook)
        try:
            meta = json.loads(path.with_suffix(".json").read_text())
            if meta.get("key") != key:
                return None
            return CachedExecution(nbformat.reads(path.read_text(), as_version=4), str(meta["status"]))
        except (OSError, ValueError, KeyError):
            return None


class ReferenceCache:
    """Each student's hidden references: the master (``source/<a>/<a>.ipynb`` with the instructor's
    full ``checks.py``, probes included) executed in reference mode, as a job on the grading
    executor, kept per student by (master and files, seed). One run serves a batch of students: the
    master's setup and demonstrations run once, each check once per student's seed (so grading N
    students costs N student runs and about N / REFERENCE_BATCH master runs, not 2 N)."""

    def __init__(self, store: Store, assignment: str, source: Path, checks: Path, policy: SandboxPolicy) -> None:
        self.store, self.assignment, self.policy = store, assignment, policy
        self.master = nbformat.read(source / f"{assignment}.ipynb", as_version=4)
        self.files = {**released_files(source), "checks.py": checks.read_bytes()}
        self.folder = store.root / assignment / "references"

    @classmethod
    def of(cls, course: Course, assignment: str) -> "ReferenceCache":
        return cls(course.store, assignment, course.source(assignment), course.store.checks_path(assignment),
                   course.policy)

    def key(self, student: str) -> str:
        return execution_key(self.master, self.files, self.store.seed(self.assignment, student), "reference")

    def jobs(self, students: list[str], workers: int = 1) -> list[tuple[Job, list[str]]]:
        """The runs that compute these students' references: batches of at most REFERENCE_BATCH, at
        least as many as ``workers`` (while there are students to share), each with its students."""
        n_jobs = min(len(students), max(workers, math.ceil(len(students) / REFERENCE_BATCH)))
        batches = [students[i::n_jobs] for i in range(n_jobs)]
        return [(self._job(batch), batch) for batch in batches]

    def _job(self, students: list[str]) -> Job:
        seeds = [self.store.seed(self.assignment, s) for s in students]
        key = hashlib.sha256("\0".join(self.key(s) for s in students).encode()).hexdigest()
        # The master is the instructor's code: its output grows with the batch, and so do its limits.
        n = len(students)
        policy = dataclasses.replace(self.policy, cell_timeout=self.policy.cell_timeout * n,
                                     notebook_timeout=self.policy.notebook_timeout * n,
                                     max_cell_output=self.policy.max_cell_output * n,
                                     max_notebook_output=self.policy.max_notebook_output * n,
                                     max_check_output=self.policy.max_check_output * n)
        return make_job(policy, self.assignment, f"references of {students[0]} and {n - 1} more", self.assignment,
                        self.master, self.files, seeds, key, "reference")

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.json"

    def load(self, student: str) -> dict[str, Any] | None:
        try:
            return json.loads(self.path(self.key(student)).read_text())
        except (OSError, ValueError):
            return None

    def save(self, result: JobResult, students: list[str]) -> dict[str, dict[str, Any]]:
        """Each student's references in a reference-mode execution, saved; a master that cannot
        produce them in the sandbox is an infrastructure error, never the students'."""
        from interplab.autograder.build import collect_references  # build imports the steps, which import this

        if result.infrastructure_error is not None or result.executed is None:
            raise InfrastructureError(result.infrastructure_error or "no execution")
        if result.status != "ok":
            raise InfrastructureError(f"the master did not run in the sandbox ({result.status})")
        executed = nbformat.reads(result.executed, as_version=4)
        saved = {}
        for student in students:
            try:
                references = collect_references(executed, self.assignment, self.store.seed(self.assignment, student))
            except Exception as exc:  # the build validated this master: what differs is the machine
                raise InfrastructureError(f"the master's references could not be computed here ({exc})") from exc
            self.store.folder(self.assignment, "references")
            write_atomic(self.path(self.key(student)), json.dumps(references), mode=0o600)
            saved[student] = references
        return saved

    def get(self, student: str) -> dict[str, Any]:
        """The student's references, computed now (in this process) if no run has yet: what stock
        ``nbgrader autograde`` and the formgrader's button need."""
        from interplab.autograder.executors import run_job

        if (references := self.load(student)) is not None:
            return references
        (job, batch), = self.jobs([student])
        return self.save(run_job(job), batch)[student]


REFERENCE_BATCH = 16  # students per reference run


class InfrastructureError(RuntimeError):
    """Grading could not run for a reason that is not the student's code; retried on the next run."""


def make_job(policy: SandboxPolicy, assignment: str, student: str, notebook: str, nb: NotebookNode,
             files: dict[str, bytes], seed: int | list[int], key: str, mode: str = "grading") -> Job:
    """One execution for the executors, with the course's limits."""
    return Job(policy=policy, assignment=assignment, student=student, notebook=notebook,
               sanitized=nbformat.writes(nb), files=files, seed=seed, key=key, mode=mode)
