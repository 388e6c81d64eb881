"""The one error type a user ever sees.

A `UserError` is bad input or a bad request: the CLI prints its message as a single line to stderr and exits
with status 2, no traceback. Its message names the file or field at fault and what to do about it.
Everything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input, reported as one line (`lego: error: ...`) and exit code 2."""

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))  # always one line
