"""A class on one server: the real hub on loopback over TLS (a self-signed certificate), the native
login (sign-up, approval by an admin, login) and ``INTERPLAB_SPAWNER=system``: each student's server
runs as a Unix user of its own, created on first login, in cgroups; the course is the instructors'.

Two students sign up and log in; from a real kernel in each server we check what the other can
read, stop one with its memory limit, and lease the one configured GPU (a stand-in device file,
which only the server holding the GPU can read). Accounts get uids in
62000-62999 and names with this run's own prefix, and are deleted at the end.
"""
from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import time
from pathlib import Path

import certifi
import pytest
import requests

from interplab.autograder.hub import profiles
from interplab.autograder.hub.spawners import refusal

from hub_fixtures import assert_all_gone, descendants
from hubtools import (
    Kernel,
    api_token,
    approve,
    delete_accounts,
    login,
    make_tiny_course,
    sign_up,
    start_hub,
    stop_hub,
    stop_server,
    system_mode,
)

pytestmark = pytest.mark.slow

PASSWORD = "correct-horse-battery-9"
UIDS = (62000, 62999)
GPU = "GPU-00000000-test-0000-0000-000000000000"
DEVICE = Path(f"/run/interplab-test-gpu-{os.getpid()}/nvidia0")
SERVER_MEMORY = 600 * 2**20


def needs_root_and_useradd() -> None:
    if os.geteuid() != 0 or shutil.which("useradd") is None:
        pytest.skip("system mode creates Unix users: run as root with useradd (CI runs as root)")


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    cert, key = folder / "hub.crt", folder / "hub.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    return cert, key


@pytest.fixture(scope="module")
def hub():
    needs_root_and_useradd()
    prefix = f"ilt{os.getpid() % 100000}"
    base, env = system_mode(prefix, UIDS)
    cert, key = self_signed_certificate(base)
    DEVICE.parent.mkdir(mode=0o755, exist_ok=True)
    DEVICE.write_text("gpu-0")  # a stand-in for /dev/nvidia0: readable by everyone, like the real one
    DEVICE.chmod(0o666)
    course = make_tiny_course(base / "course")
    store = course / ".interplab"  # the instructor store (hidden references, the course secret)
    store.mkdir(mode=0o700)
    (store / "secret").write_text("not for students")
    env.update({
        "INTERPLAB_AUTH": "native", "INTERPLAB_SSL_CERT": str(cert), "INTERPLAB_SSL_KEY": str(key),
        "INTERPLAB_ADMINS": "teacher", "INTERPLAB_INSTRUCTORS": "teacher",
        "INTERPLAB_SERVER_MEMORY": str(SERVER_MEMORY), "INTERPLAB_SERVER_CPUS": "1",
        "INTERPLAB_GPUS": f"{GPU}={DEVICE}",
    })
    old_bundle = os.environ.get("REQUESTS_CA_BUNDLE")
    os.environ["REQUESTS_CA_BUNDLE"] = str(cert)  # every request of this module trusts the test certificate
    running = None
    try:
        running = start_hub(course, base / "data", timeout=600, extra_env=env)
        running.prefix, running.cert, running.store = prefix, cert, store
        yield running
    finally:
        if running is not None:
            procs = descendants(running.proc.pid)
            assert stop_hub(running) == 0, running.log()[-3000:]
            assert_all_gone(procs)
        if old_bundle is None:
            os.environ.pop("REQUESTS_CA_BUNDLE", None)
        else:
            os.environ["REQUESTS_CA_BUNDLE"] = old_bundle
        delete_accounts(prefix)
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(DEVICE.parent, ignore_errors=True)


@pytest.fixture(scope="module")
def students(hub):
    """teacher (an admin: approved at sign-up), alice and bob signed up, approved by teacher, logged in."""
    assert "signup was successful" in sign_up(hub, "teacher", PASSWORD).lower()
    teacher = login(hub, "teacher", PASSWORD)
    sessions = {}
    for name in ("alice", "bob", "carol"):
        assert "sent to the admin" in sign_up(hub, name, PASSWORD)
        with pytest.raises(RuntimeError, match=f"login of {name} failed"):  # not approved yet
            login(hub, name, PASSWORD)
        approve(hub, teacher, name)
        session = login(hub, name, PASSWORD)
        sessions[name] = (session, api_token(hub, session, name))
    return sessions


def spawn(hub, token: str, name: str, profile: str, timeout: float = 180) -> requests.Response:
    """Ask for ``name``'s server with a profile; waits until it is ready unless the hub refused."""
    headers = {"Authorization": f"token {token}"}
    r = requests.post(f"{hub.url}/hub/api/users/{name}/server", headers=headers, json={"profile": profile}, timeout=60)
    if r.status_code not in (201, 202):
        return r
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        server = requests.get(f"{hub.url}/hub/api/users/{name}", headers=headers, timeout=30).json()["servers"].get("")
        if server and server.get("ready"):
            return r
        assert server, f"the server of {name} failed to start:\n{hub.log()[-3000:]}"
        time.sleep(0.5)
    raise TimeoutError(f"the server of {name} was not ready in {timeout} s")


def test_unsafe_configurations_are_refused_with_one_line():
    safe = dict(host="127.0.0.1", euid=0, tls=False, uid_min=20000, uid_max=29999)
    assert refusal("local", "demo", **safe) is None
    assert refusal("system", "native", **safe) is None
    assert refusal("system", "native", **{**safe, "host": "0.0.0.0", "tls": True}) is None
    cases = {
        ("local", "native", "127.0.0.1", 0, True): "INTERPLAB_SPAWNER=system",
        ("local", "oauth", "0.0.0.0", 0, True): "INTERPLAB_SPAWNER=system",
        ("local", "lti13", "10.0.0.5", 1000, True): "INTERPLAB_SPAWNER=system",
        ("local", "demo", "0.0.0.0", 0, True): "demo login",
        ("system", "demo", "192.0.2.1", 0, True): "demo login",
        ("system", "native", "127.0.0.1", 1000, False): "needs the hub to run as root",
        ("system", "native", "0.0.0.0", 0, False): "INTERPLAB_SSL_CERT",
        ("kubernetes", "oauth", "0.0.0.0", 0, False): "INTERPLAB_SSL_CERT",
        ("nomad", "native", "127.0.0.1", 0, True): "choose local, system",
        ("system", "ldap", "127.0.0.1", 0, True): "choose demo, native",
    }
    for (spawner, auth, host, euid, tls), words in cases.items():
        why = refusal(spawner, auth, host, euid, tls, 20000, 29999)
        assert why and words in why and "\n" not in why, (spawner, auth, host, why)
    # students' uids never reach root or system accounts
    assert "uid range" in refusal("system", "native", "127.0.0.1", 0, True, 0, 100)
    # the local demo as root runs its servers as the demo account, or not at all
    closed = "the demo account interplab-demo cannot run /root/python (Permission denied)"
    why = refusal("local", "demo", "127.0.0.1", 0, False, 20000, 29999, demo_account_error=closed)
    assert why.startswith("refusing to start: as root") and closed in why and "\n" not in why
    assert refusal("local", "demo", "127.0.0.1", 1000, False, 20000, 29999, demo_account_error=closed) is None


def test_the_hub_exits_at_start_with_the_reason(tmp_path):
    env = dict(os.environ, INTERPLAB_SPAWNER="local", INTERPLAB_AUTH="native", INTERPLAB_HUB_DATA=str(tmp_path),
               INTERPLAB_COURSE=str(tmp_path / "course"))
    proc = subprocess.run([sys.executable, "-m", "jupyterhub", "-f", str(Path(__file__).parents[1] / "jupyterhub_config.py"),
                           "--show-config"], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "refusing to start: INTERPLAB_SPAWNER=local runs every student's server" in proc.stderr
    if os.geteuid() == 0:  # the demo as root, asked to run its servers as a system account
        env.update(INTERPLAB_AUTH="demo", INTERPLAB_DEMO_ACCOUNT="daemon")
        proc = subprocess.run([sys.executable, "-m", "jupyterhub", "-f", str(Path(__file__).parents[1] / "jupyterhub_config.py"),
                               "--show-config"], env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode != 0
        assert "refusing to start: as root" in proc.stderr and "the Unix user daemon exists with uid" in proc.stderr


def test_gpu_leases_are_exclusive_and_return():
    a, b = profiles.Gpu.parse("GPU-a=/dev/nvidia0"), profiles.Gpu.parse("MIG-b")
    assert a == profiles.Gpu("GPU-a", ("/dev/nvidia0",)) and b.files == ()
    leases = profiles.GpuLeases((a, b))
    assert leases.lease("alice", 1) == [a]
    assert leases.lease("bob", 1) == [b]
    assert leases.hidden_files([b]) == ["/dev/nvidia0"] and leases.hidden_files([a]) == []
    with pytest.raises(profiles.NoGpuFree, match="no GPU is free: 2 of 2"):
        leases.lease("carol", 1)
    leases.release("alice")
    assert leases.lease("carol", 1) == [a]


def test_gpu_minor_numbers_from_nvidia_smi_xml():
    xml = ("<nvidia_smi_log><gpu id='00000000:3B:00.0'><uuid>GPU-x</uuid><minor_number>3</minor_number></gpu>"
           "<gpu id='00000000:5E:00.0'><uuid>GPU-y</uuid><minor_number>N/A</minor_number></gpu></nvidia_smi_log>")
    assert profiles.gpu_minor_numbers(xml) == {"GPU-x": "3"}
    assert profiles.gpu_minor_numbers("not xml") == {}


def test_native_login_over_tls_signs_up_approves_and_logs_in(hub, students):
    assert hub.url.startswith("https://127.0.0.1:")
    # the proxy serves the certificate we gave: trusted with it, refused by the public CA bundle
    assert requests.get(hub.url + "/hub/login", verify=str(hub.cert), timeout=30).status_code == 200
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(hub.url + "/hub/login", verify=certifi.where(), timeout=30)
    with pytest.raises(RuntimeError, match="login of alice failed"):
        login(hub, "alice", "wrong-password-123")
    assert set(students) == {"alice", "bob", "carol"}


def test_students_run_as_their_own_uids_apart_from_each_other_and_the_course(hub, students):
    (_, alice), (_, bob) = students["alice"], students["bob"]
    # alice holds the one GPU; bob asks for it too and is told at once, then starts on the CPU
    assert spawn(hub, alice, "alice", "gpu").status_code in (201, 202)
    t0 = time.monotonic()
    refused = spawn(hub, bob, "bob", "gpu")
    assert refused.status_code == 409 and "no GPU is free" in refused.json()["message"], refused.text
    assert time.monotonic() - t0 < 30  # at once, not after a start timeout
    assert spawn(hub, bob, "bob", "cpu").status_code in (201, 202)

    kernels = {name: Kernel(hub, token, name) for name, token in (("alice", alice), ("bob", bob))}
    try:
        ids = {n: k.run("import os; print(os.getuid(), os.environ['HOME'], repr(os.environ['CUDA_VISIBLE_DEVICES']))").split()
               for n, k in kernels.items()}
        uids = {n: int(v[0]) for n, v in ids.items()}
        assert uids["alice"] != uids["bob"] and all(UIDS[0] <= u <= UIDS[1] for u in uids.values()), uids
        for name in ("alice", "bob"):
            account = pwd.getpwnam(f"{hub.prefix}-{name}")
            assert account.pw_uid == uids[name] and ids[name][1] == account.pw_dir
            home = Path(account.pw_dir)
            assert (home.stat().st_mode & 0o777, home.stat().st_uid) == (0o700, account.pw_uid)
        assert ids["alice"][2] == repr(GPU) and ids["bob"][2] == "''"
        # device access: the GPU's device file reaches alice's GPU; in bob's server it is /dev/null
        read_device = f"print(repr(open({str(DEVICE)!r}).read()))"
        assert kernels["alice"].run(read_device).strip() == repr("gpu-0")
        assert kernels["bob"].run(read_device).strip() == repr("")
        assert DEVICE.read_text() == "gpu-0"  # the host's file is untouched

        probe = """
import os
for path in {paths!r}:
    try:
        open(path, 'rb').read(1) if os.path.isfile(path) else os.listdir(path)
        print('READ', path)
    except PermissionError:
        print('DENIED', path)
"""
        for me, other in (("alice", "bob"), ("bob", "alice")):
            paths = [pwd.getpwnam(f"{hub.prefix}-{other}").pw_dir, str(hub.course), str(hub.store),
                     str(hub.store / "secret"), str(hub.course / "gradebook.db"), str(hub.exchange / "interplab" / "inbound")]
            out = kernels[me].run(probe.format(paths=paths))
            assert out.split() == [w for p in paths for w in ("DENIED", p)], out
        # the released assignment is readable from the exchange's outbound folder
        assert "tiny.ipynb" in kernels["bob"].run(f"import os; print(os.listdir({str(hub.exchange / 'interplab' / 'outbound' / 'tiny')!r}))")

        # a memory hog in alice's server is stopped by its limit; bob's kernel keeps working
        hog = f"x = b'1' * {2 * SERVER_MEMORY}\nprint('survived', len(x))"
        assert kernels["alice"].run(hog, timeout=180) == "KERNEL DIED"
        assert kernels["bob"].run("print(6 * 7)").strip() == "42"
        assert "limits enforced: memory (cgroup v" in hub.log()
    finally:
        for k in kernels.values():
            k.close()

    # the GPU returns when alice's server stops: carol gets it
    stop_server(hub, alice, "alice")
    _, carol = students["carol"]
    assert spawn(hub, carol, "carol", "gpu").status_code in (201, 202)
    assert Kernel(hub, carol, "carol").run("import os; print(os.environ['CUDA_VISIBLE_DEVICES'])").strip() == GPU


def test_fetch_and_submit_as_own_unix_users_and_the_formgrader_is_not_root(hub, students):
    _, bob = students["bob"]
    spawn(hub, bob, "bob", "cpu")
    headers = {"Authorization": f"token {bob}"}
    for action in ("fetch", "submit"):
        r = requests.post(f"{hub.url}/user/bob/assignments/{action}", headers=headers,
                          data={"course_id": "interplab", "assignment_id": "tiny"}, timeout=120)
        assert r.status_code == 200 and r.json()["success"], r.text[:2000]
        if action == "fetch":  # nbgrader answers with the listing even when the fetch failed
            assert [a["status"] for a in r.json()["value"] if a["assignment_id"] == "tiny"] == ["fetched"], r.text[:2000]
    # approval enrolled bob in the course: the group nbgrader's Assignments panel reads
    model = requests.get(f"{hub.url}/hub/api/users/bob", headers=headers, timeout=30).json()
    assert model["groups"] == ["nbgrader-interplab"], model
    inbound = hub.exchange / "interplab" / "inbound"
    assert hub.exchange.stat().st_mode & 0o7777 == 0o1777  # nbgrader's documented root, sticky
    assert inbound.stat().st_mode & 0o777 == 0o733  # students may write, not list
    bob_uid = pwd.getpwnam(f"{hub.prefix}-bob").pw_uid
    assert [p.stat().st_uid for p in inbound.iterdir() if p.name.startswith("bob+")] == [bob_uid]
    instructors = pwd.getpwnam(f"{hub.prefix}-instructors")
    formgrader = [p for p in descendants(hub.proc.pid) if any(a.startswith("--ServerApp.root_dir") for a in p.cmdline())]
    assert formgrader and {p.uids().real for p in formgrader} == {instructors.pw_uid}
    assert hub.course.stat().st_uid == instructors.pw_uid and hub.course.stat().st_mode & 0o777 == 0o700
