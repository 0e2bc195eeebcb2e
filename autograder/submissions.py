"""What a submission folder and a student id may be: the one place for both rules.

A submission is copied by the instructor's tools (nbgrader's collect, run as root on a hub) and
read by the grader, so anything in it that points elsewhere would make them copy or read a file the
student cannot: a symbolic link to the instructor's source notebook scores full marks and puts the
solution into the student's feedback. A submission folder is therefore refused when anything in it
is not a plain file or folder of its own: a symbolic link (anywhere, the folder itself included), a
hard link to a file outside the folder, a mount point, a device, socket or pipe.

Student ids become folder names, exchange file names (``<student>+<assignment>+<time>``) and text on
the formgrader's pages, so only plain names are accepted.
"""
from __future__ import annotations

import os
import re
import stat
from collections import Counter
from pathlib import Path

# Letters, digits and ``_ . @ -`` (e-mail-like hub names), not starting with a dot or a dash: no
# path separator, no ``+`` (the exchange's field separator), no markup, no shell or glob characters.
_STUDENT_ID = re.compile(r"[A-Za-z0-9_@][A-Za-z0-9_.@-]{0,63}")


def valid_student_id(name: str) -> bool:
    """True for a plain name usable as a folder name, an exchange file name and page text."""
    return isinstance(name, str) and _STUDENT_ID.fullmatch(name) is not None and ".." not in name


def check_submission_tree(folder: str | os.PathLike[str]) -> list[str]:
    """Why ``folder`` cannot be accepted as a submission (paths relative to it), or ``[]``.

    Nothing is followed: links are reported, never read through."""
    folder = Path(folder)
    try:
        top = folder.lstat()
    except OSError as exc:
        return [f"the submission folder cannot be read ({exc.strerror})"]
    if stat.S_ISLNK(top.st_mode):
        return ["the submission folder is a symbolic link"]
    if not stat.S_ISDIR(top.st_mode):
        return ["the submission is not a folder"]
    problems: list[str] = []
    links: Counter[tuple[int, int]] = Counter()  # (device, inode) of files seen, to count hard links
    files: dict[tuple[int, int], tuple[str, int]] = {}

    def walk(directory: Path) -> None:
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as exc:
            problems.append(f"{_rel(directory, folder)}: cannot be read ({exc.strerror})")
            return
        for entry in entries:
            path = Path(entry.path)
            info = entry.stat(follow_symlinks=False)
            if stat.S_ISLNK(info.st_mode):
                problems.append(f"{_rel(path, folder)} is a symbolic link (to {os.readlink(path)!r})")
            elif stat.S_ISDIR(info.st_mode) and info.st_dev != top.st_dev:
                problems.append(f"{_rel(path, folder)} is another file system mounted into the submission")
            elif stat.S_ISDIR(info.st_mode):
                walk(path)
            elif not stat.S_ISREG(info.st_mode):
                problems.append(f"{_rel(path, folder)} is not a regular file")
            else:
                key = (info.st_dev, info.st_ino)
                links[key] += 1
                files.setdefault(key, (_rel(path, folder), info.st_nlink))

    walk(folder)
    for key, (name, nlink) in files.items():
        if nlink > links[key]:
            problems.append(f"{name} is a hard link to a file outside the submission")
    return problems


def _rel(path: Path, folder: Path) -> str:
    return str(path.relative_to(folder)) if path != folder else "."


def refusal(folder: Path, student: str) -> str | None:
    """The grade ``status`` of a submission that is refused unread, or None when it may be read."""
    if not valid_student_id(student):
        return f"refused: student id {student!r} is not a plain name (letters, digits, _ . @ -; at most 64)"
    problems = check_submission_tree(folder)
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        return "refused, not read: " + "; ".join(problems[:5]) + more
    return None
