"""The one place that decides which algorithm ``algorithm="auto"`` runs.

The rule (documented in the README, measured on 2-core nodes with the pip MPICH wheel;
the calibrated model of the benchmark issue will replace the fixed thresholds):

allreduce
    p == 1: a local copy. Operator not commutative: ``native`` (the MPI library keeps
    rank order). Below ``SMALL_BYTES``: ``native`` (Python's few microseconds per step
    cannot beat the library on latency). From there: ``ring`` while p <= ``RING_MAX_RANKS``
    (bandwidth-optimal, p - 1 steps each way), else ``rabenseifner`` (the same bytes in
    2 log2 p steps).
reduce_scatter, allgather
    ``native`` below ``SMALL_BYTES`` of the whole vector, else ``ring``.
bcast
    ``native`` below ``SMALL_BYTES``, else ``pipeline`` once p > 2, else ``binomial``.
reduce
    ``native`` below ``SMALL_BYTES``, else ``binomial``.
"""

from __future__ import annotations

from mpiml.runtime.errors import ArgumentError

SMALL_BYTES = 64 * 1024
RING_MAX_RANKS = 8

ALGORITHMS = {
    "allreduce": ("native", "ring", "recursive_doubling", "rabenseifner", "tree"),
    "reduce_scatter": ("native", "ring"),
    "allgather": ("native", "ring"),
    "bcast": ("native", "binomial", "pipeline"),
    "reduce": ("native", "binomial"),
}
# Algorithms whose combination order depends on the rank: they need op.commutative.
NEEDS_COMMUTATIVE = {"ring", "rabenseifner"}


def choose(collective: str, algorithm: str, nbytes: int, size: int, commutative: bool = True) -> str:
    """The concrete algorithm for ``algorithm`` (a name, or ``"auto"``); refuses unknown
    names and order-dependent algorithms for non-commutative operators."""
    known = ALGORITHMS[collective]
    if algorithm == "auto":
        return _auto(collective, nbytes, size, commutative)
    if algorithm not in known:
        raise ArgumentError(
            f"unknown {collective} algorithm {algorithm!r}; expected 'auto' or one of {list(known)}"
        )
    if not commutative and algorithm in NEEDS_COMMUTATIVE:
        raise ArgumentError(
            f"algorithm {algorithm!r} reorders operands by rank and needs a commutative op; "
            "use 'native', 'recursive_doubling' or 'tree'"
        )
    return algorithm


def _auto(collective, nbytes, size, commutative):
    if nbytes < SMALL_BYTES or (not commutative and collective in ("allreduce", "reduce_scatter")):
        return "native"
    if collective == "allreduce":
        return "ring" if size <= RING_MAX_RANKS else "rabenseifner"
    if collective == "bcast":
        return "pipeline" if size > 2 else "binomial"
    if collective == "reduce":
        return "binomial"
    return "ring"
