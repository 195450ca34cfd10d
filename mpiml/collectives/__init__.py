"""Collectives written on MPI point-to-point: ring, recursive doubling, Rabenseifner,
binomial trees and a pipelined broadcast, beside the MPI library's own (``native``)."""

from mpiml.collectives.api import allgather, allreduce, bcast, reduce, reduce_scatter
from mpiml.collectives.ops import MAX, MIN, PROD, SUM, ReduceOp
from mpiml.collectives.select import ALGORITHMS

__all__ = [
    "ALGORITHMS", "MAX", "MIN", "PROD", "SUM", "ReduceOp",
    "allgather", "allreduce", "bcast", "reduce", "reduce_scatter",
]
