"""The small exception hierarchy every mpiml layer raises.

An error that was decided collectively (every rank raised the same one, see
:func:`mpiml.runtime.agree.raise_if_any`) carries ``collective = True``; the CLI
then exits cleanly on every rank instead of aborting the job.
"""

from __future__ import annotations


class MpimlError(Exception):
    """Base class of every error mpiml raises on purpose."""

    collective = False


class ArgumentError(MpimlError, ValueError):
    """A call got an argument it cannot use (dtype, op, algorithm, shape, ...)."""


class MismatchError(MpimlError):
    """Ranks disagreed on something that must be the same everywhere."""


class DataError(MpimlError):
    """Input data is malformed; names the file and line where known."""

    def __init__(self, message: str, path: str | None = None, line: int | None = None):
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(where + message)
        self.path = path
        self.line = line


class DivergenceError(MpimlError):
    """Training produced non-finite values."""


class CheckpointError(MpimlError):
    """A checkpoint could not be written or read back."""
