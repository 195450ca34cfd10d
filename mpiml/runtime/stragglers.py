"""Straggler injection: make chosen ranks compute slower by a fixed factor, deterministically.

``MPIML_SLOW_RANKS="r:factor[,r:factor]"`` (or ``--slow-ranks`` of ``mpiml sgd`` / ``mpiml mf``,
which :func:`install` the same spec) names COMM_WORLD ranks and how many times slower
their compute is: ``"3:2"`` makes rank 3 twice as slow, ``"0:4,2:1.5"`` two ranks. It is for
experiments and tests that compare synchronization strategies under the *same* imbalance
(:mod:`benchmarks.stragglers`).

How: after a piece of compute that took ``t`` seconds on a rank slowed by ``f``, that rank
sleeps ``(f - 1) t`` (:meth:`Slowdown.after`; the training loop calls it where it times
compute, :meth:`mpiml.train.timing.Exchanger.add_compute`, so every strategy is slowed
alike). A *sleep*, not a busy loop: it frees the core, so on an oversubscribed machine
(more ranks than cores, e.g. p = 4 on 2 cores) the slowed rank does not steal cycles from
the others and the imbalance is the one asked for, not a side effect of contention. The
cost is that a slowed rank is "slow" only in wall-clock time (as a throttled or shared
node is), not in CPU time.

Deterministic in amount: the sleep owed is kept as a debt and slept once it reaches
:data:`GRANULE` seconds (sleeps shorter than that are mostly scheduler overhead), and what a
sleep overshoots is credited to the next; so over a run a slowed rank spends
``(f - 1)`` times its measured compute asleep, to within one granule.
"""

from __future__ import annotations

import math
import os
import time

from mpiml.errors import ArgumentError

ENV = "MPIML_SLOW_RANKS"
GRANULE = 1e-3  # seconds: debts below this wait for the next piece of compute

_installed: dict | None = None   # set by install() (a command-line flag); overrides the environment


def parse(spec: str) -> dict[int, float]:
    """``{rank: factor}`` of ``"r:factor[,r:factor]"`` (empty or blank: no straggler).

    Ranks are integers >= 0, each named once; factors are finite numbers >= 1 (1: not slowed).
    Raises :class:`~mpiml.errors.ArgumentError` naming the part it cannot read.
    """
    factors: dict[int, float] = {}
    if spec is None:
        return factors
    for part in (p.strip() for p in str(spec).split(",")):
        if not part:
            continue
        rank_text, sep, factor_text = part.partition(":")
        try:
            rank = int(rank_text)
            factor = float(factor_text)
        except ValueError:
            rank = factor = None
        if not sep or rank is None:
            raise ArgumentError(f"slow ranks: cannot read {part!r}: write RANK:FACTOR, e.g. 3:2 (rank 3 twice as "
                                f"slow), several separated by commas")
        if rank < 0:
            raise ArgumentError(f"slow ranks: {part!r}: the rank must be >= 0")
        if not math.isfinite(factor) or factor < 1:
            raise ArgumentError(f"slow ranks: {part!r}: the factor must be a finite number >= 1")
        if rank in factors:
            raise ArgumentError(f"slow ranks: {part!r}: rank {rank} is named twice")
        factors[rank] = factor
    return factors


def from_env(environ=None) -> dict[int, float]:
    """:func:`parse` of ``MPIML_SLOW_RANKS`` (empty when unset)."""
    environ = os.environ if environ is None else environ
    return parse(environ.get(ENV, ""))


def install(spec) -> dict[int, float]:
    """Use ``spec`` (a string for :func:`parse`, a dict, or None to go back to the environment)
    instead of ``MPIML_SLOW_RANKS`` in this process; returns the factors now in force."""
    global _installed
    if spec is None:
        _installed = None
        return from_env()
    _installed = dict(parse(spec) if isinstance(spec, str) else {int(r): float(f) for r, f in spec.items()})
    return dict(_installed)


def factors() -> dict[int, float]:
    """The factors in force: :func:`install`'s, else the environment's."""
    return dict(_installed) if _installed is not None else from_env()


def factor(rank: int) -> float:
    """How many times slower ``rank`` computes (1.0: not slowed)."""
    return factors().get(int(rank), 1.0)


def world_rank() -> int:
    """This process's COMM_WORLD rank (0 without an initialized MPI)."""
    try:
        from mpi4py import MPI

        if MPI.Is_initialized() and not MPI.Is_finalized():
            return MPI.COMM_WORLD.Get_rank()
    except ImportError:
        pass
    return 0


class Slowdown:
    """Sleeps ``(factor - 1) t`` after each piece of compute of ``t`` seconds (see the module docstring).

    Parameters
    ----------
    factor : float
        1.0 (the default) does nothing: :meth:`after` returns 0 at once.
    sleep, clock : callable, optional
        ``time.sleep`` and ``time.perf_counter`` (injected by tests).
    """

    def __init__(self, factor: float = 1.0, sleep=time.sleep, clock=time.perf_counter):
        if not math.isfinite(factor) or factor < 1:
            raise ArgumentError(f"a slowdown factor must be a finite number >= 1, got {factor}")
        self.factor = float(factor)
        self.active = self.factor > 1.0
        self.debt = 0.0      # seconds owed, not yet slept
        self.slept = 0.0     # seconds slept in all
        self._sleep, self._clock = sleep, clock

    @classmethod
    def for_rank(cls, rank: int | None = None) -> "Slowdown":
        """The slowdown of ``rank`` (default: this process's COMM_WORLD rank) from the factors in force."""
        return cls(factor(world_rank() if rank is None else rank))

    def after(self, seconds_of_work: float) -> float:
        """Account ``seconds_of_work`` of compute; sleep what is owed if that is a granule or more.
        Returns the seconds slept now (0.0 when not slowed)."""
        if not self.active or seconds_of_work <= 0:
            return 0.0
        self.debt += (self.factor - 1.0) * seconds_of_work
        if self.debt < GRANULE:
            return 0.0
        start = self._clock()
        self._sleep(self.debt)
        spent = self._clock() - start
        self.debt -= spent   # an overshoot (negative debt) is paid back by the next pieces
        self.slept += spent
        return spent

    __call__ = after


_by_rank: dict = {}


def slow(rank: int, seconds_of_work: float) -> float:
    """:meth:`Slowdown.after` of ``rank``'s slowdown (one per rank and factor in this process); seconds slept."""
    f = factor(rank)
    if f <= 1.0:
        return 0.0
    key = (int(rank), f)
    if key not in _by_rank:
        _by_rank[key] = Slowdown(f)
    return _by_rank[key].after(seconds_of_work)
