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
    AssignLatePenalties, CheckCellMetadata, ClearMarkScheme, IgnorePattern, LimitOutput, SaveAutoGrades,
)

from interplab.autograder.deadlines import CourseLatePenalty, policy_config
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
# The mark scheme of a written question (in its locked question cell) is restored from the
# gradebook into the autograded notebook, so the formgrader shows it beside the answer; feedback
# drops it again: students never see it.
c.GenerateFeedback.preprocessors = [NeutraliseStudentContent, ClearMarkScheme,
                                    *GenerateFeedback.class_traits()["preprocessors"].default()]
# Our mark schemes sit in locked question cells (role="locked"), not in nbgrader "task" cells: the
# student answers in the answer cell below (role="answer"), graded by hand.
c.ClearMarkScheme.enforce_metadata = False

# Late submissions: the due dates and extensions are in the gradebook (interplab build / grade /
# extend put them there from course.toml and extensions.json); the penalty follows [late_policy].
c.AssignLatePenalties.plugin_class = CourseLatePenalty
for key, value in policy_config(os.path.join(here, "course.toml")).items():
    setattr(c.CourseLatePenalty, key, value)

c.Execute.extra_arguments = ["--HistoryManager.hist_file=:memory:"]
# Grading kernels run sandboxed with course.toml's [grading] limits (validated here, read by
# GradingExecute and the kernel managers) and must never see the course directory.
c.SandboxedKernelManager.grading_settings = SandboxPolicy.from_course_toml(os.path.join(here, "course.toml")).as_settings()
c.SandboxedKernelManager.forbidden_paths = [here]
