"""Where grading kernels run: a local process pool (all cores by default) or a ``dask.distributed``
cluster (the same code scales to Kubernetes or SLURM workers).

A :class:`Job` is self-contained data: the sanitized notebook, the released files, the hidden seed
and the course's :class:`SandboxPolicy` (limits and caps). A worker needs no course directory, no
gradebook and no instructor store, which is what lets it run on another machine; it returns the
executed notebook as JSON text in a :class:`JobResult`, which says whether a failure was the
student's code's doing (``status``) or the infrastructure's (``infrastructure_error``).
"""
from __future__ import annotations

import multiprocessing
import os
import re
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import nbformat
from traitlets.config import Config

from interplab.autograder.sandbox import (
    DEFAULT_PRELOAD,
    ForkServerKernelManager,
    SandboxError,
    SandboxPolicy,
    format_size,
    kernel_manager_for,
    shared_server,
)
from interplab.errors import UserError

DISK_FULL = re.compile(r"No space left on device|Disk quota exceeded|ENOSPC")


@dataclass
class Job:
    assignment: str
    student: str
    notebook: str                 # notebook name without .ipynb
    sanitized: str                # notebook JSON after nbgrader's sanitize steps
    files: dict[str, bytes]       # released files, relative path -> content
    seed: int | list[int]         # a student's; in reference mode, a batch of students'
    key: str                      # identifies this exact execution (cache.execution_key)
    mode: str = "grading"         # or "reference": the master with the instructor's checks, for a student's references
    policy: SandboxPolicy = field(default_factory=SandboxPolicy)  # the course's [grading] settings


@dataclass
class JobResult:
    student: str
    notebook: str
    key: str
    executed: str | None          # executed notebook JSON
    status: str                   # "ok" or why the run went wrong
    seconds: float                # wall time of the execution, kernel start included
    # Set when the run failed for a reason that is not the student's code (the sandbox, bwrap or
    # the fork server could not start, the kernel never became ready, the worker was lost): never
    # cached, never a score; the next run retries it. None when the outcome is the student's own.
    infrastructure_error: str | None = None


def run_job(job: Job) -> JobResult:
    """Execute one sanitized notebook in grading mode in a fresh working directory that holds only
    the notebook and the released files (the seed reaches the kernel through its environment)."""
    from interplab.autograder.steps import GradingExecute

    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"interplab-{job.assignment}-") as tmp:
        work = Path(tmp) / job.assignment
        work.mkdir()
        for relpath, content in job.files.items():
            target = (work / relpath).resolve()
            if work.resolve() not in target.parents:
                raise ValueError(f"released file escapes the working directory: {relpath}")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
        nb = nbformat.reads(job.sanitized, as_version=4)
        (work / f"{job.notebook}.ipynb").write_text(job.sanitized)
        config = Config({"SandboxedKernelManager": {"grading_settings": job.policy.as_settings()}})
        executor = GradingExecute(config=config)
        resources = {"nbgrader": {"student": job.student, "assignment": job.assignment, "notebook": job.notebook,
                                  "db_url": ""},
                     "metadata": {"path": str(work)}, "interplab": {"seed": job.seed, "mode": job.mode}}
        infrastructure = None
        try:
            executor.preprocess(nb, resources)
            status = execution_status(nb, job.policy)
        except Exception as exc:
            status = f"execution failed: {type(exc).__name__}: {str(exc)[:200]}"
            if not executor.started_cells:  # no student code ran: the sandbox or the kernel failed
                infrastructure = f"the grading kernel did not start ({type(exc).__name__}: {str(exc)[:200]})"
                status = f"infrastructure error (grade again): {infrastructure}"
        return JobResult(job.student, job.notebook, job.key, nbformat.writes(nb), status,
                         time.perf_counter() - start, infrastructure)


def lost(job: Job, exc: BaseException) -> JobResult:
    """The result of a job whose worker was lost (a crashed pool process, a dead dask worker)."""
    return JobResult(job.student, job.notebook, job.key, None, "not executed", 0.0,
                     f"the grading worker was lost ({type(exc).__name__}: {str(exc)[:200]})")


def execution_status(nb: nbformat.NotebookNode, policy: SandboxPolicy | None = None) -> str:
    """"ok", or the first run-level problem (kernel died, output cap, notebook time limit, cell time
    limit, memory, disk full). All of these are the student's code's doing."""
    problem = run_problem(nb, policy)
    return "ok" if problem is None else problem[1]


def run_problem(nb: nbformat.NotebookNode, policy: SandboxPolicy | None = None) -> tuple[str, str] | None:
    """The first limit the run hit, as (kind, message): kind is one of ``LIMIT_KINDS`` (what the
    class report counts), message what the grades CSV's status says; None when it hit none."""
    policy = policy or SandboxPolicy()
    for index, cell in enumerate(nb.cells, start=1):
        for output in cell.get("outputs", []):
            if output.get("output_type") != "error":
                continue
            ename, evalue = output.get("ename"), str(output.get("evalue", ""))
            if ename == "OutputLimit":
                return "output limit", f"cell {index}: {evalue}"
            if ename == "KernelDied":  # the notebook timer stops the kernel too, and says so
                return ("time limit" if "time limit" in evalue else "kernel death"), f"cell {index}: {evalue}"
            if DISK_FULL.search(evalue):
                return "disk full", (f"cell {index}: the kernel's disk is full (working directory disk_limit "
                                     f"{format_size(policy.disk_limit)}, /tmp tmp_size {format_size(policy.tmp_size)}, "
                                     f"at most {policy.disk_inodes} files each)")
            if ename == "CellTimeoutError":
                return "time limit", f"cell {index}: a cell ran longer than its time limit and was interrupted"
            if ename == "MemoryError":
                return "memory", f"cell {index}: ran out of memory (the sandbox's memory limit)"
    return None


LIMIT_KINDS = ("time limit", "memory", "kernel death", "output limit", "disk full")


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def warm_up(policy: SandboxPolicy) -> None:
    """Pool initializer: start this worker's fork server now (it imports torch & co. once), while
    the grader is still preparing, instead of on the first job. A failure is not fatal: it is
    remembered, and the kernel managers of this worker then start kernels the plain way, saying so."""
    if kernel_manager_for(policy) is ForkServerKernelManager:
        try:
            shared_server(DEFAULT_PRELOAD, policy)
        except SandboxError as exc:
            print(f"WARNING: the fork server of grading worker {os.getpid()} could not start ({exc}); its kernels "
                  "start from scratch in the plain sandbox", file=sys.stderr, flush=True)


def run_local(jobs: list[Job], workers: int | None = None) -> Iterator[JobResult]:
    """Run jobs on a pool of local processes, yielding results as they finish. The pool starts
    (and its workers warm up) when this is called, not when the first result is asked for."""
    if not jobs:
        return iter(())
    workers = max(1, min(workers or default_workers(), len(jobs)))
    if workers == 1:
        return (run_job(job) for job in jobs)
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=warm_up, initargs=(jobs[0].policy,))
    futures = {pool.submit(run_job, job): job for job in jobs}

    def results() -> Iterator[JobResult]:
        with pool:
            for future in as_completed(futures):
                try:
                    yield future.result()
                except Exception as exc:
                    yield lost(futures[future], exc)

    return results()


def run_dask(jobs: list[Job], scheduler: str) -> Iterator[JobResult]:
    """Run jobs on a dask.distributed cluster, submitted when this is called. Workers need this
    package installed (the same image as the single-user servers) and nothing else: jobs carry
    their files."""
    from dask.distributed import Client
    from dask.distributed import as_completed as dask_completed

    if not jobs:
        return iter(())
    client = Client(scheduler, timeout=30)
    futures = client.map(run_job, jobs, pure=False, key=[f"grade-{j.assignment}-{j.student}-{j.key[:12]}" for j in jobs])
    job_of = {future.key: job for future, job in zip(futures, jobs)}

    def results() -> Iterator[JobResult]:
        with client:
            for future in dask_completed(futures):
                try:
                    yield future.result()
                except Exception as exc:
                    yield lost(job_of[future.key], exc)

    return results()


def run(jobs: list[Job], executor: str = "local", workers: int | None = None, scheduler: str | None = None) -> Iterable[JobResult]:
    if executor == "local":
        return run_local(jobs, workers)
    if executor == "dask":
        if not scheduler:
            raise UserError("--executor dask needs --scheduler ADDRESS (e.g. tcp://127.0.0.1:8786)")
        return run_dask(jobs, scheduler)
    raise UserError(f"unknown executor {executor!r}: choose local or dask")
