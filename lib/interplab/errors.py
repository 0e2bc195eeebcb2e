"""Errors shared across commands."""


class UserError(Exception):
    """An error the person running a command can act on; the CLI prints it as one line, exit code 2."""
