"""Driving a real local hub from tests and benchmarks: free loopback ports, a throwaway course,
the hub as a subprocess (`interplab hub`), and logged-in HTTP sessions for demo accounts."""
from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import requests

REPO = Path(__file__).resolve().parents[1]
TINY = "tiny"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _nbgrader_cell(source: str, **meta) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_code_cell(textwrap.dedent(source).strip())
    cell.metadata["nbgrader"] = {"schema_version": 3, "locked": False, "solution": False, "grade": False, **meta}
    return cell


def make_tiny_course(root: Path, course_id: str = "interplab") -> Path:
    """A course root with one stock nbgrader assignment, ``tiny``, generated into release/.

    Stand-in for the real course in hub tests: one solution cell (a function) and one autograded
    test cell worth 1 point, generated with stock ``nbgrader generate_assignment``."""
    root = Path(root)
    (root / "source" / TINY).mkdir(parents=True, exist_ok=True)
    (root / "nbgrader_config.py").write_text(
        "import os\nc = get_config()\nhere = os.path.dirname(os.path.abspath(__file__))\n"
        f"c.CourseDirectory.root = here\nc.CourseDirectory.course_id = {course_id!r}\n"
        "c.CourseDirectory.db_url = 'sqlite:///' + os.path.join(here, 'gradebook.db')\n"
    )
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        nbformat.v4.new_markdown_cell("# Tiny\nImplement `add`."),
        _nbgrader_cell(
            """
            def add(a, b):
                ### BEGIN SOLUTION
                return a + b
                ### END SOLUTION
            """,
            solution=True, grade_id="impl_add",
        ),
        _nbgrader_cell("print('tiny ready', 6 * 7)", grade_id="demo_print", locked=True),
        _nbgrader_cell("assert add(2, 3) == 5", grade=True, points=1, grade_id="test_add", locked=True),
    ]
    nbformat.write(nb, root / "source" / TINY / f"{TINY}.ipynb")
    env = dict(os.environ, PATH=os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")]))
    proc = subprocess.run(
        [sys.executable, "-m", "nbgrader", "generate_assignment", TINY, "--force", f"--CourseDirectory.root={root}"],
        cwd=root, env=env, capture_output=True, text=True, timeout=180,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"nbgrader generate_assignment failed:\n{proc.stdout}\n{proc.stderr}")
    return root


@dataclass
class Hub:
    """A running `interplab hub` on free loopback ports."""

    url: str
    data: Path
    course: Path
    exchange: Path
    env: dict[str, str]
    proc: subprocess.Popen
    log_path: Path
    accounts: dict[str, str] = field(default_factory=dict)
    extra_env: dict[str, str] = field(default_factory=dict)  # what start_hub added: a restart passes it again
    demo_prefix: str = ""  # of the demo account start_hub made for this hub, which stop_hub deletes

    @property
    def formgrader(self) -> str:
        return f"{self.url}/services/formgrader-{self.env['INTERPLAB_COURSE_ID']}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def home(self, name: str) -> Path:
        """HOME of ``name``'s server on the local spawner: under the demo account's home when the
        hub runs as root (jupyterhub_config.py), else under the hub's data directory."""
        if "INTERPLAB_DEMO_ACCOUNT" in self.env:
            return Path(pwd.getpwnam(self.env["INTERPLAB_DEMO_ACCOUNT"]).pw_dir) / name
        return self.data / "home" / name


def start_hub(course: Path, data: Path, students: tuple[str, ...] | None = None, timeout: float = 180,
              extra_env: dict[str, str] | None = None) -> Hub:
    """`interplab hub --course COURSE` with its state in DATA; returns once it printed its accounts.
    As root on the local spawner, a demo account of this hub's own (``demo_mode``), which
    ``stop_hub`` deletes unless told to keep it for a restart."""
    extra_env, demo_prefix = dict(extra_env or {}), ""
    if (os.geteuid() == 0 and extra_env.get("INTERPLAB_SPAWNER", os.environ.get("INTERPLAB_SPAWNER", "local")) == "local"
            and "INTERPLAB_DEMO_ACCOUNT" not in extra_env):
        demo_prefix = f"ild{uuid.uuid4().hex[:8]}"
        extra_env.update(demo_mode(demo_prefix)[1])
    port = free_port()
    env = dict(os.environ)
    env.update(
        INTERPLAB_HUB_IP="127.0.0.1",
        INTERPLAB_HUB_PORT=str(port),
        INTERPLAB_HUB_API_PORT=str(free_port()),
        INTERPLAB_PROXY_API_PORT=str(free_port()),
        INTERPLAB_FORMGRADER_PORT=str(free_port()),
        INTERPLAB_HUB_DATA=str(data),
        INTERPLAB_COURSE=str(course),
        INTERPLAB_COURSE_ID="interplab",
        INTERPLAB_EXCHANGE=str(Path(course) / "exchange"),
        HF_HUB_OFFLINE="1",
        PYTHONUNBUFFERED="1",
    )
    if students:
        env["INTERPLAB_DEMO_STUDENTS"] = ",".join(students)
    env.update(extra_env)
    data.mkdir(parents=True, exist_ok=True)
    log_path = data / "hub.log"
    log = open(log_path, "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "interplab.cli", "hub", "--course", str(course)],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    scheme = "https" if env.get("INTERPLAB_SSL_CERT") else "http"
    hub = Hub(f"{scheme}://127.0.0.1:{port}", data, Path(course), Path(env["INTERPLAB_EXCHANGE"]), env, proc, log_path,
              extra_env=extra_env, demo_prefix=demo_prefix)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = hub.log()
        if "Ctrl-C stops the hub" in text:
            if env.get("INTERPLAB_AUTH", "demo") == "demo":
                hub.accounts = json.loads((data / "demo-accounts.json").read_text())
            return hub
        if proc.poll() is not None:
            stop_hub(hub)  # deletes its demo account
            raise RuntimeError(f"interplab hub exited ({proc.returncode}):\n{text[-5000:]}")
        time.sleep(0.3)
    stop_hub(hub)
    raise RuntimeError(f"interplab hub not ready in {timeout} s:\n{hub.log()[-5000:]}")


def interpreter_reachable_by_all() -> None:
    """The venv's interpreter lives where its Python was installed (pyenv under /root on the
    development machine, mode 0700): let every user traverse (not list) the folders down to it, as
    a site installs Python for its users. Nothing is made readable that was not already."""
    target = Path(os.path.realpath(sys.executable)).parent
    for folder in [target, *target.parents]:
        mode = folder.stat().st_mode
        if not mode & 0o001:
            folder.chmod(mode | 0o001)


def open_folder(prefix: str) -> Path:
    """A fresh folder under /tmp with ``home/`` in it that other Unix users may traverse (pytest's
    and tempfile's own are root's alone), and the venv's interpreter within their reach: whichever
    test runs first."""
    interpreter_reachable_by_all()
    base = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    base.chmod(0o711)
    (base / "home").mkdir(mode=0o755)
    return base


def demo_mode(prefix: str, uids: tuple[int, int] = (64000, 64999)) -> tuple[Path, dict[str, str]]:
    """A folder the demo account may traverse and the environment of a root hub on the local
    spawner whose servers run as the account ``<prefix>-demo`` (uids in ``uids``, a range no other
    test uses), its home and the exchange inside the folder; ``delete_accounts(prefix)`` removes it."""
    base = open_folder(f"interplab-{prefix}-")
    return base, {"INTERPLAB_DEMO_ACCOUNT": prefix + "-demo", "INTERPLAB_UID_MIN": str(uids[0]),
                  "INTERPLAB_UID_MAX": str(uids[1]), "INTERPLAB_HOME_ROOT": str(base / "home"),
                  "INTERPLAB_EXCHANGE": str(base / "exchange")}


def system_mode(prefix: str, uids: tuple[int, int] = (62000, 62999)) -> tuple[Path, dict[str, str]]:
    """A folder students may traverse and the hub environment of ``INTERPLAB_SPAWNER=system`` in
    it: accounts ``<prefix>-<name>`` with uids in ``uids`` (a range no other test uses), homes and
    the exchange inside the folder."""
    base = open_folder("interplab-hubsys-")
    env = {
        "INTERPLAB_SPAWNER": "system", "INTERPLAB_UNIX_NAME": prefix + "-{username}",
        "INTERPLAB_INSTRUCTOR_ACCOUNT": prefix + "-instructors",
        "INTERPLAB_UID_MIN": str(uids[0]), "INTERPLAB_UID_MAX": str(uids[1]),
        "INTERPLAB_HOME_ROOT": str(base / "home"), "INTERPLAB_EXCHANGE": str(base / "exchange"),
    }
    return base, env


def delete_accounts(prefix: str) -> list[str]:
    """Delete the Unix accounts ``<prefix>-*`` that system or demo mode created (their processes first)."""
    from interplab.autograder.sandbox.cgroups import kill_pid, pids_of_uid

    deleted = []
    for account in pwd.getpwall():
        if account.pw_name.startswith(prefix + "-"):
            for pid in pids_of_uid(account.pw_uid):  # only this run's accounts own processes with these uids
                kill_pid(pid)
            for _ in range(20):  # userdel refuses while a killed process is still exiting
                if subprocess.run(["userdel", account.pw_name], capture_output=True).returncode != 8:
                    break
                time.sleep(0.5)
            deleted.append(account.pw_name)
    return deleted


def stop_hub(hub: Hub, timeout: float = 60, keep_demo_account: bool = False) -> int:
    """Ctrl-C as a person would press it (SIGINT to the process group), then wait; then delete the
    demo account ``start_hub`` made for it, with its folder (``keep_demo_account`` for a restart)."""
    if hub.proc.poll() is None:
        os.killpg(hub.proc.pid, signal.SIGINT)
        try:
            hub.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(hub.proc.pid, signal.SIGKILL)
            hub.proc.wait(10)
    if hub.demo_prefix and not keep_demo_account:
        delete_accounts(hub.demo_prefix)
        shutil.rmtree(Path(hub.extra_env["INTERPLAB_HOME_ROOT"]).parent, ignore_errors=True)
    return hub.proc.returncode


def login(hub: Hub, name: str, password: str | None = None) -> requests.Session:
    """A session logged in through the hub's login form (cookie + _xsrf, as a browser does)."""
    s = requests.Session()
    r = s.get(f"{hub.url}/hub/login", timeout=30)
    r.raise_for_status()
    xsrf = s.cookies.get("_xsrf") or re.search(r'name="_xsrf" value="([^"]+)"', r.text).group(1)
    r = s.post(
        f"{hub.url}/hub/login?next=",
        data={"username": name, "password": password if password is not None else hub.accounts[name], "_xsrf": xsrf},
        timeout=60, allow_redirects=False,
    )
    if r.status_code != 302:
        raise RuntimeError(f"login of {name} failed: HTTP {r.status_code}")
    s.headers["X-XSRFToken"] = s.cookies.get("_xsrf", path="/hub/") or xsrf
    s.hub_xsrf = s.headers["X-XSRFToken"]
    return s


def sign_up(hub: Hub, name: str, password: str) -> str:
    """The native login's sign-up form, as a person fills it in; returns the page's message."""
    s = requests.Session()
    r = s.get(f"{hub.url}/hub/signup", timeout=30)
    r.raise_for_status()
    xsrf = s.cookies.get("_xsrf") or re.search(r'name="_xsrf" value="([^"]+)"', r.text).group(1)
    r = s.post(f"{hub.url}/hub/signup", timeout=60, data={
        "username": name, "signup_password": password, "signup_password_confirmation": password, "_xsrf": xsrf})
    r.raise_for_status()
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", r.text))


def approve(hub: Hub, admin: requests.Session, name: str) -> None:
    """An admin approves a signed-up account on the native login's authorization page."""
    r = admin.get(f"{hub.url}/hub/authorize/{name}", timeout=30)
    r.raise_for_status()


def api_token(hub: Hub, session: requests.Session, name: str) -> str:
    """An API token of ``name``'s own, made with its logged-in session (same permissions as the user)."""
    r = session.post(f"{hub.url}/hub/api/users/{name}/tokens", json={"note": "test", "expires_in": 3600}, timeout=30)
    r.raise_for_status()
    return r.json()["token"]


def spawn(hub: Hub, token: str, name: str, timeout: float = 120) -> float:
    """Start ``name``'s server and wait until the hub says it is ready; returns seconds taken."""
    headers = {"Authorization": f"token {token}"}
    t0 = time.monotonic()
    r = requests.post(f"{hub.url}/hub/api/users/{name}/server", headers=headers, timeout=60)
    if r.status_code not in (201, 202, 400):  # 400: already running
        raise RuntimeError(f"spawn of {name}: HTTP {r.status_code} {r.text[:300]}")
    while time.monotonic() - t0 < timeout:
        model = requests.get(f"{hub.url}/hub/api/users/{name}", headers=headers, timeout=30).json()
        server = model.get("servers", {}).get("")
        if server and server.get("ready"):
            return time.monotonic() - t0
        if not server:  # the hub gave up on it (start or http timeout): see the hub's log
            raise RuntimeError(f"spawn of {name} failed after {time.monotonic() - t0:.0f} s")
        time.sleep(0.25)
    raise RuntimeError(f"server of {name} not ready in {timeout} s")


class Kernel:
    """A real kernel in a user's server, driven over Jupyter's websocket protocol (as JupyterLab does)."""

    def __init__(self, hub: Hub, token: str, name: str, kernel_id: str | None = None):
        """A new kernel, or the running ``kernel_id`` (one a browser opened)."""
        import websocket  # websocket-client, a dependency of selenium (the test extra)

        self.headers = {"Authorization": f"token {token}"}
        if kernel_id is None:
            r = requests.post(f"{hub.url}/user/{name}/api/kernels", headers=self.headers, json={}, timeout=120)
            r.raise_for_status()
            kernel_id = r.json()["id"]
        self.id = kernel_id
        ws_url = hub.url.replace("http", "ws", 1) + f"/user/{name}/api/kernels/{self.id}/channels"
        self.ws = websocket.create_connection(ws_url, header=[f"Authorization: token {token}"], timeout=120,
                                              sslopt={"ca_certs": os.environ.get("REQUESTS_CA_BUNDLE")})
        self.session = uuid.uuid4().hex

    def run(self, code: str, timeout: float = 120) -> str:
        """stdout and stderr of ``code``, then ``ename: evalue`` if it raised; ``KERNEL DIED`` if the
        kernel died (the server restarts it)."""
        msg_id = uuid.uuid4().hex
        self.ws.send(json.dumps({
            "header": {"msg_id": msg_id, "username": "test", "session": self.session, "msg_type": "execute_request",
                       "version": "5.3"},
            "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
            "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {},
                        "allow_stdin": False, "stop_on_error": True},
        }))
        out, replied, idle = [], False, False
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = json.loads(self.ws.recv())
            kind = msg.get("msg_type") or msg["header"]["msg_type"]
            if kind == "status" and msg["content"].get("execution_state") in ("restarting", "dead"):
                return "KERNEL DIED"
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            if kind == "stream":
                out.append(msg["content"]["text"])
            elif kind == "error":
                out.append(f"{msg['content']['ename']}: {msg['content']['evalue']}")
            # the reply (shell) may overtake the output (iopub); the idle status comes after all of it
            replied = replied or kind == "execute_reply"
            idle = idle or (kind == "status" and msg["content"].get("execution_state") == "idle")
            if replied and idle:
                return "".join(out)
        raise TimeoutError(f"no reply to {code[:60]!r} in {timeout} s")

    def close(self) -> None:
        self.ws.close()


def stop_server(hub: Hub, token: str, name: str, timeout: float = 60) -> None:
    headers = {"Authorization": f"token {token}"}
    requests.delete(f"{hub.url}/hub/api/users/{name}/server", headers=headers, timeout=60)
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        model = requests.get(f"{hub.url}/hub/api/users/{name}", headers=headers, timeout=30).json()
        if not model.get("servers"):
            return
        time.sleep(0.25)
