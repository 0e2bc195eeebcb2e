"""nbgrader config of a student's server: which course, where the exchange is, who the student is.

nbgrader's exchange names a submission after the process's Unix user unless told otherwise; on a
hub whose servers share one Unix user (the local demo, or Kubernetes pods all running as jovyan)
that would mix students up. JUPYTERHUB_USER is the name the hub authenticated, so it is the
student id. The hub's groups say which courses a student may see (nbgrader's JupyterHubAuthPlugin
reads `nbgrader-<course>` / `formgrade-<course>`)."""
import os

c = get_config()  # noqa: F821 (provided by traitlets when it loads this file)

c.CourseDirectory.course_id = os.environ.get("INTERPLAB_COURSE_ID", "interplab")
c.Exchange.root = os.environ.get("INTERPLAB_EXCHANGE", "/srv/nbgrader/exchange")
if os.environ.get("JUPYTERHUB_USER"):
    c.CourseDirectory.student_id = os.environ["JUPYTERHUB_USER"]
    c.Authenticator.plugin_class = "nbgrader.auth.JupyterHubAuthPlugin"
