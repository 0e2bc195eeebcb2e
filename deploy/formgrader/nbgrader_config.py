"""Hub-side nbgrader config of the formgrader service (its working directory is the course root,
whose own nbgrader_config.py is loaded after this one and wins on any setting it makes)."""
import os

c = get_config()  # noqa: F821 (provided by traitlets when it loads this file)

c.CourseDirectory.course_id = os.environ.get("INTERPLAB_COURSE_ID", "interplab")
c.Exchange.root = os.environ.get("INTERPLAB_EXCHANGE", "/srv/nbgrader/exchange")
# Collects nbgrader's flat inbound/ and the per-student inbox folders that containers mount
# (autograder/hub/exchange.py), and refuses a submission filed under another student's name.
c.ExchangeFactory.collect = "interplab.autograder.hub.exchange.PerStudentInboxCollect"
