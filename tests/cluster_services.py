"""Real system services for the cluster tests, started on this machine as root and stopped after:
a one-node SLURM cluster (Debian's slurm-wlm and munge) and a PostgreSQL server (Debian's postgresql),
each in a temporary directory of its own, on loopback or a unix socket, on free ports.

Each daemon is a child of the test process (foreground mode), so stopping it is stopping what we
started, by pid. Debian's packages come from ``deploy/system-packages.sh``; where they are missing
and this is root with apt-get (a clean CI machine), they are installed here the same way.
"""
from __future__ import annotations

import fcntl
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from hubtools import free_port

APT_LOCK = "/tmp/interplab-apt.lock"  # the browser fixture's lock too: one apt-get at a time


def ensure_packages(found: bool, packages: list[str]) -> None:
    """Install Debian ``packages`` with apt-get unless ``found``; skip with the command to run where
    this is not root with apt-get (a laptop): everywhere else the test must really run."""
    if found:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip(f"needs Debian's {', '.join(packages)}: run deploy/system-packages.sh as root")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    with open(APT_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=True, timeout=900, capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages],
                       env=env, check=True, timeout=1800, capture_output=True)


def public_tempdir(prefix: str) -> Path:
    """A temporary directory other Unix users may traverse (pytest's own live under a 0700 folder)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


def wait_for(what: str, ready, timeout: float, logs: list[Path] = ()) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.3)
    tails = "\n".join(f"--- {p}\n{p.read_text(errors='replace')[-2000:]}" for p in logs if p.exists())
    raise RuntimeError(f"{what} not ready in {timeout:.0f} s\n{tails}")


def stop_processes(procs: list[subprocess.Popen]) -> None:
    """SIGTERM, then SIGKILL, in reverse order of start (each was started by the caller)."""
    for proc in reversed(procs):
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


# --- what both modules grade: three `mini` submissions (full marks, half, nothing) -------------------

MINI_TOTALS = {"good": 3.0, "half": 2.0, "broken": 0.0}  # each student's expected total score


def mini_submissions(course: Path) -> None:
    """Write the submissions of ``MINI_TOTALS``'s students into ``course/submitted``."""
    from test_grading_parallel import NORMS, SOFTMAX

    from conftest import edit_solution

    cells = {"good": {"impl_softmax": SOFTMAX, "impl_row_norms": NORMS}, "half": {"impl_softmax": SOFTMAX},
             "broken": {"impl_softmax": "def softmax(x):\n    return 1 / 0\n"}}
    release_nb = course / "release" / "mini" / "mini.ipynb"
    for student in MINI_TOTALS:
        edit_solution(release_nb, cells[student], course / "submitted" / student / "mini" / "mini.ipynb")


def totals(rows: dict[tuple[str, str], tuple[float, float, str]]) -> dict[str, float]:
    """Each student's total score from ``conftest.read_csv_rows``."""
    out: dict[str, float] = {}
    for (student, _), (score, _, _) in rows.items():
        out[student] = out.get(student, 0) + score
    return out


def without_fork_server(course: Path) -> None:
    """Kernels of this course start from scratch: the `mini` notebook imports only numpy, and a fork
    server's preload (torch, transformer-lens) would cost these tests more than everything they check."""
    toml = course / "course.toml"
    text = toml.read_text()
    assert "fork_server = true" in text, "course.toml no longer says fork_server = true"
    toml.write_text(text.replace("fork_server = true", "fork_server = false", 1))


# --- SLURM ------------------------------------------------------------------------------------------

SLURM_BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "sudo")  # sudo: BatchSpawner


@dataclass
class SlurmCluster:
    """One CPU-only node, named after this host, on loopback; root is the SlurmUser."""

    root: Path
    conf: Path
    node: str
    procs: list[subprocess.Popen] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        """This process's environment, pointed at the cluster (every SLURM command reads SLURM_CONF)."""
        return dict(os.environ, SLURM_CONF=str(self.conf))

    def run(self, *cmd: str) -> str:
        return subprocess.run(cmd, env=self.env, check=True, capture_output=True, text=True, timeout=60).stdout

    def jobs(self, user: str | None = None) -> list[tuple[str, str, str]]:
        """(job name, user, state) of every job the controller knows."""
        out = self.run("squeue", "-h", "-o", "%j|%u|%T", *(["-u", user] if user else []))
        return [tuple(line.split("|")) for line in out.splitlines() if line.strip()]

    def log(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in sorted(self.root.glob("log/*")))


def slurm_conf(root: Path, node: str, cpus: int, mem_mb: int) -> str:
    """A minimal slurm.conf for one node where slurmd can run inside a container: no cgroup plugin
    (proctrack/linuxproc tracks a job's processes by parentage, task/none binds nothing), no accounting
    daemon. ``config_overrides`` lets the node declare more CPUs than this machine has, so a student's
    server (the CPU profile asks for 2) and grading workers fit at once on a 2-core test machine."""
    return f"""\
ClusterName=interplab-test
SlurmctldHost={node}(127.0.0.1)
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/munge/munge.socket
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
ReturnToService=2
NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={mem_mb} State=UNKNOWN
PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE State=UP
"""


def start_slurm(cpus: int = 8, mem_mb: int = 16000, timeout: float = 60) -> SlurmCluster:
    """munged, slurmctld and slurmd in the foreground, as root, in a fresh directory; returns once
    ``sinfo`` shows the node idle."""
    ensure_packages(all(shutil.which(b) for b in SLURM_BINARIES), ["slurm-wlm", "munge", "sudo"])
    root = public_tempdir("interplab-slurm-")
    for sub in ("munge", "state", "spool", "log"):
        (root / sub).mkdir()
    # munged: its key private, its socket's folder open (every user's sbatch authenticates through it)
    (root / "munge").chmod(0o755)
    key = root / "munge-key"
    key.mkdir(mode=0o700)
    (key / "munge.key").write_bytes(os.urandom(1024))
    (key / "munge.key").chmod(0o400)
    node = socket.gethostname()
    conf = root / "slurm.conf"
    conf.write_text(slurm_conf(root, node, cpus, mem_mb))
    cluster = SlurmCluster(root, conf, node)
    log = root / "log"
    try:
        cluster.procs.append(subprocess.Popen(
            ["munged", "--foreground", "--force", f"--socket={root}/munge/munge.socket",
             f"--key-file={key}/munge.key", f"--log-file={log}/munged.log", f"--pid-file={root}/munged.pid",
             f"--seed-file={key}/seed"], stdout=subprocess.DEVNULL, stderr=open(log / "munged.out", "w")))
        wait_for("munged", lambda: (root / "munge" / "munge.socket").exists(), timeout, [log / "munged.out"])
        for daemon in ("slurmctld", "slurmd"):
            cluster.procs.append(subprocess.Popen([daemon, "-D"], env=cluster.env, stdout=subprocess.DEVNULL,
                                                  stderr=open(log / f"{daemon}.out", "w")))

        def idle() -> bool:
            proc = subprocess.run(["sinfo", "-h", "-n", node, "-o", "%t"], env=cluster.env, capture_output=True, text=True)
            return proc.stdout.strip() == "idle"

        wait_for("the SLURM node", idle, timeout, sorted(log.glob("*")))
    except BaseException:
        stop_slurm(cluster)
        raise
    return cluster


def stop_slurm(cluster: SlurmCluster) -> None:
    """Cancel every job, then stop slurmd, slurmctld and munged, and remove the directory."""
    if len(cluster.procs) == 3 and cluster.procs[1].poll() is None:
        subprocess.run(["scancel", "--full", f"--nodelist={cluster.node}"], env=cluster.env, capture_output=True,
                       timeout=60)
    stop_processes(cluster.procs)
    shutil.rmtree(cluster.root, ignore_errors=True)


def add_unix_user(name: str, home_root: Path) -> pwd.struct_passwd:
    """A real Unix user with a home of its own (mode 0700), as a site's directory service provides."""
    subprocess.run(["useradd", "--create-home", "--home-dir", str(home_root / name), "--shell", "/bin/bash",
                    "--user-group", name], check=True, capture_output=True, timeout=60)
    return pwd.getpwnam(name)


def remove_unix_user(name: str) -> None:
    subprocess.run(["userdel", "--remove", name], capture_output=True, timeout=60)


# --- PostgreSQL ---------------------------------------------------------------------------------


def postgres_bindir() -> Path | None:
    """Debian keeps the server binaries (initdb, pg_ctl, postgres) off PATH, per major version."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(found[-1]).parent if found else None


@dataclass
class PostgresServer:
    """A PostgreSQL cluster owned by the ``postgres`` user, listening only on a unix socket."""

    root: Path
    socket_dir: Path
    port: int
    proc: subprocess.Popen

    def url(self, database: str, driver: str = "postgresql+psycopg") -> str:
        """SQLAlchemy URL of ``database`` over the unix socket (as the superuser ``postgres``)."""
        return f"{driver}://postgres@/{database}?host={self.socket_dir}&port={self.port}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        proc = subprocess.run(["psql", "-h", str(self.socket_dir), "-p", str(self.port), "-U", "postgres", "-d",
                               database, "-v", "ON_ERROR_STOP=1", "-At", "-c", sql],
                              check=True, capture_output=True, text=True, timeout=60)
        return proc.stdout.strip()

    def create_database(self, name: str) -> str:
        self.psql(f'CREATE DATABASE "{name}"')
        return name


def start_postgres(timeout: float = 60) -> PostgresServer:
    """initdb and ``postgres`` in the foreground as the ``postgres`` user; no TCP at all."""
    bindir = postgres_bindir()
    ensure_packages(bindir is not None and shutil.which("psql") is not None, ["postgresql"])
    bindir = postgres_bindir()
    root = public_tempdir("interplab-postgres-")
    data, sockets = root / "data", root / "socket"
    sockets.mkdir()
    owner = pwd.getpwnam("postgres")
    for path in (root, sockets):
        os.chown(path, owner.pw_uid, owner.pw_gid)

    def as_postgres() -> None:
        os.setgid(owner.pw_gid)
        os.setuid(owner.pw_uid)

    subprocess.run([str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                    "--no-sync"], preexec_fn=as_postgres, check=True, capture_output=True, timeout=120, cwd=root)
    port = free_port()
    log = open(root / "postgres.log", "w")
    proc = subprocess.Popen([str(bindir / "postgres"), "-D", str(data), "-p", str(port), "-c", "listen_addresses=",
                             "-c", f"unix_socket_directories={sockets}",
                             # a throwaway server: what the tests kill is the grader, never the database
                             "-c", "fsync=off",
                             "-c", "max_connections=200"],
                            preexec_fn=as_postgres, stdout=log, stderr=subprocess.STDOUT, cwd=root)
    server = PostgresServer(root, sockets, port, proc)
    try:
        wait_for("PostgreSQL", lambda: subprocess.run(
            [str(bindir / "pg_isready"), "-h", str(sockets), "-p", str(port)], capture_output=True).returncode == 0,
            timeout, [root / "postgres.log"])
    except BaseException:
        stop_postgres(server)
        raise
    return server


def stop_postgres(server: PostgresServer) -> None:
    """SIGINT is PostgreSQL's fast shutdown (disconnects clients, then stops cleanly)."""
    if server.proc.poll() is None:
        server.proc.send_signal(signal.SIGINT)
        try:
            server.proc.wait(30)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait(10)
    shutil.rmtree(server.root, ignore_errors=True)
