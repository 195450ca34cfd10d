"""mpiml: MPI collectives written on point-to-point, and the ML jobs they drive."""

from mpiml.collectives import (
    ALGORITHMS,
    MAX,
    MIN,
    PROD,
    SUM,
    ReduceOp,
    allgather,
    allreduce,
    bcast,
    reduce,
    reduce_scatter,
    reproducible_sum,
    sparse_allreduce,
    sparse_allreduce_coo,
)
from mpiml.errors import (
    ArgumentError,
    CheckpointError,
    DataError,
    DivergenceError,
    MismatchError,
    MpimlError,
    Preempted,
    SubmitError,
)

__version__ = "0.1.0"

__all__ = [
    "ALGORITHMS", "MAX", "MIN", "PROD", "SUM", "ReduceOp",
    "allgather", "allreduce", "bcast", "reduce", "reduce_scatter", "reproducible_sum",
    "sparse_allreduce", "sparse_allreduce_coo",
    "ArgumentError", "CheckpointError", "DataError", "DivergenceError", "MismatchError",
    "MpimlError", "Preempted", "SubmitError", "__version__",
]
