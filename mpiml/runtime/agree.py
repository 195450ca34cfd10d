"""Collective decisions: every rank reaches the same verdict and raises the same error."""

from __future__ import annotations

from mpiml.errors import MpimlError
from mpiml.runtime.comm import private_comm


def raise_if_any(error: BaseException | None, comm=None) -> None:
    """Combine every rank's verdict; if any rank has an error, raise it on all ranks.

    Each rank passes the exception it would raise (or None). The error of the lowest
    failing rank is re-raised everywhere, as the same class where it is an
    :class:`MpimlError` (else as ``MpimlError``), with the failing rank named, and marked
    ``collective`` so callers know no rank is left waiting.
    """
    verdicts = private_comm(comm).allgather(
        None if error is None else (type(error), str(error))
    )
    for rank, verdict in enumerate(verdicts):
        if verdict is None:
            continue
        cls, message = verdict
        if not (isinstance(cls, type) and issubclass(cls, MpimlError)):
            cls, message = MpimlError, f"{cls.__name__}: {message}"
        if len(verdicts) > 1 and any(v != verdict for v in verdicts):  # naming a rank helps only then
            message = f"{message} (on rank {rank})"
        try:
            exc = cls(message, collective=True)
        except TypeError:  # a subclass with another constructor
            exc = MpimlError(message, collective=True)
        if error is not None and type(error) is cls:
            raise exc from error
        raise exc
