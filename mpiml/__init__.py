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
from mpiml.collectives import (  # nonblocking and fused calls
    allreduce_many,
    iallgather,
    iallgather_in_place,
    iallreduce,
    iallreduce_many,
    ibcast,
    ireduce_scatter,
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
    "allreduce_many", "iallgather", "iallgather_in_place", "iallreduce", "iallreduce_many", "ibcast", "ireduce_scatter",
    "sparse_allreduce", "sparse_allreduce_coo",
    "ArgumentError", "CheckpointError", "DataError", "DivergenceError", "MismatchError",
    "MpimlError", "Preempted", "SubmitError", "__version__",
]
