"""The fork server's own process (runs INSIDE its bwrap sandbox; see forkserver.py for the host side).

Run as ``python forkserver_child.py --control-fd N --preload a,b,c``. Only the standard library is
imported here before the preload list, and nothing from ``interplab.autograder`` (not visible in
the sandbox). The server:

1. imports the preload modules, checks that it is still single-threaded, says ``ready``;
2. for every ``fork`` message on the control socket (a SOCK_SEQPACKET socketpair inherited from the
   grader, no filesystem path) receives one end of a fresh per-kernel socketpair (SCM_RIGHTS) and
   forks at once. The server never reads a request body, so no submission's data (environment,
   hidden seed) ever sits in the memory that later children are copied from.

The forked child (``_child``), still root with capabilities:

- closes the control socket, says hello (SCM_CREDENTIALS, so the grader learns its host pid and
  puts it in the sandbox's cgroups), then reads its request;
- ``unshare``s a new mount, network, IPC, UTS and PID namespace; makes the mounts private, covers
  the jobs root (every other kernel's workdir) with an empty tmpfs and binds back only its own run
  dir; its workdir becomes a tmpfs bounded in bytes and inodes holding a copy of the job's files;
  mounts a fresh /tmp (bounded the same way) and /dev/shm; brings up its own loopback;
- forks the PID namespace's init, which mounts a /proc of the new namespace, applies the rlimits,
  closes every inherited fd, drops to the slot's uid/gid (setgroups([]), setresgid, setresuid,
  bounding set emptied, no_new_privs) and forks the kernel: an ``IPKernelApp`` initialised with the
  connection file, history in memory, cwd and ``sys.path[0]`` the workdir, the request's
  environment only;
- stays behind (root, outside the new namespaces) as the supervisor: it reports the init's exit
  status, and SIGKILLs the init (so the whole PID namespace) when the grader closes its end.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import importlib
import json
import os
import resource
import select
import signal
import socket
import struct
import sys
import time

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWPID, CLONE_NEWNET = 0x20000000, 0x40000000
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_BIND, MS_REC, MS_PRIVATE = 2, 4, 8, 4096, 16384, 1 << 18
MS_RDONLY, MS_REMOUNT = 1, 32
PR_SET_NO_NEW_PRIVS, PR_CAPBSET_DROP, PR_SET_PDEATHSIG = 38, 24, 1
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
MAX_MESSAGE = 1 << 20

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = lambda s: None if s is None else s.encode()  # noqa: E731
    _check(_libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)), f"mount {target}")


def _prctl(option: int, arg: int) -> None:
    _check(_libc.prctl(option, ctypes.c_ulong(arg), 0, 0, 0), f"prctl {option}")


def _send(sock: socket.socket, payload: dict, cred_pid: int | None = None) -> None:
    data = json.dumps(payload).encode()
    if cred_pid is None:
        sock.send(data)
    else:  # the kernel translates this pid into the receiver's PID namespace
        creds = struct.pack("3i", cred_pid, os.getuid(), os.getgid())
        sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_CREDENTIALS, creds)])


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


# ----------------------------------------------------------------------------------------------
# The server


def serve(control_fd: int, preload: list[str]) -> None:
    control = socket.socket(fileno=control_fd)
    start = time.perf_counter()
    loaded, failed = [], {}
    for name in preload:
        try:
            importlib.import_module(name)
            loaded.append(name)
        except Exception as exc:  # a missing optional module is reported, not fatal
            failed[name] = f"{type(exc).__name__}: {exc}"[:300]
    # Forking copies only the calling thread: a lock held by another thread stays locked forever
    # in the child. No Python thread and no zmq context may exist. Native threads of OpenBLAS pools
    # (numpy, scipy) and pyarrow's jemalloc background thread may: both libraries quiesce them in
    # pthread_atfork handlers (OpenBLAS shuts its pool down before fork and restarts it lazily,
    # jemalloc takes its locks in prefork and reinitialises in the child).
    import threading
    zmq = sys.modules.get("zmq")
    contexts = bool(zmq and getattr(zmq.Context, "_instance", None) is not None)
    torch = sys.modules.get("torch")  # CUDA initialised before fork is unusable in every child
    cuda = bool(torch and hasattr(torch, "cuda") and torch.cuda.is_initialized())
    python_threads = threading.active_count()
    safe = python_threads == 1 and not contexts and not cuda
    data = [line.split()[1] for line in open("/proc/self/status") if line.startswith("VmData:")]
    _send(control, {"ready": safe, "python_threads": python_threads, "native_threads": _threads(),
                    "data_bytes": int(data[0]) * 1024 if data else 0,
                    "zmq_context": contexts, "cuda_initialized": cuda, "loaded": loaded, "failed": failed,
                    "seconds": round(time.perf_counter() - start, 3)})
    if not safe:
        sys.exit(3)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    while True:
        try:
            msg, fds, _, _ = socket.recv_fds(control, 64, 1)
        except InterruptedError:
            continue
        if not msg:  # the grader closed its end (or died): the whole sandbox goes with us
            os._exit(0)
        if msg != b"fork" or len(fds) != 1:
            for fd in fds:
                os.close(fd)
            continue
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                control.close()
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                _child(fds[0])
                code = 0
            except BaseException as exc:  # noqa: BLE001 - report and leave, never return into the server loop
                try:
                    os.write(2, f"forkserver child: {type(exc).__name__}: {exc}\n".encode())
                except OSError:
                    pass
            os._exit(code)
        os.close(fds[0])


# ----------------------------------------------------------------------------------------------
# One kernel


def _child(fd: int) -> None:
    os.setsid()
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # the server (so its sandbox) gone: go too
    sock = socket.socket(fileno=fd)
    _send(sock, {"hello": os.getpid()}, cred_pid=os.getpid())
    data = sock.recv(MAX_MESSAGE)  # sent once the grader has put us in the sandbox's cgroups
    if not data:
        return
    req = json.loads(data)
    try:
        _isolate(req)
    except OSError as exc:
        _send(sock, {"error": f"isolation failed: {exc}"})
        return
    init = os.fork()  # pid 1 of the new PID namespace
    if init == 0:
        code = 1
        try:
            _init(req, sock)
        except BaseException as exc:  # noqa: BLE001
            try:
                os.write(2, f"forkserver init: {type(exc).__name__}: {exc}\n".encode())
            except OSError:
                pass
        os._exit(code)
    _send(sock, {"init": init}, cred_pid=init)
    _supervise(sock, init)


def _isolate(req: dict) -> None:
    """New namespaces; of the jobs root only this kernel's workdir and run dir stay visible."""
    _check(_libc.unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWPID), "unshare")
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    work = (os.open(req["workdir"], os.O_PATH | os.O_DIRECTORY), req["workdir"])
    keep = [(os.open(req["rundir"], os.O_PATH | os.O_DIRECTORY), req["rundir"])]
    keep_ro = [(os.open(path, os.O_PATH | os.O_DIRECTORY), path) for path in req.get("ro_keep", [])
               if os.path.isdir(path)]
    for path in ("/tmp", "/dev/shm"):  # first: the jobs root may lie under /tmp
        _mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV,
               f"size={int(req['tmp_size'])},nr_inodes={int(req['disk_inodes'])},mode=1777")
    for fd, path in keep_ro:  # the Python environment, if it lies under /tmp: back, read-only
        _makedirs_root(path)
        _mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC)
        _mount(None, path, None, MS_BIND | MS_REMOUNT | MS_RDONLY)
        os.close(fd)
    if os.path.isdir(req["jobs_root"]):  # still visible (not under /tmp): cover it
        _mount("tmpfs", req["jobs_root"], "tmpfs", MS_NOSUID | MS_NODEV, "size=64k,mode=0755")
    for fd, path in keep:  # the kernel's own run dir only, bound back from the fd opened above
        _makedirs_root(path)
        _mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC)
        os.close(fd)
    _disk(work, req)
    if os.path.isdir("/dev/pts"):  # its own ptys (bwrap's /dev/ptmx is a link to pts/ptmx)
        _mount("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=620")
    socket.sethostname("sandbox")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:  # the namespace's own loopback, up
        ifreq = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", _ioctl(s, SIOCGIFFLAGS, ifreq))[1]
        _ioctl(s, SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP))


def _disk(work: tuple[int, str], req: dict) -> None:
    """The kernel's workdir: a tmpfs of its own (``disk_limit`` bytes, ``disk_inodes`` files), the
    job's files copied in from the host folder (still reachable through its fd) and given to the
    kernel's uid. The copy is charged to the kernel's memory cgroup, joined before the request."""
    import shutil
    fd, path = work
    _makedirs_root(path)
    _mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV,
           f"size={int(req['disk_limit'])},nr_inodes={int(req['disk_inodes'])},mode=0755")
    shutil.copytree(f"/proc/self/fd/{fd}", path, symlinks=True, dirs_exist_ok=True)
    os.close(fd)
    uid, gid = int(req["uid"]), int(req["gid"])
    for folder, dirs, files in os.walk(path):
        os.chown(folder, uid, gid, follow_symlinks=False)
        for name in files:
            os.chown(os.path.join(folder, name), uid, gid, follow_symlinks=False)


def _makedirs_root(path: str) -> None:
    """``path`` and its missing parents, root-owned, mode 0755 whatever the umask."""
    missing = []
    while not os.path.isdir(path):
        missing.append(path)
        path = os.path.dirname(path)
    for folder in reversed(missing):
        os.mkdir(folder)
        os.chmod(folder, 0o755)


def _ioctl(sock: socket.socket, request: int, arg: bytes) -> bytes:
    import fcntl
    return fcntl.ioctl(sock.fileno(), request, arg)


def _supervise(sock: socket.socket, init: int) -> None:
    pidfd = os.pidfd_open(init)
    while True:
        ready, _, _ = select.select([sock, pidfd], [], [])
        if pidfd in ready:
            _, status = os.waitpid(init, 0)
            code = os.waitstatus_to_exitcode(status)
            try:
                _send(sock, {"exit": code})
            except OSError:
                pass
            return
        try:
            data = sock.recv(MAX_MESSAGE)
        except OSError:
            data = b""
        if not data or data == b"kill":  # the grader is done with this kernel
            os.kill(init, signal.SIGKILL)


def _init(req: dict, sock: socket.socket) -> None:
    """PID 1 of the kernel's namespace: /proc, limits, drop to the slot's user, fork the kernel, reap."""
    _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    sock.close()
    os.closerange(3, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    devnull = os.open("/dev/null", os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    for name, (soft, hard) in req["rlimits"].items():
        resource.setrlimit(getattr(resource, name), (soft, hard))
    for cap in range(64):
        try:
            _prctl(PR_CAPBSET_DROP, cap)
        except OSError:
            break
    uid, gid = int(req["uid"]), int(req["gid"])
    if uid == 0 or gid == 0:
        raise RuntimeError("refusing to run a kernel as root")
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    _prctl(PR_SET_NO_NEW_PRIVS, 1)
    if os.getuid() != uid or os.geteuid() != uid or os.getgroups():
        raise RuntimeError("could not drop privileges")
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # the supervisor gone: the namespace goes (reset by setresuid)
    kernel = os.fork()
    if kernel == 0:
        code = 1
        try:
            _kernel(req)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException as exc:  # noqa: BLE001
            os.write(2, f"forkserver kernel: {type(exc).__name__}: {exc}\n".encode())
        os._exit(code)
    signal.signal(signal.SIGTERM, lambda *_: os.kill(kernel, signal.SIGKILL))
    signal.signal(signal.SIGINT, lambda *_: os.kill(kernel, signal.SIGINT))
    while True:  # reap orphans; leave (taking the namespace down) when the kernel is gone
        try:
            pid, status = os.wait()
        except ChildProcessError:
            os._exit(0)
        except InterruptedError:
            continue
        if pid == kernel:
            os._exit(os.waitstatus_to_exitcode(status) & 0xFF)


def _kernel(req: dict) -> None:
    os.setsid()
    os.chdir(req["workdir"])
    os.environ.clear()
    os.environ.update(req["env"])
    os.umask(0o022)
    import tempfile
    tempfile.tempdir = None  # recomputed from this kernel's TMPDIR
    sys.path[0] = req["workdir"]  # as `python -m ipykernel_launcher` run in the workdir has it
    sys.argv = [sys.executable, "-m", "ipykernel_launcher", "-f", req["connection_file"]]
    if "numpy" in sys.modules:  # the server's global RNG state would be the same for every kernel
        sys.modules["numpy"].random.seed()
    _apply_thread_counts(req["env"])
    from ipykernel.kernelapp import IPKernelApp

    app = IPKernelApp.instance()
    app.initialize(["-f", req["connection_file"], "--HistoryManager.hist_file=:memory:"])
    app.start()


def _apply_thread_counts(env: dict) -> None:
    """Thread counts a fresh process would take from its environment when loading torch and BLAS;
    here those libraries were loaded by the server, so set them from this kernel's environment."""
    def count(*names: str) -> int | None:
        for name in names:
            if str(env.get(name, "")).isdigit() and int(env[name]) > 0:
                return int(env[name])
        return None

    omp, blas = count("OMP_NUM_THREADS"), count("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS")
    if omp and "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(omp)
    if blas or omp:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:  # then BLAS keeps the server's thread count
            return
        if blas:
            threadpool_limits(limits=blas, user_api="blas")
        if omp:
            threadpool_limits(limits=omp, user_api="openmp")


def main(argv: list[str]) -> None:
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--control-fd", type=int, required=True)
    parser.add_argument("--preload", default="")
    args = parser.parse_args(argv)
    serve(args.control_fd, [name for name in args.preload.split(",") if name])


if __name__ == "__main__":
    main(sys.argv[1:])
