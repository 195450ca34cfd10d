"""The few collective services a trainer needs, injected so a serial run is the same code.

A :class:`Group` carries ``rank``, ``size``, an ``allreduce(x, out=...)`` callable
(sum) and a ``maximum(x, out=...)`` one (elementwise max, which the reproducible mode's
first pass needs); the trainer's math uses nothing else. Checkpoints and error verdicts use
``gather_root``/``bcast_object``/``agree``. ``Group.serial()`` is p = 1 without MPI.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import numpy as np


def identity_allreduce(x, out=None):
    """The sum over one rank: ``x`` itself (copied into ``out`` if that is another array)."""
    if out is not None and out is not x:
        np.copyto(out, x)
        return out
    return x


@dataclass
class Group:
    """``rank``/``size`` plus injected collectives (``allreduce`` sums arrays, ``maximum`` takes maxima)."""

    rank: int = 0
    size: int = 1
    allreduce: Callable = identity_allreduce
    comm: object = None
    maximum: Callable = identity_allreduce

    @classmethod
    def serial(cls) -> "Group":
        return cls()

    @classmethod
    def from_comm(cls, comm=None, algorithm: str = "auto", allreduce=None) -> "Group":
        """A group over ``comm`` (default COMM_WORLD) using ``mpiml.allreduce`` with ``algorithm``."""
        import mpiml
        from mpiml.runtime.comm import resolve_comm

        comm = resolve_comm(comm)
        if allreduce is None and comm.Get_size() == 1:
            allreduce = identity_allreduce  # a sum over one rank: no call into MPI per update
        if allreduce is None:   # "sparse" (or "auto") also lets sync SGD send sparse gradients: sparse_exchange
            from mpiml.train.sparse_exchange import GroupSum

            allreduce = GroupSum(comm, algorithm)
        maximum = (identity_allreduce if comm.Get_size() == 1
                   else functools.partial(mpiml.allreduce, comm=comm, op="max"))
        return cls(comm.Get_rank(), comm.Get_size(), allreduce, comm, maximum)

    def exscan_count(self, n: int) -> tuple[int, int]:
        """``(offset, total)``: rows on lower ranks and rows everywhere (one allreduce)."""
        counts = np.zeros(self.size)
        counts[self.rank] = n
        counts = self.allreduce(counts)
        return int(counts[: self.rank].sum()), int(counts.sum())

    def gather_object(self, obj):
        """Every rank's ``obj`` on rank 0 (a list in rank order), None elsewhere."""
        if self.comm is None:
            return [obj]
        from mpiml.runtime.comm import private_comm

        return private_comm(self.comm).gather(obj, root=0)

    def gather_root(self, x: np.ndarray):
        """Stack every rank's ``x`` on rank 0 (``None`` elsewhere)."""
        parts = self.gather_object(np.ascontiguousarray(x))
        return np.stack(parts) if parts is not None else None

    def bcast_object(self, obj):
        if self.comm is None:
            return obj
        from mpiml.runtime.comm import private_comm

        return private_comm(self.comm).bcast(obj, root=0)

    def agree(self, error: BaseException | None) -> None:
        """Raise ``error`` of any rank on every rank (see :func:`mpiml.runtime.agree.raise_if_any`)."""
        if self.comm is None:
            if error is not None:
                raise error
            return
        from mpiml.runtime.agree import raise_if_any

        raise_if_any(error, self.comm)
