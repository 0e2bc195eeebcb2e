"""Jupyter Server config of a student's server (the hub puts this folder on JUPYTER_CONFIG_PATH;
the single-user images copy it to /etc/jupyter). Students get the Assignments panel (fetch, submit,
validate) but not the instructor's extensions, which would act on their own home as a course."""
import os

from interplab.autograder.student_course import LABEXTENSIONS

c = get_config()  # noqa: F821 (provided by traitlets when it loads this file)

c.ServerApp.jpserver_extensions = {
    "nbgrader.server_extensions.formgrader": False,
    "nbgrader.server_extensions.course_list": False,
    # nbgrader's Assignment List in course order, and the course page written as COURSE.md, both
    # from what the hub passes (autograder/student_course.py)
    "nbgrader.server_extensions.assignment_list": False,
    "interplab.autograder.student_course": True,
    "nbgrader.server_extensions.validate_assignment": True,
}
# Nothing to gain from the announcements feed offline; keeps the first page load quiet.
c.LabApp.news_url = None
c.LabApp.check_for_updates_class = "jupyterlab.NeverCheckForUpdate"
# Markdown files open rendered (the course page, COURSE.md, is the first thing a student sees).
c.LabServerApp.app_settings_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lab-settings")
# Our JupyterLab extension (week and due date in the Assignment List), found in the installed
# package wherever it lives (a venv, an image's site-packages, an editable checkout).
c.LabServerApp.extra_labextensions_path = [str(LABEXTENSIONS)]
