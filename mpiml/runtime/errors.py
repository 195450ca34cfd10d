"""The exceptions, re-exported from their home :mod:`mpiml.errors` (older import path)."""

from mpiml.errors import (  # noqa: F401
    ArgumentError,
    CheckpointError,
    DataError,
    DivergenceError,
    MismatchError,
    MpimlError,
    Preempted,
    SubmitError,
)
