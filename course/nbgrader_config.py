"""nbgrader configuration of the InterpLab course (loaded by every nbgrader command run here).

Autograding goes through InterpLab's steps in nbgrader's own pipeline: ReplayExecution reuses an
execution `interplab grade` already made, else the kernel runs in grading mode (it only emits raw
outputs), and VerifyChecks judges them against the student's hidden references in the grader's
process. So stock `nbgrader autograde`, the formgrader's button and `interplab grade`
all give the same tamper-proof grades."""
import os

from nbconvert.preprocessors import ClearMetadataPreprocessor
from nbgrader.converters import GenerateFeedback
from nbgrader.preprocessors import (
    AssignLatePenalties, CheckCellMetadata, IgnorePattern, LimitOutput, SaveAutoGrades,
)

from interplab.autograder.pages import (
    FEEDBACK_TEMPLATE, FEEDBACK_TEMPLATE_DIRS, FEEDBACK_TEMPLATE_PATHS, NeutraliseStudentContent,
)
from interplab.autograder.sandbox import SandboxPolicy
from interplab.autograder.steps import GradingExecute, ReplayExecution, VerifyChecks

c = get_config()  # noqa: F821 (provided by traitlets when it loads this file)
here = os.path.dirname(os.path.abspath(__file__))

c.CourseDirectory.root = here
c.CourseDirectory.course_id = "interplab"
c.CourseDirectory.db_url = "sqlite:///" + os.path.join(here, "gradebook.db")
# Never copy generated or private files into a release.
c.CourseDirectory.ignore = [".ipynb_checkpoints", "*.pyc", "__pycache__", "feedback", ".interplab"]

# The exchange `make hub` uses (release, fetch, submit, collect); nbgrader run by hand here shares it.
c.Exchange.root = os.environ.get("INTERPLAB_EXCHANGE", os.path.join(here, "exchange"))
# Collect from per-student inboxes too (containers: one Unix user for everybody), refusing a
# submission whose name claims another student than its inbox (autograder/hub/exchange.py).
c.ExchangeFactory.collect = "interplab.autograder.hub.exchange.PerStudentInboxCollect"

c.Autograde.autograde_preprocessors = [
    ReplayExecution,
    GradingExecute,
    VerifyChecks,
    NeutraliseStudentContent,  # nothing the student wrote runs as script where the notebook is shown
    IgnorePattern,
    ClearMetadataPreprocessor,
    LimitOutput,
    SaveAutoGrades,
    AssignLatePenalties,
    CheckCellMetadata,
]
# Feedback: our template (a Content-Security-Policy that lets no script run, a table of the
# exercises), for feedback only (the formgrader keeps its own); the notebook neutralised again first.
c.GenerateFeedback.HTMLExporter.template_name = FEEDBACK_TEMPLATE
c.GenerateFeedback.HTMLExporter.extra_template_basedirs = FEEDBACK_TEMPLATE_DIRS
c.GenerateFeedback.HTMLExporter.extra_template_paths = FEEDBACK_TEMPLATE_PATHS
c.GenerateFeedback.preprocessors = [NeutraliseStudentContent, *GenerateFeedback.class_traits()["preprocessors"].default()]

c.Execute.extra_arguments = ["--HistoryManager.hist_file=:memory:"]
# Grading kernels run sandboxed with course.toml's [grading] limits (validated here, read by
# GradingExecute and the kernel managers) and must never see the course directory.
c.SandboxedKernelManager.grading_settings = SandboxPolicy.from_course_toml(os.path.join(here, "course.toml")).as_settings()
c.SandboxedKernelManager.forbidden_paths = [here]
