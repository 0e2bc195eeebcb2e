"""Errors shared across commands."""


class UserError(Exception):
    """An error the person running a command can act on; the CLI prints it as one line, exit code 2.
    Every error a person (not a bug) causes is a subclass: ``CourseError`` (course directory,
    course.toml, a build or a grade that cannot go on), ``MasterFormatError`` (a master's cells)."""
