"""Bandwidth figures, with the nccl-tests definitions.

``algbw = size / time``, where ``size`` is the whole vector in bytes (for
reduce_scatter the input of one rank, for allgather the output of one rank).
``busbw = algbw * factor(p)``: the rate each rank's link must sustain, comparable
across rank counts and with the hardware's bandwidth (nccl-tests, PERFORMANCE.md):

============== ==============
collective     factor
============== ==============
allreduce      2 (p - 1) / p
reduce_scatter (p - 1) / p
allgather      (p - 1) / p
bcast, reduce  1
============== ==============

Rates are in GB/s (10**9 bytes per second), as nccl-tests prints them.
"""

from __future__ import annotations


def bus_factor(collective: str, p: int) -> float:
    """The nccl-tests factor that turns algorithm bandwidth into bus bandwidth."""
    if collective == "allreduce":
        return 2.0 * (p - 1) / p
    if collective in ("reduce_scatter", "allgather"):
        return (p - 1) / p
    if collective in ("bcast", "reduce"):
        return 1.0
    raise ValueError(f"unknown collective {collective!r}")


def algbw_gbps(nbytes: int, seconds: float) -> float:
    """Algorithm bandwidth in GB/s."""
    return nbytes / seconds / 1e9 if seconds > 0 else float("inf")


def busbw_gbps(collective: str, nbytes: int, seconds: float, p: int) -> float:
    """Bus bandwidth in GB/s (0 at p = 1, where nothing moves)."""
    return algbw_gbps(nbytes, seconds) * bus_factor(collective, p)
