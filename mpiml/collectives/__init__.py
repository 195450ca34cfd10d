"""Collectives written on MPI point-to-point: ring, recursive doubling, Rabenseifner,
binomial trees and a pipelined broadcast, beside the MPI library's own (``native``).

Layout: :mod:`~mpiml.collectives.api` (the public functions), :mod:`~.registry` (every
algorithm by name, with its cost formula), :mod:`~.algorithms` (one module per algorithm
family, each registering itself), :mod:`~.transport` (the point-to-point calls the
algorithms are written against), :mod:`~.select` (``auto``), :mod:`~.model` (the cost
model), :mod:`~.tuning` (tuning files), :mod:`~.layout`, :mod:`~.ops`, :mod:`~.workspace`.
"""

from mpiml.collectives.api import (allgather, allreduce, bcast, reduce, reduce_scatter, reproducible_sum,
                                   sparse_allreduce, sparse_allreduce_coo)
from mpiml.collectives.api import (allreduce_many, iallgather, iallgather_in_place, iallreduce, iallreduce_many,
                                   ibcast, ireduce_scatter)
from mpiml.collectives.nonblocking import Request, UnwaitedRequestWarning
from mpiml.collectives.ops import MAX, MIN, PROD, SUM, ReduceOp
from mpiml.collectives.registry import ALGORITHMS, register, unregister

__all__ = [
    "ALGORITHMS", "MAX", "MIN", "PROD", "SUM", "ReduceOp",
    "allgather", "allreduce", "bcast", "reduce", "reduce_scatter", "register", "reproducible_sum",
    "sparse_allreduce", "sparse_allreduce_coo", "unregister",
    "Request", "UnwaitedRequestWarning", "allreduce_many", "iallgather", "iallgather_in_place", "iallreduce",
    "iallreduce_many", "ibcast", "ireduce_scatter",
]
