"""InterpLab's JupyterHub, configured by environment variables (see deploy/README.md).

    INTERPLAB_SPAWNER   local (default; demo login on loopback only) | system | docker | kubernetes | slurm
    INTERPLAB_AUTH      demo (default, loopback only) | native | oauth | lti13
    INTERPLAB_HUB_IP / INTERPLAB_HUB_PORT            public address (127.0.0.1:8000)
    INTERPLAB_SSL_CERT / INTERPLAB_SSL_KEY           TLS certificate and key files (PEM) for a public hub;
                        INTERPLAB_TLS_TERMINATED=1 when a proxy in front terminates TLS instead
    INTERPLAB_HUB_API_PORT / INTERPLAB_PROXY_API_PORT / INTERPLAB_FORMGRADER_PORT  (8081/8001/8002)
    INTERPLAB_HUB_DATA  the hub's state: database, cookie secret, demo homes unless the hub is root (default .hub/)
    INTERPLAB_HUB_DB_URL  the hub's database (default SQLite in INTERPLAB_HUB_DATA; PostgreSQL:
                        postgresql+psycopg://user@host/db)
    INTERPLAB_COURSE    nbgrader course root (default course/); INTERPLAB_COURSE_ID (interplab)
    INTERPLAB_EXCHANGE  nbgrader exchange root (default <course>/exchange locally,
                        /srv/nbgrader/exchange in containers)
    INTERPLAB_INSTRUCTORS / INTERPLAB_ADMINS   comma-separated user names
    INTERPLAB_CULL_TIMEOUT  seconds of inactivity before a server is stopped (3600)
  local mode as root (`make hub` run by root): every demo server runs as one unprivileged account,
    INTERPLAB_DEMO_ACCOUNT (interplab-demo), created in INTERPLAB_UID_MIN/MAX with its home in
    INTERPLAB_HOME_ROOT (/home); each demo user's HOME is <that home>/<user name>, mode 0700
  system mode (one Unix user per student on this server; the hub runs as root):
    INTERPLAB_UNIX_NAME     Unix name of a hub user (ilab-{username}); INTERPLAB_UID_MIN/MAX (20000/29999)
    INTERPLAB_HOME_ROOT     students' homes (/home), mode 0700 each
    INTERPLAB_INSTRUCTOR_ACCOUNT  the Unix account owning the course and running the formgrader (ilab-instructors)
    INTERPLAB_SERVER_MEMORY / INTERPLAB_SERVER_CPUS  caps of every server (default: the profile's)
    INTERPLAB_GPUS          GPUs to lease where nvidia-smi is absent (comma-separated UUID or
                            UUID=/dev/nvidiaN: that device file is /dev/null for every other server)

Unsafe combinations (the shared-user local spawner with a real login, or as root without a usable
demo account; a demo login off loopback, a public login without TLS, system mode without root) stop the hub at start with one line that
says why and what to choose (``interplab.autograder.hub.spawners.refusal``).

Access model: everyone logged in may use their own server only. `nbgrader-<course>` is the
course's enrolment (the Assignments panel shows the course to its members);
`formgrade-<course>` are its instructors, the only ones who reach the formgrader service. Students
are no admins, so the admin APIs answer them 403.
"""
import os
import pwd
import sys
from pathlib import Path

from interplab.autograder.hub import profiles
from interplab.autograder.hub.login import DEMO_INSTRUCTOR, DEMO_STUDENTS, DemoAuthenticator, demo_accounts
from interplab.autograder.hub.spawners import (
    FORMGRADER_CONFIG,
    SINGLEUSER_CONFIG,
    AccountError,
    CourseLocalSpawner,
    SystemUserSpawner,
    default_exchange,
    demo_account,
    ensure_account,
    prepare_exchange,
    refusal,
    secure_course,
)
from interplab.autograder.landing import course_environment
from interplab.autograder.sandbox.policy import parse_size
from interplab.autograder.student_course import COURSE_ENV
from interplab.autograder.student_course import PAGE_NAME as COURSE_PAGE

c = get_config()  # noqa: F821 (provided by traitlets when it loads this file)

REPO = Path(__file__).resolve().parent
env = os.environ.get


def _names(var: str, default: str = "") -> list[str]:
    return [n.strip() for n in env(var, default).split(",") if n.strip()]


SPAWNER = env("INTERPLAB_SPAWNER", "local")
AUTH = env("INTERPLAB_AUTH", "demo")
HUB_IP = env("INTERPLAB_HUB_IP", "127.0.0.1")
HUB_PORT = int(env("INTERPLAB_HUB_PORT", "8000"))
HUB_API_PORT = int(env("INTERPLAB_HUB_API_PORT", "8081"))
PROXY_API_PORT = int(env("INTERPLAB_PROXY_API_PORT", "8001"))
FORMGRADER_PORT = int(env("INTERPLAB_FORMGRADER_PORT", "8002"))
DATA = Path(env("INTERPLAB_HUB_DATA", str(REPO / ".hub"))).resolve()
COURSE = Path(env("INTERPLAB_COURSE", str(REPO / "course"))).resolve()
COURSE_ID = env("INTERPLAB_COURSE_ID", "interplab")
EXCHANGE = env("INTERPLAB_EXCHANGE", str(default_exchange(SPAWNER, COURSE)))
SSL_CERT, SSL_KEY = env("INTERPLAB_SSL_CERT", ""), env("INTERPLAB_SSL_KEY", "")
UID_MIN, UID_MAX = int(env("INTERPLAB_UID_MIN", "20000")), int(env("INTERPLAB_UID_MAX", "29999"))
HOME_ROOT = Path(env("INTERPLAB_HOME_ROOT", "/home"))
TLS = bool(SSL_CERT) or env("INTERPLAB_TLS_TERMINATED") == "1"
FORMGRADER = f"formgrader-{COURSE_ID}"
FORMGRADE_GROUP = f"formgrade-{COURSE_ID}"
STUDENT_GROUP = f"nbgrader-{COURSE_ID}"

why_not = refusal(SPAWNER, AUTH, HUB_IP, os.geteuid(), TLS, UID_MIN, UID_MAX)
if why_not:
    sys.exit(why_not)
if bool(SSL_CERT) != bool(SSL_KEY) or not all(os.access(f, os.R_OK) for f in (SSL_CERT, SSL_KEY) if f):
    sys.exit(f"TLS needs both INTERPLAB_SSL_CERT and INTERPLAB_SSL_KEY as readable PEM files (got {SSL_CERT!r}, {SSL_KEY!r})")

DATA.mkdir(parents=True, exist_ok=True)
os.chmod(DATA, 0o700)

# --- local mode as root: the demo's servers run as an unprivileged account, never as root --------
DEMO_ACCOUNT = None
if SPAWNER == "local" and os.geteuid() == 0:
    # the exchange as nbgrader documents it, the hub's (root's): demo servers fetch from outbound,
    # submit into the write-only inbound and read feedback by its hash
    prepare_exchange(Path(EXCHANGE), COURSE_ID, pwd.getpwuid(0))
    try:
        DEMO_ACCOUNT = demo_account(env("INTERPLAB_DEMO_ACCOUNT", "interplab-demo"), UID_MIN, UID_MAX,
                                    HOME_ROOT, [Path(EXCHANGE) / COURSE_ID, SINGLEUSER_CONFIG])
    except AccountError as exc:
        sys.exit(refusal(SPAWNER, AUTH, HUB_IP, 0, TLS, UID_MIN, UID_MAX, demo_account_error=str(exc)))

# --- the hub, its proxy and its state ------------------------------------------------------------
c.JupyterHub.bind_url = f"{'https' if SSL_CERT else 'http'}://{HUB_IP}:{HUB_PORT}"
if SSL_CERT:  # the proxy serves the public port with this certificate; the hub's own API stays on loopback
    c.JupyterHub.ssl_cert = SSL_CERT
    c.JupyterHub.ssl_key = SSL_KEY
c.JupyterHub.hub_bind_url = f"http://127.0.0.1:{HUB_API_PORT}"
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{PROXY_API_PORT}"
# PostgreSQL for a real class: INTERPLAB_HUB_DB_URL=postgresql+psycopg://user@host/db (deploy/README.md)
c.JupyterHub.db_url = env("INTERPLAB_HUB_DB_URL", "sqlite:///" + str(DATA / "jupyterhub.sqlite"))
c.JupyterHub.cookie_secret_file = str(DATA / "jupyterhub_cookie_secret")
c.ConfigurableHTTPProxy.pid_file = str(DATA / "jupyterhub-proxy.pid")
c.JupyterHub.cleanup_servers = True  # Ctrl-C stops every student's server with the hub
if SPAWNER in ("local", "system", "docker", "slurm"):
    from interplab.autograder.hub.proxy import ensure_proxy

    c.ConfigurableHTTPProxy.command = [str(ensure_proxy(quiet=True))]

# --- who may log in ------------------------------------------------------------------------------
instructors = _names("INTERPLAB_INSTRUCTORS")
students: list[str] = []
if AUTH == "demo":
    students = _names("INTERPLAB_DEMO_STUDENTS") or list(DEMO_STUDENTS)
    instructors = instructors or [DEMO_INSTRUCTOR]
    accounts = demo_accounts(DATA, tuple(students))
    c.JupyterHub.authenticator_class = DemoAuthenticator
    c.DemoAuthenticator.accounts = accounts
    c.DemoAuthenticator.bind_host = HUB_IP
    c.Authenticator.allowed_users = set(accounts)
elif AUTH == "native":
    # NativeAuthenticator: self sign-up, an admin approves each account (or INTERPLAB_OPEN_SIGNUP=1).
    c.JupyterHub.authenticator_class = "interplab.autograder.hub.login.CourseNativeAuthenticator"
    c.NativeAuthenticator.open_signup = env("INTERPLAB_OPEN_SIGNUP", "0") == "1"
    c.NativeAuthenticator.minimum_password_length = 10
    c.NativeAuthenticator.check_common_password = True
    c.CourseNativeAuthenticator.course_id = COURSE_ID
    c.CourseNativeAuthenticator.instructors = instructors
    c.Authenticator.manage_groups = True  # approved users enrol at login (hub.login.CourseNativeAuthenticator)
    c.Authenticator.allow_all = True
elif AUTH == "oauth":
    # The university's identity provider over OpenID Connect (Keycloak, Shibboleth's OIDC, Entra ID, ...).
    c.JupyterHub.authenticator_class = "oauthenticator.generic.GenericOAuthenticator"
    c.GenericOAuthenticator.client_id = env("INTERPLAB_OAUTH_CLIENT_ID", "")
    c.GenericOAuthenticator.client_secret = env("INTERPLAB_OAUTH_CLIENT_SECRET", "")
    c.GenericOAuthenticator.oauth_callback_url = env("INTERPLAB_OAUTH_CALLBACK_URL", "")
    c.GenericOAuthenticator.authorize_url = env("INTERPLAB_OAUTH_AUTHORIZE_URL", "")
    c.GenericOAuthenticator.token_url = env("INTERPLAB_OAUTH_TOKEN_URL", "")
    c.GenericOAuthenticator.userdata_url = env("INTERPLAB_OAUTH_USERDATA_URL", "")
    c.GenericOAuthenticator.scope = ["openid", "profile", "email", "groups"]
    c.GenericOAuthenticator.username_claim = env("INTERPLAB_OAUTH_USERNAME_CLAIM", "preferred_username")
    c.GenericOAuthenticator.manage_groups = True
    c.GenericOAuthenticator.auth_state_groups_key = "oauth_user.groups"
    c.GenericOAuthenticator.allowed_groups = set(_names("INTERPLAB_OAUTH_ALLOWED_GROUPS", STUDENT_GROUP + "," + FORMGRADE_GROUP))
    c.GenericOAuthenticator.admin_groups = set(_names("INTERPLAB_OAUTH_ADMIN_GROUPS"))
elif AUTH == "lti13":
    # An LTI 1.3 launch from the LMS; instructors by their LIS role (hub.login.CourseLTI13Authenticator).
    c.JupyterHub.authenticator_class = "interplab.autograder.hub.login.CourseLTI13Authenticator"
    c.CourseLTI13Authenticator.course_id = COURSE_ID
    c.LTI13Authenticator.issuer = env("INTERPLAB_LTI_ISSUER", "")
    c.LTI13Authenticator.client_id = _names("INTERPLAB_LTI_CLIENT_ID")
    c.LTI13Authenticator.authorize_url = env("INTERPLAB_LTI_AUTHORIZE_URL", "")
    c.LTI13Authenticator.jwks_endpoint = env("INTERPLAB_LTI_JWKS_URL", "")
    c.LTI13Authenticator.username_key = env("INTERPLAB_LTI_USERNAME_KEY", "email")
    c.Authenticator.manage_groups = True
    c.Authenticator.allow_all = True

c.Authenticator.admin_users = set(_names("INTERPLAB_ADMINS"))
# Groups from the environment (demo); native, OAuth and LTI manage them at each login.
if AUTH == "demo":
    c.JupyterHub.load_groups = {
        FORMGRADE_GROUP: {"users": instructors},
        STUDENT_GROUP: {"users": sorted(set(students) | set(instructors))},
    }

# --- roles: nobody gets more than their own server, except as listed here -----------------------
c.JupyterHub.load_roles = [
    {
        # instructors: the formgrader, and a read-only view of the course's students and servers
        "name": f"instructor-{COURSE_ID}",
        "groups": [FORMGRADE_GROUP],
        "scopes": [
            f"access:services!service={FORMGRADER}",
            f"read:users!group={STUDENT_GROUP}",
            f"read:servers!group={STUDENT_GROUP}",
            f"list:users!group={STUDENT_GROUP}",
        ],
    },
    {
        "name": "idle-culler",
        "services": ["idle-culler"],
        "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"],
    },
    {
        "name": FORMGRADER,
        "services": [FORMGRADER],
        # read-only: the formgrader lists the course's members; it never changes hub groups
        "scopes": [f"read:users!group={STUDENT_GROUP}", f"list:users!group={STUDENT_GROUP}", f"read:groups!group={STUDENT_GROUP}"],
    },
]

# --- system mode: the instructors' account owns the course and the exchange ---------------------
formgrader_account = None
if SPAWNER == "system":
    name = env("INTERPLAB_INSTRUCTOR_ACCOUNT", "ilab-instructors")
    formgrader_account = ensure_account(name, UID_MIN, UID_MAX, HOME_ROOT / name, "interplab instructors")
    secure_course(COURSE, formgrader_account)
    prepare_exchange(Path(EXCHANGE), COURSE_ID, formgrader_account)

# --- services: the formgrader (instructors only) and the idle culler ----------------------------
c.JupyterHub.services = [
    {
        "name": FORMGRADER,
        "url": f"http://127.0.0.1:{FORMGRADER_PORT}",
        "display": True,
        "oauth_no_confirm": True,
        # JupyterHub >= 6 exits when a managed service is not up within its timeout (30 s by
        # default); a loaded 2-core machine takes longer to start a Jupyter server
        "timeout": 300,
        "cwd": str(COURSE),
        # in system mode as the instructors' account, never as root
        **({"user": formgrader_account.pw_name} if formgrader_account else {}),
        "command": [sys.executable, "-m", "jupyterhub.singleuser"]
        + (["--allow-root"] if os.geteuid() == 0 and not formgrader_account else [])
        + [f"--ServerApp.root_dir={COURSE}"],
        "environment": {
            "JUPYTER_CONFIG_PATH": str(FORMGRADER_CONFIG),
            "INTERPLAB_EXCHANGE": EXCHANGE,
            "INTERPLAB_COURSE_ID": COURSE_ID,
            "INTERPLAB_COURSE": str(COURSE),
            "PATH": os.pathsep.join([os.path.dirname(sys.executable), env("PATH", "")]),
            "HF_HUB_OFFLINE": "1",
        },
    },
    {
        "name": "idle-culler",
        "command": [
            sys.executable, "-m", "jupyterhub_idle_culler",
            f"--timeout={int(env('INTERPLAB_CULL_TIMEOUT', '3600'))}",
            "--cull-every=300",
        ],
    },
]

# --- single-user servers -------------------------------------------------------------------------
c.Spawner.default_url = f"/lab/tree/{COURSE_PAGE}"  # the course page (COURSE_ENV below)
# A server's own token: JupyterHub's defaults plus the user's groups, which nbgrader's
# JupyterHubAuthPlugin reads to list the student's courses.
c.Spawner.server_token_scopes = [
    "users:activity!user", "access:servers!server", "read:users:name!user", "read:users:groups!user",
]
# generous: a classroom logging in at once on a small machine (benchmarks/hub_load.py) queues the
# servers' start-up for minutes
c.Spawner.start_timeout = 300
c.Spawner.http_timeout = 240
c.Spawner.environment = {
    "INTERPLAB_COURSE_ID": COURSE_ID,
    "INTERPLAB_EXCHANGE": EXCHANGE,
    "HF_HUB_OFFLINE": "1",
}
# The exchange path of the course inside a server, and the per-student inbox that backs it in
# containers (deploy/README.md, "The exchange on Kubernetes").
EXCHANGE_OUTBOUND = f"{EXCHANGE}/{COURSE_ID}/outbound"
EXCHANGE_INBOUND = f"{EXCHANGE}/{COURSE_ID}/inbound"
EXCHANGE_FEEDBACK = f"{EXCHANGE}/{COURSE_ID}/feedback"

# The student's course page and due dates, made at each start (autograder/landing.py) and passed
# in the environment, which every spawner below forwards; the server writes the page into its
# root directory and JupyterLab opens on it (default_url; autograder/student_course.py)
c.Spawner.environment[COURSE_ENV] = course_environment(COURSE, Path(EXCHANGE))

if SPAWNER == "local":
    c.JupyterHub.spawner_class = CourseLocalSpawner
    if DEMO_ACCOUNT:
        c.CourseLocalSpawner.demo_account = DEMO_ACCOUNT.pw_name
        c.CourseLocalSpawner.home_dir_template = os.path.join(DEMO_ACCOUNT.pw_dir, "{username}")
    else:
        c.CourseLocalSpawner.home_dir_template = str(DATA / "home" / "{username}")
    c.Spawner.cmd = [sys.executable, "-m", "jupyterhub.singleuser"]
    c.Spawner.environment["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env("PATH", "")])
    c.Spawner.mem_limit = None
elif SPAWNER == "system":
    c.JupyterHub.spawner_class = SystemUserSpawner
    c.SystemUserSpawner.unix_name_template = env("INTERPLAB_UNIX_NAME", "ilab-{username}")
    c.SystemUserSpawner.uid_min, c.SystemUserSpawner.uid_max = UID_MIN, UID_MAX
    c.SystemUserSpawner.home_root = str(HOME_ROOT)
    c.SystemUserSpawner.configured_gpus = _names("INTERPLAB_GPUS")
    c.Spawner.cmd = [sys.executable, "-m", "jupyterhub.singleuser"]
    c.Spawner.environment["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), "/usr/local/bin:/usr/bin:/bin"])
    try:
        c.Spawner.mem_limit = parse_size(env("INTERPLAB_SERVER_MEMORY")) if env("INTERPLAB_SERVER_MEMORY") else None
    except ValueError as exc:
        sys.exit(f"INTERPLAB_SERVER_MEMORY: {exc}")
    c.Spawner.cpu_limit = float(env("INTERPLAB_SERVER_CPUS", "0")) or None
elif SPAWNER == "kubernetes":
    c.JupyterHub.spawner_class = "kubespawner.KubeSpawner"
    c.JupyterHub.hub_connect_url = env("INTERPLAB_HUB_CONNECT_URL", f"http://hub:{HUB_API_PORT}")
    c.KubeSpawner.namespace = env("INTERPLAB_K8S_NAMESPACE", "interplab")
    c.KubeSpawner.profile_list = profiles.kubespawner_profile_list(
        cpu_image=env("INTERPLAB_IMAGE", profiles.CPU_IMAGE), gpu_image=env("INTERPLAB_GPU_IMAGE", profiles.GPU_IMAGE)
    )
    c.KubeSpawner.storage_pvc_ensure = True
    c.KubeSpawner.pvc_name_template = "claim-{username}"
    c.KubeSpawner.storage_capacity = env("INTERPLAB_HOME_SIZE", "5Gi")
    c.KubeSpawner.storage_access_modes = ["ReadWriteOnce"]
    exchange_claim = env("INTERPLAB_EXCHANGE_CLAIM", "interplab-exchange")
    c.KubeSpawner.volumes = [
        {"name": "home", "persistentVolumeClaim": {"claimName": "claim-{username}"}},
        {"name": "exchange", "persistentVolumeClaim": {"claimName": exchange_claim}},
    ]
    c.KubeSpawner.volume_mounts = [
        {"name": "home", "mountPath": "/home/jovyan"},
        {"name": "exchange", "mountPath": EXCHANGE_OUTBOUND, "subPath": f"{COURSE_ID}/outbound", "readOnly": True},
        {"name": "exchange", "mountPath": EXCHANGE_INBOUND, "subPath": f"{COURSE_ID}/inbound/{{username}}"},
        {"name": "exchange", "mountPath": EXCHANGE_FEEDBACK, "subPath": f"{COURSE_ID}/feedback", "readOnly": True},
    ]
    c.KubeSpawner.uid = 1000
    c.KubeSpawner.fs_gid = 100
elif SPAWNER == "docker":
    from dockerspawner import DockerSpawner
    from wrapspawner import ProfilesSpawner

    c.JupyterHub.spawner_class = ProfilesSpawner
    c.JupyterHub.hub_connect_url = env("INTERPLAB_HUB_CONNECT_URL", f"http://host.docker.internal:{HUB_API_PORT}")
    c.JupyterHub.hub_bind_url = f"http://0.0.0.0:{HUB_API_PORT}"
    host_exchange = env("INTERPLAB_HOST_EXCHANGE", str(DATA / "exchange"))
    c.DockerSpawner.volumes = {
        "interplab-home-{username}": "/home/jovyan",
        f"{host_exchange}/{COURSE_ID}/outbound": {"bind": EXCHANGE_OUTBOUND, "mode": "ro"},
        f"{host_exchange}/{COURSE_ID}/inbound/{{username}}": {"bind": EXCHANGE_INBOUND, "mode": "rw"},
        f"{host_exchange}/{COURSE_ID}/feedback": {"bind": EXCHANGE_FEEDBACK, "mode": "ro"},
    }
    c.DockerSpawner.remove = True
    c.DockerSpawner.network_name = env("INTERPLAB_DOCKER_NETWORK", "bridge")
    c.DockerSpawner.extra_host_config = {"extra_hosts": {"host.docker.internal": "host-gateway"}}
    images = dict(cpu_image=env("INTERPLAB_IMAGE", profiles.CPU_IMAGE), gpu_image=env("INTERPLAB_GPU_IMAGE", profiles.GPU_IMAGE))
    per_profile = {}
    for p in profiles.PROFILES:
        settings = profiles.docker_settings(p, **images)
        # the profile's host config adds the GPU request to the hub-wide one (host.docker.internal)
        settings["extra_host_config"] = {"extra_hosts": {"host.docker.internal": "host-gateway"}, **settings.get("extra_host_config", {})}
        per_profile[p.slug] = settings
    c.ProfilesSpawner.profiles = profiles.wrapped_profiles(DockerSpawner, per_profile)
elif SPAWNER == "slurm":
    from batchspawner import SlurmSpawner
    from wrapspawner import ProfilesSpawner

    c.JupyterHub.spawner_class = ProfilesSpawner
    # Compute nodes reach the hub over the cluster network.
    c.JupyterHub.hub_bind_url = f"http://0.0.0.0:{HUB_API_PORT}"
    c.JupyterHub.hub_connect_url = env("INTERPLAB_HUB_CONNECT_URL", f"http://{os.uname().nodename}:{HUB_API_PORT}")
    # The cluster's nodes share the file system with the hub, and so this checkout and its venv:
    # absolute paths, because the job's PATH is sudo's secure_path, not the hub's.
    venv_bin = Path(sys.executable).parent
    c.Spawner.cmd = [str(venv_bin / "jupyterhub-singleuser")]
    c.SlurmSpawner.batchspawner_singleuser_cmd = str(venv_bin / "batchspawner-singleuser")
    c.Spawner.environment["JUPYTER_CONFIG_PATH"] = str(SINGLEUSER_CONFIG)
    # sbatch/squeue/scancel run with the spawner's environment only: a site whose slurm.conf is
    # not in /etc/slurm points the hub at it with SLURM_CONF, and they must see it too
    if env("SLURM_CONF"):
        c.Spawner.environment["SLURM_CONF"] = env("SLURM_CONF")
    c.SlurmSpawner.req_srun = ""
    c.SlurmSpawner.req_prologue = "source /etc/profile.d/interplab.sh 2>/dev/null || true"
    per_profile = {
        p.slug: {
            **profiles.slurm_settings(p, env("INTERPLAB_SLURM_PARTITION", ""), env("INTERPLAB_SLURM_GPU_PARTITION", "")),
            # on the compute node, reachable from the hub (ProfilesSpawner would pass on its loopback default)
            "ip": "0.0.0.0",
        }
        for p in profiles.PROFILES
    }
    c.ProfilesSpawner.profiles = profiles.wrapped_profiles(SlurmSpawner, per_profile)
    # A server started without a menu choice (the REST API) gets the default profile, as a SLURM job:
    # wrapspawner's own fallback is a LocalProcessSpawner on the hub, as the hub's user (root).
    default = next(p for p in profiles.PROFILES if p.default)
    c.ProfilesSpawner.child_class = SlurmSpawner
    c.ProfilesSpawner.child_config = per_profile[default.slug]
    c.Spawner.start_timeout = 600  # a queued job may wait for a node
