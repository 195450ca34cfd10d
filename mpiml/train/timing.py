"""Where a rank's time goes: compute, communication, waiting (and evaluation, checkpoints).

Definitions (per rank, wall-clock ``time.perf_counter``):

- ``compute``: local gradient, loss and optimizer work.
- ``wait``: for each collective exchange, how long this rank necessarily sat in it for
  the slowest rank to finish computing: ``max_r compute_r - compute_self`` over the
  compute since the previous exchange (bounded by the time spent in the call). Every
  exchange carries each rank's compute seconds in a slot of its own, so this costs no
  extra message.
- ``comm``: the rest of the time inside the collective (transfer and reduction).
- ``eval``/``checkpoint``: per-epoch metrics (incl. averaging models just to measure
  them) and checkpoint writing, kept apart so they do not blur the three above.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, fields

import numpy as np

from mpiml.collectives.model import allreduce_bytes
from mpiml.runtime.stragglers import Slowdown


@dataclass
class Timings:
    """Seconds this rank spent in each category."""

    compute: float = 0.0
    comm: float = 0.0
    wait: float = 0.0
    eval: float = 0.0
    checkpoint: float = 0.0

    def as_dict(self) -> dict:
        return {f"{f.name}_seconds": getattr(self, f.name) for f in fields(self)}


class Exchanger:
    """Timed reductions whose buffers also carry a stop vote and a compute-time slot per rank.

    :meth:`allreduce` sums over ``group`` a buffer from :meth:`buffer`, laid out
    ``[payload..., stop, slot_0 .. slot_{p-1}]``. ``stop`` sums the ranks' votes (e.g. a
    signal seen by :class:`mpiml.runtime.preempt.PreemptionWatch`), so once any rank was
    asked to stop, every rank learns it at the same exchange and they all stop after the
    same update. :meth:`reduce` times any other reduction (a grid's row-group sums), with
    or without slots.
    """

    def __init__(self, group, timings: Timings, stop_requested=None):
        self.group, self.timings = group, timings
        self.stop_requested = stop_requested or (lambda: False)
        self.stop_agreed = False
        self._since = 0.0
        # bytes this rank sends in the replica exchanges, and what dense allreduces of them would send
        self.bytes_moved = self.bytes_dense = 0
        # an injected straggler (MPIML_SLOW_RANKS / --slow-ranks) sleeps here, after each timed piece of compute
        self.slowdown = Slowdown.for_rank()

    def add_compute(self, seconds: float) -> None:
        seconds += self.slowdown.after(seconds)
        self.timings.compute += seconds
        self._since += seconds

    def vote(self) -> float:
        """This rank's stop vote: 1.0 if it was asked to stop."""
        return 1.0 if self.stop_requested() else 0.0

    def buffer(self, n_payload: int) -> np.ndarray:
        return np.zeros(n_payload + 1 + self.group.size)

    def allreduce(self, buf: np.ndarray, vote: float | None = None) -> np.ndarray:
        """Sum ``buf`` over the group in place; returns the payload part.

        ``vote``: the stop vote to send (default :meth:`vote`; a grid passes the sum of its
        row group's votes, so that every rank of the grid learns them).
        """
        p = self.group.size
        buf[-p - 1] = self.vote() if vote is None else vote
        self.reduce(self.group.allreduce, buf, self.group.rank, p)
        self.bytes_moved += allreduce_bytes(buf.nbytes, p)
        self.bytes_dense += allreduce_bytes(buf.nbytes, p)
        self.stop_agreed = self.stop_agreed or buf[-p - 1] > 0
        return buf[: len(buf) - p - 1]

    def exact(self, terms, top=None) -> np.ndarray:
        """The exact sums of ``terms`` (a :class:`mpiml.collectives.reproducible.Sum`) over the group.

        With ``top`` (a bound on every term's magnitude per element, the same on every rank:
        :class:`mpiml.train.reproducible.Bounds`): one reduction of the folds, the stop vote,
        the compute slots and a flag raised by a rank whose terms exceed ``top`` (then the
        sum is redone as without). Without: two reductions, the maxima (with the vote and
        the slots: each slot holds one rank's non-negative seconds, so their max is their
        sum), then the folds.
        """
        from mpiml.collectives import reproducible
        from mpiml.train.reproducible import send_buffer

        p, n = self.group.size, terms.n
        if top is not None:
            start = time.perf_counter()
            E, buf, F = send_buffer(terms, top, 1 + p)
            buf[F.size + 1] = self.vote()
            self.add_compute(time.perf_counter() - start)
            self.reduce(self.group.allreduce, buf, self.group.rank, p)
            self.stop_agreed = self.stop_agreed or buf[F.size + 1] > 0
            if buf[F.size] == 0:
                return reproducible.value(F, E)
        start = time.perf_counter()
        buf = np.empty(n + 1 + p)
        buf[:n] = reproducible.exponents(terms.maxima())
        buf[n] = self.vote()
        self.add_compute(time.perf_counter() - start)
        self.reduce(self.group.maximum, buf, self.group.rank, p)
        self.stop_agreed = self.stop_agreed or buf[n] > 0
        start = time.perf_counter()
        F = terms.folds(buf[:n])
        self.add_compute(time.perf_counter() - start)
        self.reduce(self.group.allreduce, F.reshape(-1))
        return reproducible.value(F, buf[:n])

    def reduce(self, fn, buf: np.ndarray, rank: int = 0, slots: int = 0) -> np.ndarray:
        """``fn(buf, out=buf)``, timed; the last ``slots`` entries carry each rank's compute seconds
        since the previous exchange (``rank``'s own in its slot), which tells waiting from transfer."""
        if slots:
            tail = buf[len(buf) - slots:]
            tail[:] = 0.0
            tail[rank] = self._since
        start = time.perf_counter()
        fn(buf, out=buf)
        spent = time.perf_counter() - start
        wait = min(max(float(buf[len(buf) - slots:].max()) - self._since, 0.0), spent) if slots else 0.0
        self.timings.wait += wait
        self.timings.comm += spent - wait
        self._since = 0.0
        return buf


def allgather_bytes(nbytes: int, p: int) -> int:
    """Bytes a rank sends in an allgather of ``nbytes`` from each of ``p`` ranks (its own, forwarded p-1 times)."""
    return (p - 1) * int(nbytes)


class Clock:
    """``with clock: ...`` adds the block's seconds to ``add(seconds)``."""

    def __init__(self, add):
        self.add = add

    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.add(time.perf_counter() - self.start)
        return False
