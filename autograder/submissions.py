"""What a submission may be, in one place: the rule that collect (``hub_exchange.py``) and grade
(``grade.py``) both apply before reading anything a student handed in.

A student controls the names and the kind of every entry of their submission. A symlink, or a hard
link whose other name lies outside the submission, would make the grader read (and copy into the
student's feedback) a file the student cannot read, e.g. the instructor's source notebook; a
student id that is not a plain name would make paths built from it point elsewhere.
"""
from __future__ import annotations

import os
import re
import stat
from collections import Counter
from pathlib import Path

# Letters, digits and . _ @ - (e-mail style ids too), at most 64 characters, starting with a letter
# or digit (so never "." or ".."), and no ".." anywhere.
STUDENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")


def student_id_problem(student: str) -> str | None:
    """Why ``student`` is not a plain name, or None."""
    if not STUDENT_ID.fullmatch(student) or ".." in student:
        return f"student id {student!r} is not a plain name (letters, digits, . _ @ -; at most 64)"
    return None


def submission_problems(folder: Path) -> list[str]:
    """Why the submission in ``folder`` must not be read: each entry (the folder itself included)
    that is a symlink, a special file, a hard link whose other names are outside the folder, or
    that resolves outside the folder. Empty when the submission is safe to read."""
    problems: list[str] = []
    folder = Path(folder)
    try:
        top = folder.lstat()
    except OSError as exc:
        return [f"cannot read the submission folder ({exc.strerror})"]
    if stat.S_ISLNK(top.st_mode) or not stat.S_ISDIR(top.st_mode):
        return ["the submission folder is a link or not a folder"]
    real = folder.resolve()
    links: Counter[tuple[int, int]] = Counter()
    files: dict[tuple[int, int], tuple[str, int]] = {}
    for directory, dirnames, filenames in os.walk(folder, followlinks=False):
        for name in [*dirnames, *filenames]:
            path = Path(directory) / name
            rel = str(path.relative_to(folder))
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                problems.append(f"{rel} is a symbolic link")
            elif not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
                problems.append(f"{rel} is not a regular file")
            elif real not in path.resolve().parents:
                problems.append(f"{rel} resolves outside the submission")
            elif stat.S_ISREG(st.st_mode):
                links[(st.st_dev, st.st_ino)] += 1
                files[(st.st_dev, st.st_ino)] = (rel, st.st_nlink)
    for inode, (rel, nlink) in sorted(files.items(), key=lambda item: item[1][0]):
        if nlink > links[inode]:
            problems.append(f"{rel} is a hard link to a file outside the submission")
    return problems


def refusal(folder: Path, student: str) -> str | None:
    """The ``status`` of a submission that is refused unread, or None when it may be read."""
    problem = student_id_problem(student)
    if problem:
        return f"refused: {problem}"
    problems = submission_problems(folder)
    if problems:
        return "refused, not read: " + "; ".join(problems[:5]) + (f" (and {len(problems) - 5} more)" if len(problems) > 5 else "")
    return None
