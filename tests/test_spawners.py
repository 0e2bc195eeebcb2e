"""The hub's spawners as jupyterhub_config.py configures them, without a cluster.

Each test starts JupyterHub's own application on the repository's jupyterhub_config.py (with the
environment choosing the spawner), lets it build the real spawner of a real user, and inspects
what that spawner would ask its backend for: the Kubernetes pod manifest, the Docker Engine
create-container request (received by a recording socket), the SLURM batch script (handed to a
submit command that stores it).
"""
from __future__ import annotations

import asyncio
import http.server
import json
import os
import pwd
import shutil
import socketserver
import threading
from pathlib import Path

import pytest
import yaml
from jupyterhub import orm
from jupyterhub.app import JupyterHub

from interplab.autograder.hub import profiles
from interplab.autograder.hub.login import DemoAuthenticator
from interplab.autograder.hub.spawners import SINGLEUSER_CONFIG, CourseLocalSpawner, SystemUserSpawner
from interplab.autograder.student_course import COURSE_ENV

from conftest import make_course
from hubtools import delete_accounts, demo_mode, system_mode

pytestmark = pytest.mark.slow  # each test initialises a whole JupyterHub (a few seconds)

REPO = Path(__file__).resolve().parents[1]
GIB = 1024**3

KUBECONFIG = """apiVersion: v1
kind: Config
clusters:
- name: unreachable
  cluster: {server: "https://127.0.0.1:9"}
users:
- name: nobody
  user: {token: "not-a-token"}
contexts:
- name: unreachable
  context: {cluster: unreachable, user: nobody, namespace: interplab}
current-context: unreachable
"""


@pytest.fixture
def hub_env(tmp_path, monkeypatch):
    """Environment for jupyterhub_config.py, the hub's state in a temporary folder."""
    monkeypatch.setenv("INTERPLAB_HUB_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("INTERPLAB_COURSE", str(make_course(tmp_path)))  # the course page needs one
    for var in ("INTERPLAB_SPAWNER", "INTERPLAB_AUTH", "INTERPLAB_HUB_IP", "INTERPLAB_EXCHANGE", "INTERPLAB_DEMO_STUDENTS"):
        monkeypatch.delenv(var, raising=False)
    (tmp_path / "kubeconfig").write_text(KUBECONFIG)  # KubeSpawner loads one; nothing is contacted
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kubeconfig"))
    monkeypatch.chdir(tmp_path)
    demo = None
    if os.geteuid() == 0:  # the local spawner's servers then run as a demo account: this test's own,
        demo = demo_mode(f"ils{os.getpid()}")  # with the course (and its exchange) where it may read
        for var, value in demo[1].items():
            if var != "INTERPLAB_EXCHANGE":  # each spawner's own default stays
                monkeypatch.setenv(var, value)
        monkeypatch.setenv("INTERPLAB_COURSE", str(make_course(demo[0])))
    yield tmp_path
    if demo:
        delete_accounts(f"ils{os.getpid()}")
        shutil.rmtree(demo[0], ignore_errors=True)


def hub_spawner(user: str = "alice"):
    """JupyterHub initialised from jupyterhub_config.py, and ``user``'s default spawner."""

    async def build():
        app = JupyterHub()
        await app.initialize(["-f", str(REPO / "jupyterhub_config.py"), "--log-level=WARN"])
        orm_user = app.db.query(orm.User).filter_by(name=user).one()
        return app, app.users[orm_user].spawners[""]

    JupyterHub.clear_instance()
    return asyncio.run(build())


def test_profiles_are_defined_once_with_the_course_resources():
    cpu, gpu = profiles.PROFILES
    assert (cpu.slug, cpu.cpu, cpu.mem_gib, cpu.gpus, cpu.default) == ("cpu", 2, 4, 0, True)
    assert (gpu.slug, gpu.cpu, gpu.mem_gib, gpu.gpus) == ("gpu", 8, 32, 1)
    assert gpu.node_selector and gpu.tolerations[0]["key"] == "nvidia.com/gpu"


def test_local_spawner_is_the_default_with_homes_under_the_data_dir(hub_env):
    app, spawner = hub_spawner("alice")
    assert type(spawner) is CourseLocalSpawner
    assert isinstance(app.authenticator, DemoAuthenticator)
    env = spawner.get_env()
    if os.geteuid() == 0:  # never a root server: the demo account's, with HOMEs under its home
        account = pwd.getpwnam(os.environ["INTERPLAB_DEMO_ACCOUNT"])
        assert spawner.demo_account == account.pw_name and account.pw_uid >= 1000
        assert spawner.home_dir == os.path.join(account.pw_dir, "alice")
    else:
        assert spawner.demo_account == "" and spawner.home_dir == str(hub_env / "data" / "home" / "alice")
    assert env["INTERPLAB_EXCHANGE"] == os.path.join(os.environ["INTERPLAB_COURSE"], "exchange")
    assert env["HOME"] == spawner.home_dir and env["JUPYTERHUB_USER"] == "alice"
    assert env["JUPYTER_CONFIG_PATH"] == str(SINGLEUSER_CONFIG)
    assert spawner.default_url == "/lab/tree/COURSE.md"  # the course page (autograder/landing.py, test_landing.py)
    assert course_in(env, "alice")
    # the course groups and the roles that hang on them
    groups = {g.name: sorted(u.name for u in g.users) for g in app.db.query(orm.Group)}
    assert groups == {"formgrade-interplab": ["instructor"], "nbgrader-interplab": ["alice", "bob", "carol", "instructor"]}
    role = app.db.query(orm.Role).filter_by(name="instructor-interplab").one()
    assert "access:services!service=formgrader-interplab" in role.scopes
    assert [g.name for g in role.groups] == ["formgrade-interplab"]
    services = {s["name"]: s for s in app.services}
    assert set(services) == {"formgrader-interplab", "idle-culler"}
    assert services["idle-culler"]["command"][1:3] == ["-m", "jupyterhub_idle_culler"]


def course_in(env: dict[str, str], student: str) -> bool:
    """The student's course page and due dates, as the hub passes them to every spawner's server
    (autograder/landing.py; written by the server, autograder/student_course.py)."""
    course = json.loads(env[COURSE_ENV])
    return course["page"].startswith(f"# Welcome to interplab, {student}") and isinstance(course["assignments"], list)


def test_system_spawner_passes_the_course_page(hub_env, monkeypatch):
    """Our own spawner, built from the config as root builds it (the config creates the
    instructors' Unix account; the spawner creates alice's as its start does)."""
    if os.geteuid() != 0 or shutil.which("useradd") is None:
        pytest.skip("system mode creates Unix users: run as root with useradd (CI runs as root)")
    prefix = f"ilsp{os.getpid() % 100000}"
    base, env = system_mode(prefix, (63100, 63199))  # a uid range no other test uses
    try:
        for var, value in env.items():
            monkeypatch.setenv(var, value)
        _, spawner = hub_spawner("alice")
        assert type(spawner) is SystemUserSpawner
        spawner.account()
        spawner._gpus = []  # what start() leases; a CPU server here
        env = spawner.get_env()
        assert env["USER"] == f"{prefix}-alice" and course_in(env, "alice")
        assert spawner.default_url == "/lab/tree/COURSE.md"
    finally:
        delete_accounts(prefix)
        shutil.rmtree(base, ignore_errors=True)


def test_demo_login_refuses_anything_but_loopback(hub_env, monkeypatch):
    monkeypatch.setenv("INTERPLAB_HUB_IP", "0.0.0.0")
    with pytest.raises(SystemExit, match="demo login"):
        hub_spawner()
    JupyterHub.clear_instance()
    with pytest.raises(ValueError, match="only runs on loopback"):
        DemoAuthenticator(bind_host="192.0.2.1", accounts={"a": "b"}, allowed_users={"a"}).check_allow_config()
    DemoAuthenticator(bind_host="::1", accounts={"a": "b"}, allowed_users={"a"}).check_allow_config()


def pod_for(spawner, profile: str):
    async def manifest():
        spawner.user_options = {"profile": profile}
        await spawner.load_user_options()
        return await spawner.get_pod_manifest()

    return asyncio.run(manifest())


def test_kubernetes_pods_follow_the_profiles(hub_env, monkeypatch):
    monkeypatch.setenv("INTERPLAB_SPAWNER", "kubernetes")
    _, spawner = hub_spawner("alice")
    assert type(spawner).__name__ == "KubeSpawner"
    assert [p["slug"] for p in spawner.profile_list] == ["cpu", "gpu"]

    gpu = pod_for(spawner, "gpu")
    container = gpu.spec.containers[0]
    assert container.image == profiles.GPU_IMAGE
    assert container.resources.limits == {"cpu": 8.0, "memory": 32 * GIB, "nvidia.com/gpu": "1"}
    assert container.resources.requests == {"cpu": 8.0, "memory": 32 * GIB, "nvidia.com/gpu": "1"}
    assert gpu.spec.node_selector == {"interplab.org/accelerator": "nvidia-gpu"}
    assert [(t.key, t.operator, t.effect) for t in gpu.spec.tolerations] == [("nvidia.com/gpu", "Exists", "NoSchedule")]

    _, spawner = hub_spawner("bob")
    cpu = pod_for(spawner, "cpu")
    container = cpu.spec.containers[0]
    assert container.image == profiles.CPU_IMAGE
    assert container.resources.limits == {"cpu": 2.0, "memory": 4 * GIB}
    assert not cpu.spec.node_selector and not cpu.spec.tolerations
    # the exchange: the course's outbound read-only, an inbox of bob's own behind inbound/
    mounts = {m.mount_path: (m.sub_path, bool(m.read_only)) for m in container.volume_mounts}
    assert mounts["/srv/nbgrader/exchange/interplab/outbound"] == ("interplab/outbound", True)
    assert mounts["/srv/nbgrader/exchange/interplab/inbound"] == ("interplab/inbound/bob", False)
    env = {e.name: e.value for e in container.env}
    assert env["JUPYTERHUB_USER"] == "bob" and env["INTERPLAB_EXCHANGE"] == "/srv/nbgrader/exchange"
    assert course_in(env, "bob") and spawner.default_url == "/lab/tree/COURSE.md"
    assert cpu.spec.security_context["fsGroup"] == 100 and container.security_context["runAsUser"] == 1000


class _Recorder(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    requests: list

    def get_request(self):  # unix sockets have no client address; http.server wants one
        request, _ = super().get_request()
        return request, ("docker-client", 0)


class _EngineHandler(http.server.BaseHTTPRequestHandler):
    """Answers the Docker Engine API calls a container creation makes, and records them."""

    def _reply(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        self.server.requests.append((self.path, body))
        self._reply(201, {"Id": "c0ffee", "Warnings": []})

    def log_message(self, *args):
        pass


@pytest.fixture
def docker_engine(tmp_path):
    sock = tmp_path / "docker.sock"
    server = _Recorder(str(sock), _EngineHandler)
    server.requests = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield sock, server.requests
    server.shutdown()
    server.server_close()


def docker_create_request(spawner, profile: str) -> dict:
    # as User.spawn does: options in, previous state (and so any previous child) out
    spawner.user_options = {"profile": profile}
    spawner.clear_state()
    spawner.construct_child()
    child = spawner.child_spawner

    async def create():
        await child.create_object()

    asyncio.run(create())
    return child


def test_docker_containers_follow_the_profiles(hub_env, monkeypatch, docker_engine):
    sock, requests = docker_engine
    monkeypatch.setenv("INTERPLAB_SPAWNER", "docker")
    monkeypatch.setenv("DOCKER_HOST", f"unix://{sock}")
    from dockerspawner import DockerSpawner

    DockerSpawner._client = None  # the client is a class-wide singleton: point it at our socket
    monkeypatch.setattr(DockerSpawner, "client_kwargs", {"version": "1.44"}, raising=False)
    _, spawner = hub_spawner("alice")
    assert type(spawner).__name__ == "ProfilesSpawner"
    assert 'value="cpu"' in spawner.options_form and 'value="gpu"' in spawner.options_form

    child = docker_create_request(spawner, "gpu")
    assert isinstance(child, DockerSpawner)
    path, body = requests[-1]
    assert path.endswith("/containers/create?name=" + child.container_name)
    assert body["Image"] == profiles.GPU_IMAGE
    host = body["HostConfig"]
    assert host["Memory"] == 32 * GIB
    assert host["CpuQuota"] == 8 * host["CpuPeriod"]
    assert host["DeviceRequests"] == [{"Driver": "nvidia", "Count": 1, "DeviceIDs": [], "Capabilities": [["gpu"]], "Options": {}}]
    binds = set(host["Binds"])
    exchange = hub_env / "data" / "exchange" / "interplab"
    assert f"{exchange}/inbound/alice:/srv/nbgrader/exchange/interplab/inbound:rw" in binds
    assert f"{exchange}/outbound:/srv/nbgrader/exchange/interplab/outbound:ro" in binds
    assert "JUPYTERHUB_USER=alice" in body["Env"]
    assert course_in(dict(e.split("=", 1) for e in body["Env"]), "alice") and child.default_url == "/lab/tree/COURSE.md"

    DockerSpawner._client = None
    _, spawner = hub_spawner("bob")
    docker_create_request(spawner, "cpu")
    _, body = requests[-1]
    assert body["Image"] == profiles.CPU_IMAGE
    assert body["HostConfig"]["Memory"] == 4 * GIB
    assert body["HostConfig"]["CpuQuota"] == 2 * body["HostConfig"]["CpuPeriod"]
    assert not body["HostConfig"].get("DeviceRequests")
    DockerSpawner._client = None


def slurm_script(spawner, profile: str, tmp: Path) -> str:
    # as User.spawn does: options in, previous state (and so any previous child) out
    spawner.user_options = {"profile": profile}
    spawner.clear_state()
    spawner.construct_child()
    child = spawner.child_spawner
    job = tmp / f"{profile}.sbatch"
    # what sbatch would read on stdin, stored instead; the job id it would print
    child.exec_prefix = ""
    child.batch_submit_cmd = f"cat > {job}; echo 4242"

    async def submit():
        return await child.submit_batch_script()

    assert asyncio.run(submit()) == "4242"
    return job.read_text()


def test_slurm_batch_scripts_follow_the_profiles(hub_env, monkeypatch):
    monkeypatch.setenv("INTERPLAB_SPAWNER", "slurm")
    monkeypatch.setenv("INTERPLAB_SLURM_GPU_PARTITION", "gpu")
    # on a cluster every hub user is a Unix user (BatchSpawner reads their home and shell):
    # take two that exist on any Debian machine
    monkeypatch.setenv("INTERPLAB_DEMO_STUDENTS", "nobody,daemon")
    _, spawner = hub_spawner("nobody")
    assert type(spawner).__name__ == "ProfilesSpawner"
    gpu = slurm_script(spawner, "gpu", hub_env)
    assert "#SBATCH --gres=gpu:1\n" in gpu
    assert "#SBATCH --cpus-per-task=8\n" in gpu and "#SBATCH --mem=32G\n" in gpu
    assert "#SBATCH --partition=gpu\n" in gpu
    assert "jupyterhub-singleuser" in gpu
    # sbatch runs with the spawner's environment and exports it to the job (--export=<its names>)
    child = spawner.child_spawner
    exported = next(line for line in gpu.splitlines() if line.startswith("#SBATCH --export="))
    assert COURSE_ENV in exported.split("=", 1)[1].split(",") and course_in(child.get_env(), "nobody")

    _, spawner = hub_spawner("daemon")
    cpu = slurm_script(spawner, "cpu", hub_env)
    assert "--gres" not in cpu and "--partition" not in cpu
    assert "#SBATCH --cpus-per-task=2\n" in cpu and "#SBATCH --mem=4G\n" in cpu


def test_helm_values_carry_the_same_profiles():
    values = yaml.safe_load((REPO / "deploy" / "values.yaml").read_text())
    assert values["singleuser"]["profileList"] == profiles.kubespawner_profile_list()
    assert values["cull"]["enabled"] is True
