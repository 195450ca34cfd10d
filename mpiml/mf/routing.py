"""Targeted exchange of factor rows between partitioned blocks (Spark ALS's "in/out blocks").

With partitioned factors rank ``r`` stores only rows ``bounds[r]:bounds[r + 1]`` of a factor
matrix. A half-step on the other side needs the rows its ratings reference, no others: the
sorted set ``needed`` of those global rows is fixed by the ratings, so it is computed once
at setup, sent to the owners, and from then on every half-step moves exactly those rows
(one all-to-all-v per half-step, each row sent once to each rank that needs it).

A :class:`Route` is the plan of one such exchange on one rank; the functions that build it
(:func:`referenced`, :func:`owner_counts`, :func:`split_by_owner`, :func:`make_route`,
:func:`local_columns`) and the reference exchange :func:`simulate` are pure. The two
functions that talk (:func:`plan_route` once, :func:`route_rows` per half-step) take
``comm``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mpiml.errors import ArgumentError

__all__ = ["Route", "referenced", "owner_counts", "split_by_owner", "make_route", "local_columns", "simulate",
           "plan_route", "route_rows", "route_back", "simulate_back"]


@dataclass(frozen=True)
class Route:
    """One rank's plan of a row exchange.

    Attributes
    ----------
    needed : ndarray of int64
        Sorted global rows this rank receives (in this order, grouped by owner).
    recv_counts : ndarray of int64
        Rows received from each rank (its share of ``needed``).
    send_rows : ndarray of int64
        Rows of this rank's block (local positions) to send, grouped by destination rank.
    send_counts : ndarray of int64
        Rows sent to each rank.
    rank : int
        This rank (its own rows are copied, not sent).
    """

    needed: np.ndarray
    recv_counts: np.ndarray
    send_rows: np.ndarray
    send_counts: np.ndarray
    rank: int

    def received(self) -> int:
        """Rows that come from other ranks."""
        return int(self.recv_counts.sum() - self.recv_counts[self.rank])

    def sent(self) -> int:
        """Rows sent to other ranks."""
        return int(self.send_counts.sum() - self.send_counts[self.rank])


def referenced(cols) -> np.ndarray:
    """The sorted distinct global rows that ratings ``cols`` point to."""
    return np.unique(np.asarray(cols, dtype=np.int64))


def owner_counts(indices, bounds) -> np.ndarray:
    """How many of the sorted ``indices`` each block of ``bounds`` owns."""
    return np.diff(np.searchsorted(np.asarray(indices, dtype=np.int64), np.asarray(bounds, dtype=np.int64)))


def split_by_owner(indices, bounds) -> list:
    """The sorted ``indices`` cut into one array per owner of ``bounds``."""
    cuts = np.searchsorted(np.asarray(indices, dtype=np.int64), np.asarray(bounds, dtype=np.int64))
    return [np.asarray(indices, dtype=np.int64)[cuts[b]:cuts[b + 1]] for b in range(len(bounds) - 1)]


def make_route(needed, requested, bounds, rank: int) -> Route:
    """The :class:`Route` of ``rank`` from what it needs and what each rank ``requested`` of it.

    ``needed`` are sorted global rows within ``bounds``; ``requested[s]`` the global rows
    rank ``s`` needs from this rank (each within this rank's block).
    """
    bounds = np.asarray(bounds, dtype=np.int64)
    needed = np.asarray(needed, dtype=np.int64)
    if needed.size and (needed[0] < bounds[0] or needed[-1] >= bounds[-1] or np.any(np.diff(needed) <= 0)):
        raise ArgumentError("needed rows must be sorted, distinct and within the bounds")
    lo, hi = int(bounds[rank]), int(bounds[rank + 1])
    requested = [np.asarray(rows, dtype=np.int64) for rows in requested]
    if len(requested) != len(bounds) - 1:
        raise ArgumentError(f"requests from {len(requested)} ranks for {len(bounds) - 1} blocks")
    for rows in requested:
        if rows.size and (rows.min() < lo or rows.max() >= hi):
            raise ArgumentError(f"a rank requested rows outside block {rank} ({lo}..{hi})")
    send = np.concatenate(requested) - lo if requested else np.zeros(0, np.int64)
    return Route(needed, owner_counts(needed, bounds), send.astype(np.int64),
                 np.array([rows.size for rows in requested], dtype=np.int64), int(rank))


def local_columns(cols, needed) -> np.ndarray:
    """``cols`` (global rows, each in ``needed``) as positions in ``needed``."""
    return np.searchsorted(needed, np.asarray(cols, dtype=np.int64)).astype(np.int64)


def simulate(blocks: list, routes: list) -> list:
    """Reference of the exchange: what each rank receives, given every rank's block and route.

    Rank ``r`` gets, from each source ``s`` in rank order, the rows of ``blocks[s]`` that
    ``routes[s]`` sends to ``r``.
    """
    out = []
    for r in range(len(routes)):
        parts = []
        for s, route in enumerate(routes):
            start = int(route.send_counts[:r].sum())
            parts.append(blocks[s][route.send_rows[start:start + int(route.send_counts[r])]])
        out.append(np.concatenate(parts) if parts else np.zeros((0,) + blocks[r].shape[1:]))
    return out


def plan_route(needed, bounds, comm) -> Route:
    """Tell each owner which of its rows this rank needs, and learn what the others need (collective)."""
    from mpi4py import MPI

    from mpiml.runtime.comm import private_comm

    c = private_comm(comm)
    rank, size = c.Get_rank(), c.Get_size()
    needed = np.asarray(needed, dtype=np.int64)
    counts = owner_counts(needed, bounds)
    theirs = np.zeros(size, dtype=np.int64)
    c.Alltoall(counts, theirs)
    incoming = np.empty(int(theirs.sum()), dtype=np.int64)
    c.Alltoallv([needed, counts, _displacements(counts), MPI.INT64_T],
                [incoming, theirs, _displacements(theirs), MPI.INT64_T])
    cuts = np.concatenate([[0], np.cumsum(theirs)])
    return make_route(needed, [incoming[cuts[s]:cuts[s + 1]] for s in range(size)], bounds, rank)


def route_rows(route: Route, block: np.ndarray, comm) -> np.ndarray:
    """The rows ``route.needed`` of the factor matrix whose block this rank holds (collective).

    One ``Alltoallv`` on mpiml's private duplicate of ``comm``: mpiml's collectives have no
    all-to-all-v, and the duplicate keeps these messages apart from the user's traffic on
    ``comm``. A row is one MPI datatype, so counts stay small however wide the rows are.
    """
    block = np.ascontiguousarray(block)
    return _exchange(block[route.send_rows], route.send_counts, route.recv_counts, route.needed.size, comm)


def route_back(route: Route, rows: np.ndarray, comm) -> np.ndarray:
    """The reverse of :func:`route_rows`: ``rows`` (one per ``route.needed``) go to their owners (collective).

    Each owner receives, from every rank in rank order, one row per entry of ``route.send_rows``
    (aligned with it), e.g. partial sums of its rows for it to add up.
    """
    return _exchange(np.ascontiguousarray(rows), route.recv_counts, route.send_counts, route.send_rows.size, comm)


def simulate_back(parts: list, routes: list) -> list:
    """Reference of :func:`route_back`: what each owner receives, given every rank's rows and route."""
    out = []
    for r in range(len(routes)):
        pieces = []
        for s, route in enumerate(routes):
            start = int(route.recv_counts[:r].sum())
            pieces.append(parts[s][start:start + int(route.recv_counts[r])])
        out.append(np.concatenate(pieces) if pieces else np.zeros((0,) + parts[r].shape[1:]))
    return out


def _exchange(send: np.ndarray, send_counts, recv_counts, rows: int, comm) -> np.ndarray:
    """One ``Alltoallv`` of whole rows (``send`` grouped by destination) on the private duplicate."""
    from mpi4py.util.dtlib import from_numpy_dtype

    from mpiml.runtime.comm import private_comm

    send = np.ascontiguousarray(send)
    width = int(np.prod(send.shape[1:], dtype=np.int64))
    out = np.empty((rows,) + send.shape[1:], dtype=send.dtype)
    c = private_comm(comm)
    if c.Get_size() == 1:
        out[...] = send
        return out
    if width == 0:  # every rank sees the same width: nothing to move
        return out
    row = from_numpy_dtype(send.dtype).Create_contiguous(width).Commit()
    try:
        c.Alltoallv([send, send_counts, _displacements(send_counts), row],
                    [out, recv_counts, _displacements(recv_counts), row])
    finally:
        row.Free()
    return out


def _displacements(counts) -> np.ndarray:
    """Offsets of consecutive parts of ``counts`` elements."""
    return np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
