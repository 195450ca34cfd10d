"""Every exception mpiml raises on purpose, in one place.

``collective=True`` marks an error that every rank raises alike (decided from
allreduced numbers, or agreed by :func:`mpiml.runtime.agree.raise_if_any`): the command
line then prints one ``mpiml: error:`` line and exits with status 2 on every rank instead
of aborting the job (:mod:`mpiml.runtime.abort`). Mark it where the error is made, never
by setting the attribute afterwards.
"""

from __future__ import annotations


class MpimlError(Exception):
    """Base class of every error mpiml raises on purpose.

    Parameters
    ----------
    message : str
    collective : bool
        Every rank raises this same error at the same point (no rank is left waiting).
    """

    def __init__(self, message: str = "", *, collective: bool = False):
        super().__init__(message)
        self.collective = bool(collective)


class ArgumentError(MpimlError, ValueError):
    """A call got an argument it cannot use (dtype, op, algorithm, shape, ...)."""


class MismatchError(MpimlError):
    """Ranks disagreed on something that must be the same everywhere."""


class DataError(MpimlError):
    """Input data is malformed; names the file and line where known."""

    def __init__(self, message: str, path: str | None = None, line: int | None = None, *,
                 collective: bool = False):
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(where + message, collective=collective)
        self.path = path
        self.line = line


class DivergenceError(MpimlError):
    """Training produced non-finite values."""


class CheckpointError(MpimlError):
    """A checkpoint could not be written or read back."""


class Preempted(MpimlError):
    """Raised on every rank after a requested stop was checkpointed (exit status 3)."""

    def __init__(self, message: str = "", *, collective: bool = True):
        super().__init__(message, collective=collective)


class SubmitError(MpimlError):
    """sbatch is missing or refused the job."""
