"""Runtime services: communicators, errors, collective verdicts, abort-on-exception."""

from mpiml.errors import (
    ArgumentError,
    CheckpointError,
    DataError,
    DivergenceError,
    MismatchError,
    MpimlError,
)
from mpiml.runtime.comm import context_of, private_comm, resolve_comm

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
