"""Overlap of the ALS / iALS factor exchange with the row solves.

A half-step solves this rank's rows and allgathers them. With ``overlap=K`` (K >= 2) the
rows are solved in K chunks (the same K on every rank; a rank's chunk ``k`` is rows
``contiguous(n_rank, K)[k:k+2]`` of its block): once chunk ``k`` is solved and written into
the full factor matrix, its :func:`mpiml.iallgather_in_place` starts (every rank's chunk
``k`` lands in its place, no assembly), and the exchanges in flight advance (``test()``)
between chunks while the next ones are solved; after the last chunk the rank waits for all.
Rows are solved independently (one system per row; iALS's Gram matrix once per half-step),
so the factors are bitwise those of the blocking path.

Messages move only inside mpiml calls (:mod:`mpiml.collectives.nonblocking`), so what is
hidden is the waiting for peers and the latency of each chunk but the last, not the
copies themselves; more chunks mean more ``test()`` calls and smaller last chunks, and a
few more calls' overhead.

Where the time goes (the ``Exchange``'s accounts): the solves are compute; the time inside
starting, testing and waiting for the exchanges is "exposed"
exchange time, split into wait (for the slowest rank's compute, learnt from a small
nonblocking allreduce of compute seconds started with the last chunk) and comm. To report
the share hidden, one iteration of a fit (its last) runs blocking: ``comm_hidden_fraction``
= 1 - (exposed exchange seconds per overlapped half-step) / (blocking exchange seconds per
half-step), comm + wait; ``transfer_hidden_fraction`` the same for comm alone (the wait for
a slower rank is load imbalance, which no overlap hides); both clipped to [0, 1] and
averaged over ranks (:class:`Accounts`, :func:`report`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from mpiml.mf.partition import Rows
from mpiml.runtime import partition


def chunk_rows(rows: Rows, lo: int, hi: int) -> Rows:
    """Local rows ``lo:hi`` of ``rows`` as a :class:`Rows` of their own (views, no copies of ratings)."""
    s, e = int(rows.indptr[lo]), int(rows.indptr[hi])
    return Rows(rows.start + lo, rows.start + hi, rows.indptr[lo:hi + 1] - s, rows.cols[s:e], rows.vals[s:e])


def chunk_bounds(sizes, chunks: int) -> np.ndarray:
    """``(ranks, chunks + 1)`` local chunk boundaries of every rank's block of ``sizes[rank]`` rows."""
    return np.array([partition.contiguous(int(n), chunks) for n in sizes], dtype=np.int64)


@dataclass
class Accounts:
    """The overlapped and blocking half-steps of a fit, and the exchange seconds of each.

    Exchange seconds split as the :class:`~mpiml.mf.transport.Exchange` splits them: ``wait``
    (for a rank still computing: load imbalance, which no overlap can hide) and the rest, the
    transfer and call costs (``comm``), which overlap can.
    """

    exposed: float = 0.0        # seconds inside start/test/wait of overlapped exchanges
    exposed_wait: float = 0.0   # of which waiting for a slower rank
    overlapped: int = 0         # overlapped half-steps
    blocking: float = 0.0       # comm + wait seconds of blocking half-step exchanges
    blocking_wait: float = 0.0  # of which wait
    blocked: int = 0            # blocking half-steps

    def hidden_fraction(self, part: str = "exchange"):
        """The share of the blocking exchange time (``part="exchange"``: comm + wait; ``"comm"``: comm only)
        that the overlap hid, clipped to [0, 1]; None before both kinds of half-step ran."""
        if not self.overlapped or not self.blocked:
            return None
        if part == "comm":
            exposed, blocking = self.exposed - self.exposed_wait, self.blocking - self.blocking_wait
        else:
            exposed, blocking = self.exposed, self.blocking
        if blocking <= 0:
            return None
        share = 1.0 - (exposed / self.overlapped) / (blocking / self.blocked)
        return min(max(share, 0.0), 1.0)

    def as_dict(self, chunks: int) -> dict:
        return {"overlap_chunks": chunks, "exchange_exposed_seconds": self.exposed,
                "overlapped_half_steps": self.overlapped, "comm_hidden_fraction": self.hidden_fraction(),
                "transfer_hidden_fraction": self.hidden_fraction("comm")}


PIECES = 4  # solves per chunk, with a test() of the exchanges in flight after each


def _advance(requests) -> None:
    """Advance every exchange in flight (a test() of any unfinished request advances them all)."""
    for request in requests:
        if not request.done:
            request.test()
            return


def solve_gathered(ex, solve, rows: Rows, bounds, chunks: int, accounts: Accounts) -> np.ndarray:
    """Every rank's solved rows, concatenated in rank order, computed by ``solve(chunk_rows)``
    in ``chunks`` chunks whose exchanges overlap the solves of the later ones.

    Each chunk's rows are gathered straight into their places in the full matrix
    (:func:`mpiml.iallgather_in_place`), so nothing is assembled afterwards.
    """
    from mpiml.collectives import iallgather_in_place, iallreduce

    bounds = np.asarray(bounds, dtype=np.int64)
    cuts = chunk_bounds(np.diff(bounds), chunks)
    sizes = np.diff(cuts, axis=1)  # (ranks, chunks)
    mine = cuts[ex.rank]
    algorithm = "native" if ex.algorithm == "native" else "ring"
    requests, exposed, full = [], 0.0, None
    for k in range(chunks):
        # Solved in PIECES, with the exchanges in flight advanced between pieces: a large message
        # takes a few rounds of progress on both ranks, and only mpiml calls make progress.
        cut = partition.contiguous(int(mine[k + 1] - mine[k]), PIECES) + int(mine[k])
        for j in range(PIECES):
            if cut[j] == cut[j + 1] and full is not None:
                continue
            with ex.computing():
                block = solve(chunk_rows(rows, int(cut[j]), int(cut[j + 1])))
                if full is None:
                    full = np.empty((int(bounds[-1]), *block.shape[1:]), dtype=block.dtype)
                lo = int(bounds[ex.rank] + cut[j])
                full[lo:lo + block.shape[0]] = block
            if j < PIECES - 1:
                start = time.perf_counter()
                _advance(requests)
                exposed += time.perf_counter() - start
        start = time.perf_counter()
        _advance(requests)
        requests.append(iallgather_in_place(full, sizes[:, k], bounds[:-1] + cuts[:, k], algorithm, ex.comm))
        exposed += time.perf_counter() - start
    # Every rank's compute seconds since the last exchange, as the blocking gather swaps them (here
    # without a barrier): how long this rank waits for the slowest is wait, not transfer.
    slots = np.zeros(ex.size)
    slots[ex.rank] = ex._since
    start = time.perf_counter()
    requests.append(iallreduce(slots, algorithm="native", comm=ex.comm, out=slots))
    for request in requests:
        request.wait()
    elapsed = time.perf_counter() - start
    wait = min(max(float(slots.max()) - float(slots[ex.rank]), 0.0), elapsed)
    exposed += elapsed
    ex.timings.wait += wait
    ex.timings.comm += exposed - wait
    received = full.nbytes - int(sizes[ex.rank].sum()) * (full.nbytes // max(full.shape[0], 1))
    ex.bytes += received
    ex.sent += received  # as Exchange.gather counts an allgather
    ex._since = 0.0
    accounts.exposed += exposed
    accounts.exposed_wait += wait
    accounts.overlapped += 1
    return full


def report(accounts: Accounts, chunks: int, comm) -> dict:
    """:meth:`Accounts.as_dict`, with the hidden share and exposed seconds averaged over the ranks (collective)."""
    from mpiml.runtime.comm import private_comm

    mine = accounts.as_dict(chunks)
    every = private_comm(comm).allgather((accounts.hidden_fraction(), accounts.hidden_fraction("comm"),
                                          accounts.exposed))
    for j, key in enumerate(("comm_hidden_fraction", "transfer_hidden_fraction")):
        shares = [values[j] for values in every if values[j] is not None]
        mine[key] = sum(shares) / len(shares) if shares else None
    mine["exchange_exposed_seconds"] = sum(values[2] for values in every) / len(every)
    return mine
