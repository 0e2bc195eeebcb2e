"""The submission-folder and student-id rules (autograder/submissions.py), on real files."""
from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from interplab.autograder.submissions import check_submission_tree, refusal, valid_student_id


def plain_submission(tmp_path: Path) -> Path:
    folder = tmp_path / "alice" / "mini"
    (folder / "data").mkdir(parents=True)
    (folder / "mini.ipynb").write_text("{}")
    (folder / "data" / "notes.txt").write_text("mine")
    return folder


@pytest.mark.parametrize("name", ["alice", "bob_2", "a.b-c", "jane@uni.edu", "X"])
def test_plain_student_ids_are_accepted(name):
    assert valid_student_id(name)


@pytest.mark.parametrize("name", ["", ".", "..", "../bob", "a/b", "a+b", ".hidden", "-rf", "a b", "<img src=x>",
                                  "x" * 65, "al..ice", "a\nb", "é", "a*", 'a"b', None])
def test_other_student_ids_are_refused(name):
    assert not valid_student_id(name)


def test_a_plain_submission_has_no_problems(tmp_path):
    folder = plain_submission(tmp_path)
    os.link(folder / "mini.ipynb", folder / "data" / "copy.ipynb")  # a hard link inside the folder is harmless
    assert check_submission_tree(folder) == []


def test_a_symlinked_notebook_is_refused(tmp_path):
    folder = plain_submission(tmp_path)
    source = tmp_path / "source.ipynb"
    source.write_text("{}")
    (folder / "mini.ipynb").unlink()
    (folder / "mini.ipynb").symlink_to(source)
    assert check_submission_tree(folder) == [f"mini.ipynb is a symbolic link (to {str(source)!r})"]


def test_links_anywhere_in_the_tree_are_refused(tmp_path):
    folder = plain_submission(tmp_path)
    (folder / "data" / "up").symlink_to("../..")  # a folder link, even a relative one
    (folder / "dangling").symlink_to("/nonexistent")
    outside = tmp_path / "secret.txt"
    outside.write_text("s")
    os.link(outside, folder / "data" / "hard.txt")
    problems = check_submission_tree(folder)
    assert problems == ["dangling is a symbolic link (to '/nonexistent')", "data/up is a symbolic link (to '../..')",
                        "data/hard.txt is a hard link to a file outside the submission"]


def test_the_folder_itself_as_a_link_or_a_file_is_refused(tmp_path):
    folder = plain_submission(tmp_path)
    link = tmp_path / "link"
    link.symlink_to(folder)
    assert check_submission_tree(link) == ["the submission folder is a symbolic link"]
    assert check_submission_tree(folder / "mini.ipynb") == ["the submission is not a folder"]
    assert check_submission_tree(tmp_path / "missing")[0].startswith("the submission folder cannot be read")


def test_sockets_and_pipes_are_refused(tmp_path):
    folder = plain_submission(tmp_path)
    os.mkfifo(folder / "pipe")
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(folder / "sock"))
    try:
        assert check_submission_tree(folder) == ["pipe is not a regular file", "sock is not a regular file"]
    finally:
        server.close()


def test_grading_refuses_unread_with_a_status(tmp_path):
    folder = plain_submission(tmp_path)
    assert refusal(folder, "alice") is None
    (folder / "sym.ipynb").symlink_to(tmp_path)
    assert refusal(folder, "alice").startswith("refused, not read: sym.ipynb is a symbolic link")
    assert "not a plain name" in refusal(folder, "../alice")
