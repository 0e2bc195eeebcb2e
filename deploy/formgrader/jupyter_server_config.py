"""Jupyter Server config of the formgrader service: the instructors' grading server, run by the hub.

Since JupyterHub 4.1 every server behind the hub sends `Content-Security-Policy: frame-ancestors
'none'`, so nbgrader's JupyterLab formgrader tab (an iframe) stays blank (nbgrader #1870, #1947).
Relaxing that header would let any student's server frame the instructors' pages on the same
origin, so we keep it and send instructors to the formgrader as a top-level page instead:
the service's default URL is /formgrader, the hub's Services menu links to it."""
c = get_config()  # noqa: F821 (provided by traitlets when it loads this file)

c.ServerApp.jpserver_extensions = {
    "nbgrader.server_extensions.formgrader": True,
    "nbgrader.server_extensions.assignment_list": False,
    "nbgrader.server_extensions.course_list": False,
    "nbgrader.server_extensions.validate_assignment": True,
    # a Content-Security-Policy on every response; files from the course (submissions) only as downloads
    "interplab.autograder.formgrader_csp": True,
}
c.ServerApp.default_url = "/formgrader"
c.LabApp.news_url = None
c.LabApp.check_for_updates_class = "jupyterlab.NeverCheckForUpdate"
