"""nbgrader's filesystem exchange on hubs where students do not have Unix users of their own.

nbgrader's exchange trusts Unix permissions: ``inbound/`` is write-only for students, each
submission is owned by its student. In containers (Kubernetes, Docker) every server runs as the
same user (jovyan), so those guarantees are gone. InterpLab mounts each student's *own* folder
``inbound/<hub user name>/`` over the exchange's ``inbound/`` in their server (a volume
``subPath`` on Kubernetes, a bind mount with Docker; the hub fills in the name it authenticated),
and the course's ``outbound/`` read-only. A student then sees and writes only their own
submissions, and the folder name, not the student-controlled file name, says who submitted.

``PerStudentInboxCollect`` is the instructor's side: it collects both layouts (nbgrader's flat
``inbound/<student>+<assignment>+<time>`` and ``inbound/<student>/<student>+...``) and refuses a
nested submission whose file name claims another student than its folder. Like nbgrader's, it
takes each student's newest submission, but only among acceptable ones: a submission whose folder
holds a link or anything else ``check_submission_tree`` refuses, or whose student id is not a plain
name, is refused with an error in the log (nbgrader's copy would follow a symbolic link, as root,
to any file on the host). The copy is made from a private snapshot taken without following links
and checked again, so swapping a file for a link during the collect gains nothing. Select it in the
formgrader's nbgrader config: ``c.ExchangeFactory.collect = "interplab.autograder.hub.exchange.PerStudentInboxCollect"``.
"""
from __future__ import annotations

import glob
import os
import shutil
import tempfile

from nbgrader.api import Gradebook, MissingEntry
from nbgrader.exchange.default.collect import ExchangeCollect, groupby
from nbgrader.utils import check_mode

from interplab.autograder.submissions import check_submission_tree, valid_student_id


class PerStudentInboxCollect(ExchangeCollect):
    """Collect from per-student inbox folders as well as from nbgrader's flat inbound folder."""

    def _records(self) -> list[dict]:
        student_id = self.coursedir.student_id or "*"
        assignment = self.coursedir.assignment_id
        records = []
        for path in glob.glob(os.path.join(self.inbound_path, f"{student_id}+{assignment}+*")):
            record = self._path_to_record(path)
            if self._acceptable(path, record["username"]):
                records.append(record)
        for path in glob.glob(os.path.join(self.inbound_path, "*", f"{student_id}+{assignment}+*")):
            inbox = os.path.dirname(path)
            folder = os.path.basename(inbox)
            record = self._path_to_record(path)
            if record["username"] != folder:
                self.log.warning("refusing %s: submitted as %r from the inbox of %r", path, record["username"], folder)
                continue
            if os.path.islink(inbox):
                self.log.error("refusing %s: the inbox %r is a symbolic link", path, folder)
                continue
            if self._acceptable(path, record["username"]):
                record["filename"] = os.path.join(folder, record["filename"])
                records.append(record)
        return records

    def _acceptable(self, path: str, student: str) -> bool:
        if not valid_student_id(student):
            self.log.error("refusing %s: %r is not a plain student id (letters, digits, _ . @ -)", path, student)
            return False
        problems = check_submission_tree(path)
        if problems:
            self.log.error("refusing %s from %r: %s", path, student, "; ".join(problems))
        return not problems

    def do_copy(self, src: str, dest: str, log=None) -> None:
        """nbgrader's copy, made from a private snapshot that copied links as links and was checked:
        a student who swaps a file for a link after ``_acceptable`` gets nothing collected."""
        with tempfile.TemporaryDirectory(prefix="interplab-collect-") as private:
            snapshot = os.path.join(private, "submission")
            shutil.copytree(src, snapshot, symlinks=True)
            problems = check_submission_tree(snapshot)
            if problems:
                self.log.error("refusing %s: it changed while being collected: %s", src, "; ".join(problems))
                return
            super().do_copy(snapshot, dest, log)

    def init_src(self):
        if self.coursedir.course_id == "":
            self.fail("No course id specified. Re-run with --course flag.")
        self.course_path = os.path.join(self.root, self.coursedir.course_id)
        self.inbound_path = os.path.join(self.course_path, "inbound")
        if not os.path.isdir(self.inbound_path):
            self.fail(f"Course not found: {self.inbound_path}")
        if not check_mode(self.inbound_path, read=True, execute=True):
            self.fail(f"You don't have read permissions for the directory: {self.inbound_path}")
        by_student = groupby(self._records(), lambda item: item["username"])

        with Gradebook(self.coursedir.db_url, self.coursedir.course_id) as gb:
            try:
                self.duedate = gb.find_assignment(self.coursedir.assignment_id).duedate
            except MissingEntry:
                self.duedate = None
        self.src_records = []
        for records in by_student.values():
            records = self._sort_by_timestamp(records)
            if self.duedate is not None and self.before_duedate:
                on_time = [r for r in records if r["timestamp"] <= self.duedate]
                records = on_time or records
            self.src_records.append(records[0])
