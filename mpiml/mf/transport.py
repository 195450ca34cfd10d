"""The communication matrix factorization uses, timed: factor exchange, sums, ring shifts.

The algorithms receive an :class:`Exchange` and call only its methods, so the math
modules stay free of MPI and the transport is a choice (``algorithm`` of mpiml's
allgather: ``"auto"``, ``"ring"`` or ``"native"``).

Where a rank's training time goes (wall clock, per rank; the same split as
:mod:`mpiml.train.timing`):

- ``compute``: the local work the trainers wrap in :meth:`Exchange.computing` (row solves,
  SGD sweeps, the objective); its CPU seconds are kept too (``compute_cpu``), which stay
  meaningful when ranks share cores with other work.
- ``wait``: time a rank sat in an exchange because another rank was still computing. Before
  each exchange the ranks that take part swap their compute seconds since the previous one
  (a few bytes: carried inside :meth:`~Exchange.sum`, a tiny allreduce before
  :meth:`~Exchange.gather`, a tiny swap with the two ring neighbours before
  :meth:`~Exchange.shift`); this rank's wait is ``max(theirs) - mine``, bounded by the time
  that swap took.
- ``comm``: the rest of the time inside exchanges (latency and transfer).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, fields

import numpy as np

from mpiml.collectives import allgather, allreduce
from mpiml.collectives.model import allreduce_bytes
from mpiml.errors import ArgumentError, CheckpointError
from mpiml.runtime.checkpoint import read_checkpoint, write_checkpoint
from mpiml.runtime.checkpoint_dir import root_verdict
from mpiml.runtime.comm import private_comm, resolve_comm

EXCHANGES = ("auto", "ring", "native")


@dataclass
class Timings:
    """Seconds one rank spent in each category (see the module docstring)."""

    compute: float = 0.0
    compute_cpu: float = 0.0
    comm: float = 0.0
    wait: float = 0.0

    def as_dict(self) -> dict:
        return {f"{f.name}_seconds": getattr(self, f.name) for f in fields(self)}

    def minus(self, other: "Timings") -> "Timings":
        return Timings(*(getattr(self, f.name) - getattr(other, f.name) for f in fields(self)))

    def copy(self) -> "Timings":
        return Timings(*(getattr(self, f.name) for f in fields(self)))


class Exchange:
    """Collectives on ``comm`` that account their time as comm or wait in ``timings``."""

    def __init__(self, comm=None, algorithm: str = "auto"):
        if algorithm not in EXCHANGES:
            raise ArgumentError(f"unknown exchange {algorithm!r}; expected one of {list(EXCHANGES)}")
        self.comm = resolve_comm(comm)
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.algorithm = algorithm
        self.timings = Timings()
        self.bytes = 0
        self.sent = 0  # bytes this rank sent (factor exchanges and sums)
        self._since = 0.0  # compute seconds since this rank's last exchange

    @property
    def seconds(self) -> float:
        """All time spent in exchanges so far (comm + wait)."""
        return self.timings.comm + self.timings.wait

    def reset(self) -> None:
        """Start counting afresh (e.g. after the setup phase)."""
        self.timings, self.bytes, self.sent, self._since = Timings(), 0, 0, 0.0

    @contextlib.contextmanager
    def computing(self):
        """``with ex.computing(): ...`` counts the block as this rank's compute."""
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            seconds = time.perf_counter() - wall
            self.timings.compute += seconds
            self.timings.compute_cpu += time.process_time() - cpu
            self._since += seconds

    def _settle(self, slots: np.ndarray, spent: float) -> None:
        """Split ``spent`` seconds of an exchange that carried compute ``slots`` into wait and comm."""
        wait = min(max(float(slots.max()) - self._since, 0.0), spent)
        self.timings.wait += wait
        self.timings.comm += spent - wait
        self._since = 0.0

    def _timed(self, call, *args, **kwargs):
        start = time.perf_counter()
        out = call(*args, **kwargs)
        self.timings.comm += time.perf_counter() - start
        return out

    def gather(self, block: np.ndarray) -> np.ndarray:
        """Every rank's rows of a factor matrix, concatenated in rank order."""
        if self.size > 1:
            slots = np.zeros(self.size)
            slots[self.rank] = self._since
            start = time.perf_counter()
            slots = allreduce(slots, comm=self.comm)
            self._settle(slots, time.perf_counter() - start)
        self._since = 0.0
        out = self._timed(allgather, np.ascontiguousarray(block), algorithm=self.algorithm, comm=self.comm)
        self.bytes += out.nbytes - block.nbytes
        self.sent += out.nbytes - block.nbytes  # ring / doubling allgathers forward what they receive
        return out

    def route(self, plan, block: np.ndarray) -> np.ndarray:
        """The rows ``plan.needed`` of the matrix whose ``block`` each rank holds (:mod:`mpiml.mf.routing`)."""
        from mpiml.mf.routing import route_rows

        return self._moved(route_rows, plan, block, plan.received(), plan.sent())

    def route_back(self, plan, rows: np.ndarray) -> np.ndarray:
        """``rows`` (one per ``plan.needed``) sent to the owners of those rows (:func:`mpiml.mf.routing.route_back`)."""
        from mpiml.mf.routing import route_back

        return self._moved(route_back, plan, rows, plan.sent(), plan.received())

    def _moved(self, call, plan, array, received: int, sent: int) -> np.ndarray:
        """``call(plan, array, comm)``, timed, with ``received`` / ``sent`` rows of ``array`` counted."""
        self._since = 0.0
        out = self._timed(call, plan, array, self.comm)
        row = array.dtype.itemsize * int(np.prod(array.shape[1:], dtype=np.int64))
        self.bytes += received * row
        self.sent += sent * row
        return out

    def sum(self, values) -> np.ndarray:
        """Elementwise sum over ranks (identical result on every rank)."""
        values = np.asarray(values, dtype=np.float64).reshape(-1)
        buf = np.zeros(values.size + self.size)
        buf[:values.size] = values
        buf[values.size + self.rank] = self._since
        start = time.perf_counter()
        out = allreduce(buf, comm=self.comm)
        self._settle(out[values.size:], time.perf_counter() - start)
        self.sent += allreduce_bytes(buf.nbytes, self.size)
        return out[:values.size]

    def exact(self, terms) -> np.ndarray:
        """The exact sums over ranks of ``terms`` (a :class:`mpiml.collectives.reproducible.Sum`): the same
        at any number of ranks. Two allreduces: the maxima (with the compute slots), then the folds."""
        from mpiml.collectives import reproducible

        n = terms.n
        buf = np.zeros(n + self.size)
        buf[:n] = reproducible.exponents(terms.maxima())
        buf[n + self.rank] = self._since
        start = time.perf_counter()
        allreduce(buf, op="max", comm=self.comm, out=buf)
        self._settle(buf[n:], time.perf_counter() - start)
        F = terms.folds(buf[:n])
        flat = F.reshape(-1)
        self._timed(allreduce, flat, comm=self.comm, out=flat)
        self.sent += allreduce_bytes(buf.nbytes + flat.nbytes, self.size)
        return reproducible.value(F, buf[:n])

    def shift(self, block: np.ndarray, incoming_rows: int) -> np.ndarray:
        """Send ``block`` to rank - 1 and receive the block of rank + 1 (ring Sendrecv)."""
        if self.size == 1:
            self._since = 0.0
            return block
        comm = private_comm(self.comm)
        left, right = (self.rank - 1) % self.size, (self.rank + 1) % self.size
        # This rank waits on rank + 1 (its block) and on rank - 1 (to take ours): swap
        # compute seconds with both first, so that waiting is told apart from transfer.
        mine, theirs = np.array([self._since]), np.zeros(2)
        start = time.perf_counter()
        comm.Sendrecv(mine, dest=left, sendtag=72, recvbuf=theirs[0:1], source=right, recvtag=72)
        comm.Sendrecv(mine, dest=right, sendtag=73, recvbuf=theirs[1:2], source=left, recvtag=73)
        self._settle(theirs, time.perf_counter() - start)
        incoming = np.empty((incoming_rows, *block.shape[1:]), dtype=block.dtype)
        self._timed(comm.Sendrecv, np.ascontiguousarray(block), dest=left, sendtag=71,
                    recvbuf=incoming, source=right, recvtag=71)
        self.bytes += incoming.nbytes
        self.sent += block.nbytes
        return incoming


def send_to_owners(owner: np.ndarray, arrays: list, comm=None) -> list:
    """Move each entry of ``arrays`` to rank ``owner[j]`` (all-to-all); returns what arrived.

    What a rank receives is ordered by source rank, then by position at the source.
    """
    comm = private_comm(comm)
    size = comm.Get_size()
    if size == 1:
        return [np.asarray(a) for a in arrays]
    order = np.argsort(owner, kind="stable")
    cuts = np.searchsorted(owner[order], np.arange(size + 1))
    sent = [[np.asarray(a)[order[cuts[d]:cuts[d + 1]]] for a in arrays] for d in range(size)]
    received = comm.alltoall(sent)
    return [np.concatenate([parts[j] for parts in received]) for j in range(len(arrays))]


def save_checkpoint(directory, step: int, arrays: dict, meta: dict, comm=None) -> None:
    """Rank 0 writes the checkpoint; every rank learns whether it worked."""
    comm = resolve_comm(comm)
    error = None
    if comm.Get_rank() == 0:
        try:
            write_checkpoint(directory, step, arrays, meta)
        except CheckpointError as exc:
            error = exc
    root_verdict(error, comm)


def load_checkpoint(directory, expect: dict, comm=None, check=None, slices=None):
    """``(arrays, manifest)`` of the latest good checkpoint (read on rank 0, broadcast), or None.

    ``expect`` is this run's fingerprint (:mod:`mpiml.runtime.fingerprint`); ``check(arrays,
    meta)`` raises :class:`CheckpointError` for a checkpoint that lacks what the run needs
    (it then counts as corrupt, and the previous one is tried). Raises
    :class:`CheckpointError` on every rank if no checkpoint can be read, or if the
    fingerprint differs from the checkpoint's (naming each difference). ``slices``
    (``{key: bounds}``) gives rank ``r`` only rows ``bounds[r]:bounds[r+1]`` of those arrays
    (:func:`scatter_rows`), for partitioned factors.
    """
    comm = resolve_comm(comm)
    found, error = None, None
    if comm.Get_rank() == 0:
        try:
            found = read_checkpoint(directory, check, expect)
        except CheckpointError as exc:
            error = exc
    root_verdict(error, comm)
    c = private_comm(comm)
    if not slices:
        return c.bcast(found, root=0)
    head = None if found is None else ({k: v for k, v in found[0].items() if k not in slices}, found[1])
    head = c.bcast(head, root=0)
    if head is None:
        return None
    arrays = dict(head[0])
    for key, bounds in slices.items():
        arrays[key] = scatter_rows(None if found is None else found[0][key], bounds, comm)
    return arrays, head[1]


def gather_rows(block: np.ndarray, comm=None):
    """The full matrix of every rank's ``block`` (in rank order) on rank 0, None elsewhere; collective."""
    parts = private_comm(comm).gather(np.ascontiguousarray(block), root=0)
    return np.concatenate(parts) if parts is not None else None


def scatter_rows(full, bounds, comm=None) -> np.ndarray:
    """Rows ``bounds[r]:bounds[r+1]`` of rank 0's ``full`` on each rank ``r``; collective."""
    c = private_comm(comm)
    parts = None
    if c.Get_rank() == 0:
        parts = [np.ascontiguousarray(full[bounds[d]:bounds[d + 1]]) for d in range(c.Get_size())]
    return c.scatter(parts, root=0)
