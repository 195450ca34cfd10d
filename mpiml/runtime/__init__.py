"""Runtime services: communicators, errors, collective verdicts, abort-on-exception."""

from mpiml.runtime.comm import context_of, private_comm, resolve_comm
from mpiml.errors import (
    ArgumentError,
    CheckpointError,
    DataError,
    DivergenceError,
    MismatchError,
    MpimlError,
)

__all__ = [
    "ArgumentError",
    "CheckpointError",
    "DataError",
    "DivergenceError",
    "MismatchError",
    "MpimlError",
    "context_of",
    "private_comm",
    "resolve_comm",
]
