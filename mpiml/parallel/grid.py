"""A 2-D process grid ``p = R x C`` over a communicator, split into row and column groups.

Rank ``q`` sits at row ``r = q // C`` and column ``c = q % C``. The ``C`` ranks of one
*row group* hold the same rows of the data (a consecutive block of the global rows) and
split the model between them (features or classes): partial margins are summed there.
The ``R`` ranks of one *column group* hold the same part of the model for different
rows: weight gradients are summed there. ``R x 1`` is data parallelism, ``1 x C`` pure
model parallelism, anything between is hybrid.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from mpiml.errors import ArgumentError
from mpiml.runtime import partition
from mpiml.train.group import Group, identity_allreduce


def parse_grid(text: str, size: int) -> tuple[int, int]:
    """``"RxC"`` -> ``(R, C)``, which must multiply to ``size``."""
    try:
        rows, cols = (int(v) for v in str(text).lower().split("x"))
    except ValueError as exc:
        raise ArgumentError(f"grid {text!r} is not RxC (e.g. 2x3)") from exc
    if rows < 1 or cols < 1 or rows * cols != size:
        raise ArgumentError(f"grid {text} needs {rows * cols} ranks, this job has {size}")
    return rows, cols


def factorizations(size: int) -> list[tuple[int, int]]:
    """Every grid ``(R, C)`` with ``R * C == size``, from ``size x 1`` to ``1 x size``."""
    return [(size // c, c) for c in range(1, size + 1) if size % c == 0]


def block(n: int, parts: int, index: int) -> tuple[int, int]:
    """``[lo, hi)`` of part ``index`` of ``n`` items in ``parts`` balanced consecutive blocks
    (:func:`mpiml.runtime.partition.contiguous`, as the rows of a data file are split)."""
    return partition.block(partition.contiguous(n, parts), index)


@dataclass
class GridComms:
    """The three reductions a grid trainer uses, injected (serial: identities).

    ``row_sum``/``row_max`` combine over the row group (the ranks sharing rows),
    ``col_sum``/``col_max`` over the column group (the ranks sharing a model block); each is called
    as ``f(x, out=x)``. ``world`` is the whole communicator (None when serial), used
    only for checkpoints and collective error verdicts.
    """

    rows: int = 1
    cols: int = 1
    row: int = 0
    col: int = 0
    row_sum: object = identity_allreduce
    row_max: object = identity_allreduce
    col_sum: object = identity_allreduce
    world: object = None
    row_comm: object = None
    col_comm: object = None
    col_max: object = identity_allreduce

    @property
    def rank(self) -> int:
        return self.row * self.cols + self.col

    @property
    def size(self) -> int:
        return self.rows * self.cols

    @classmethod
    def serial(cls) -> "GridComms":
        return cls()

    @classmethod
    def of_group(cls, group) -> "GridComms":
        """The ``p x 1`` grid of a data-parallel :class:`~mpiml.train.group.Group`: each rank its own
        row group, the whole model on every rank; no communicator is made (nor freed)."""
        return cls(group.size, 1, group.rank, 0, col_sum=group.allreduce, world=group.comm, col_max=group.maximum)

    @classmethod
    def split(cls, comm=None, rows: int | None = None, cols: int | None = None,
              algorithm: str = "auto") -> "GridComms":
        """Split ``comm`` (default COMM_WORLD) into an ``rows x cols`` grid (collective).

        The reductions run on mpiml's allreduce with ``algorithm`` over the two sub-communicators.
        """
        import mpiml
        from mpiml.runtime.comm import private_comm, resolve_comm

        comm = resolve_comm(comm)
        size, rank = comm.Get_size(), comm.Get_rank()
        if rows is None and cols is None:
            rows, cols = size, 1
        elif rows is None:
            rows = size // cols
        elif cols is None:
            cols = size // rows
        if rows * cols != size:
            raise ArgumentError(f"a {rows}x{cols} grid needs {rows * cols} ranks, the communicator has {size}")
        r, c = divmod(rank, cols)
        parent = private_comm(comm)
        row_comm = parent.Split(color=r, key=c)
        col_comm = parent.Split(color=c, key=r)

        def reducer(sub, op):
            return functools.partial(mpiml.allreduce, comm=sub, op=op,
                                     algorithm=algorithm if op == "sum" else "auto")

        return cls(rows, cols, r, c, reducer(row_comm, "sum"), reducer(row_comm, "max"),
                   reducer(col_comm, "sum"), comm, row_comm, col_comm, reducer(col_comm, "max"))

    def free(self) -> None:
        """Release the two sub-communicators (collective)."""
        for sub in (self.row_comm, self.col_comm):
            if sub is not None:
                sub.Free()
        self.row_comm = self.col_comm = None

    @property
    def everyone(self) -> Group:
        """The whole grid as one :class:`~mpiml.train.group.Group` (its verdicts, broadcasts, gathers)."""
        return Group(self.rank, self.size, comm=self.world)

    def agree(self, error) -> None:
        """Raise any rank's error on every rank."""
        self.everyone.agree(error)

    def bcast_object(self, obj):
        return self.everyone.bcast_object(obj)

    def gather_object(self, obj):
        """Every rank's ``obj`` on rank 0 (list in rank order), None elsewhere."""
        return self.everyone.gather_object(obj)
