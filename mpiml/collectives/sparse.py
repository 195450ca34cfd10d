"""Sparse allreduce (SparCML, Renggli et al., SC'19): only nonzeros move, dense once that is cheaper.

A vector of ``size`` elements is given on each rank as ``(indices, values)``. The index
space is cut into ``p`` contiguous ranges (:func:`mpiml.runtime.partition.array_split`,
the blocks of every reduced vector in mpiml); range ``j`` belongs to rank ``j``.

1. **Heads** (point to point, one message per pair, received in any order): each rank
   sends every other rank, per range, how many of its nonzeros fall in it, with a digest of
   ``(dtype, size, op)``, an error flag and an ``eager`` flag. A rank is eager when the cost
   model (:func:`mpiml.collectives.model.sparse_eager`) expects the split allgather from its
   own counts; its indices and values then travel in the same message, so the usual case
   takes one round.
   The message is packed once (compiled: order check, routing and the wire's index type in
   one pass) into this rank's row of a workspace reused from call to call (one call at a
   time per process), and every other rank's message is received into its row, with room
   for an eager payload of up to 1 MiB (less at large ``p``): nothing is left to drain. Every rank then knows the whole ``p x p``
   count table and takes the same decision: the split allgather when every rank holding
   nonzeros was eager (they are all here already), else
   :func:`mpiml.collectives.model.sparse_choice`'s:
2. **Split allgather** (small merged counts): every rank's nonzeros reach every rank (the
   eager ones already have; the others follow in a second round); each rank combines the
   ``p`` pieces itself in rank order straight from the rows (:func:`merge`'s kernel, or
   :func:`scatter_sum`'s into a dense result): the same function of the same data
   everywhere. A rank's sends complete while it combines; it waits for them at its next
   call's start (their receivers posted their receives in this call), or at exit.
3. Or **sparse reduce-scatter** (one alltoallv of index-value records): each rank sends
   every other rank the nonzeros in its range; the owner combines the pieces in rank
   order (:func:`merge`); then each owner sends its reduced range to every other rank,
   as records or as a dense block, whichever the model
   (:func:`mpiml.collectives.model.sparse_range_dense`) prices lower for that range's
   merged count; an 8-byte header says which.
4. Or, with ``algorithm="auto"`` and dense enough inputs, a dense allreduce of the
   densified vector (``mpiml.allreduce``).

Sums are ``0 + v_0 + v_1 + ...`` over the ranks holding an index, in rank order, on every
path but the dense one, so the result is bitwise identical on every rank and the same on
the two sparse paths. ``algorithm``: ``auto`` (all of them), ``sparse`` (the cheaper
sparse way), or ``allgather``, ``reduce_scatter``, ``dense`` to force one.

The local math (:func:`canonical`, :func:`route`, :func:`merge`, :func:`scatter_sum`,
:func:`densify`) is pure numpy on local arrays, with compiled kernels for float sums
beside their numpy references; :func:`run` does the messages on the communicator it is given.

The common call (float32/float64 values, sorted unique int32/int64 indices, two ranks or
more, check mode off, compiled kernels) takes :func:`quick`: what depends only on the
call's shape (communicator, ranges, digest, persistent receives, the eager guess) is
resolved once per shape, and the argument checks, order test, routing and packing are one
compiled pass, so a call runs little Python. That matters because a call between two
training steps runs cold (its code and objects out of the caches): 2-3x its cost in a
tight loop. A COO result reuses the previous call's arrays when the caller no longer holds
them (fresh arrays cost page faults). Every other call takes the general path, with the
same messages, so ranks on either path meet.
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import math
import os
import time
from dataclasses import dataclass
from sys import getrefcount

import numpy as np
from mpi4py import MPI

from mpiml.collectives import model
from mpiml.collectives.select import current_tuning as _current_tuning
from mpiml.errors import MismatchError
from mpiml.runtime import partition
from mpiml.runtime.jit import kernel

OPS = ("sum", "min", "max")
ALGORITHMS = ("auto", "sparse", "dense", "allgather", "reduce_scatter")
INT32_LIMIT = 2**31 - 1

# What the last call on this process did: "path" (sparse_allgather, sparse, sparse+dense_allgather, dense
# or local) and "bytes_sent" (what this rank sent: its head message, with its nonzeros when eager, p-1
# times; a second round's nonzeros p-1 times; the reduce-scatter's alltoallv pieces and its range p-1
# times; a dense switch's allreduce as 2 (p-1)/p of the vector, what a bandwidth-optimal one sends).
STATS: dict = {"path": None, "bytes_sent": 0}


def index_dtype(size: int) -> np.dtype:
    """The indices' type on the wire: int32 below 2^31 elements, else int64."""
    return np.dtype(np.int32 if size <= INT32_LIMIT else np.int64)


@functools.lru_cache(maxsize=32)
def ranges(size: int, p: int) -> np.ndarray:
    """Boundaries of the ``p`` index ranges (range ``j``: ``bounds[j]:bounds[j+1]``; read-only, cached)."""
    bounds = partition.array_split(size, p)
    bounds.flags.writeable = False
    return bounds


@kernel
def _extent_kernel(indices):
    """The smallest and the largest of ``indices`` (not empty), in one pass."""
    lo = hi = indices[0]
    for k in range(1, indices.size):
        x = indices[k]
        if x < lo:
            lo = x
        elif x > hi:
            hi = x
    return lo, hi


def extent(indices) -> tuple[int, int]:
    """``(min, max)`` of non-empty integer ``indices``: one compiled pass for int32/int64 (the argument
    check of every call), numpy's two reductions otherwise (the reference)."""
    from mpiml.runtime.jit import compiled

    if indices.dtype in (np.int32, np.int64) and compiled():
        lo, hi = _extent_kernel(indices)
        return int(lo), int(hi)
    return int(indices.min()), int(indices.max())


def canonical(indices, values, op, wire) -> tuple[np.ndarray, np.ndarray]:
    """``(indices, values)`` sorted by index, duplicates combined by ``op`` in input order.

    ``indices`` are valid (checked by the caller); the result's indices have dtype ``wire``.
    """
    n = indices.size
    if n < 2 or bool(np.all(indices[1:] > indices[:-1])):   # already sorted and unique: no copy of the work
        return indices.astype(wire, copy=False), values
    order = np.argsort(indices, kind="stable")
    idx = indices[order]
    val = values[order]
    first = np.empty(n, dtype=bool)
    first[0] = True
    np.not_equal(idx[1:], idx[:-1], out=first[1:])
    if first.all():
        return idx.astype(wire, copy=False), val
    slot = np.cumsum(first) - 1
    out = val[first].copy()
    rest = ~first
    op.func.at(out, slot[rest], val[rest])    # unbuffered: duplicates combined one by one, in input order
    return idx[first].astype(wire, copy=False), out


def route(idx, bounds) -> np.ndarray:
    """How many of the sorted ``idx`` fall in each range: ``p`` counts."""
    return np.diff(np.searchsorted(idx, bounds.astype(idx.dtype, copy=False)))   # no int64 copy of idx


def merge(idx, val, counts, p: int, op) -> tuple[np.ndarray, np.ndarray]:
    """Combine the pieces ``counts[r]`` long (rank ``r``'s, in rank order) of one range.

    Each piece has sorted unique indices. The result: the sorted union of their indices
    and, at each, the pieces' values combined in rank order (``sum``: ``0 + v_0 + v_1 ...``
    over the ranks holding it; ``min``/``max`` also take the implicit zero of a rank that
    holds no value there).
    """
    total = idx.size
    if total == 0:
        return idx, val
    if op.label == "sum" and _compiled_sum(val.dtype):
        starts = np.zeros(p, dtype=np.int64)
        np.cumsum(counts[:-1], out=starts[1:])
        union, acc = np.empty(total, dtype=idx.dtype), np.empty(total, dtype=val.dtype)
        n = _merge_sum_kernel(np.ascontiguousarray(idx), np.ascontiguousarray(val), starts, starts,
                              np.asarray(counts, dtype=np.int64), union, acc, np.empty_like(union),
                              np.empty_like(acc))
        return union[:n], acc[:n]
    # the numpy reference: the pieces are sorted runs: a stable sort (timsort) merges them in one pass, keeping rank order
    order = np.argsort(idx, kind="stable")
    ordered = idx[order]
    first = np.empty(total, dtype=bool)
    first[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=first[1:])
    union = ordered[first]
    pos = np.empty(total, dtype=np.int64)
    pos[order] = np.cumsum(first) - 1
    starts = np.concatenate(([0], np.cumsum(counts)))
    name = op.label
    if name == "sum":
        acc = np.zeros(union.size, dtype=val.dtype)
        for r in range(p):
            a, b = starts[r], starts[r + 1]
            if b > a:
                acc[pos[a:b]] += val[a:b]   # unique positions within a piece: no duplicate writes
        return union, acc
    acc = np.zeros(union.size, dtype=val.dtype)
    holders = np.zeros(union.size, dtype=np.int64)
    started = np.zeros(union.size, dtype=bool)
    for r in range(p):
        a, b = starts[r], starts[r + 1]
        if b == a:
            continue
        at, v = pos[a:b], val[a:b]
        fresh = ~started[at]
        acc[at[fresh]] = v[fresh]
        old = at[~fresh]
        acc[old] = op.func(acc[old], v[~fresh])
        started[at] = True
        holders[at] += 1
    missing = holders < p
    acc[missing] = op.func(acc[missing], np.zeros(1, dtype=val.dtype))
    return union, acc


def _compiled_sum(dtype) -> bool:
    """Whether the compiled kernels serve ``dtype``: float32/float64 (gradients; one compilation each)."""
    from mpiml.runtime.jit import compiled

    return dtype in (np.float32, np.float64) and compiled()


@kernel
def _merge_sum_kernel(ix, vx, ioff, voff, counts, union, acc, back_u, back_a):
    """:func:`merge` for ``sum``: piece ``r`` is ``ix[ioff[r]:][:counts[r]]`` and ``vx[voff[r]:][:counts[r]]``
    (one flat array, or the message workspace seen as one array); the pieces merged one after the other
    into the running union (rank order: ``0 + v_0 + v_1 ...``, in the values' own type); the union's length.
    ``union``/``acc`` (the result) and ``back_u``/``back_a`` (scratch): each at least as long as all pieces."""
    p = counts.size   # 0.0 + v: a -0.0 becomes +0.0 as in the numpy reference's zeros + v (exact in float32 too)
    cur_u, cur_a, nxt_u, nxt_a = union, acc, back_u, back_a
    if p % 2 == 0:   # an even number of merges after the first piece's copy ends in ``union``
        cur_u, cur_a, nxt_u, nxt_a = back_u, back_a, union, acc
    n = 0
    io, vo = ioff[0], voff[0]
    for k in range(counts[0]):
        cur_u[n] = ix[io + k]
        cur_a[n] = 0.0 + vx[vo + k]
        n += 1
    for r in range(1, p):
        io, vo, end = ioff[r], voff[r], counts[r]
        i, k, m = 0, 0, 0
        while i < n and k < end:   # no branch on the data: two random pieces interleave unpredictably
            a, b = cur_u[i], ix[io + k]
            va, vb = cur_a[i], vx[vo + k]   # loaded either way, so the choices below are selects
            take_a, take_b = a <= b, b <= a
            nxt_u[m] = min(a, b)
            # the union's value + 0.0 where the piece lacks the index: the same bits (never -0.0: it
            # began as 0.0 + v); 0.0 + v where only the piece has it; va + vb where both do
            nxt_a[m] = (va if take_a else 0.0) + (vb if take_b else 0.0)
            i += take_a
            k += take_b
            m += 1
        while i < n:
            nxt_u[m] = cur_u[i]
            nxt_a[m] = cur_a[i]
            i += 1
            m += 1
        while k < end:
            nxt_u[m] = ix[io + k]
            nxt_a[m] = 0.0 + vx[vo + k]
            k += 1
            m += 1
        n = m
        cur_u, cur_a, nxt_u, nxt_a = nxt_u, nxt_a, cur_u, cur_a
    return n


@kernel
def _scatter_sum_kernel(ix, vx, ioff, voff, counts, out):
    """``out[idx] += val`` piece by piece in rank order (pieces as in :func:`_merge_sum_kernel`)."""
    for r in range(counts.size):
        io, vo = ioff[r], voff[r]
        for k in range(counts[r]):
            out[ix[io + k]] += vx[vo + k]


def scatter_sum(idx, val, counts, out) -> np.ndarray:
    """``out`` (zeroed here) plus the pieces ``counts[r]`` long, in rank order: the dense form of
    :func:`merge` for ``sum`` (each piece's indices unique, so ``0 + v_0 + v_1 ...`` at every index)."""
    out.fill(0)
    if _compiled_sum(val.dtype) and val.dtype == out.dtype:
        starts = np.zeros(len(counts), dtype=np.int64)
        np.cumsum(counts[:-1], out=starts[1:])
        _scatter_sum_kernel(idx, val, starts, starts, np.asarray(counts, dtype=np.int64), out)
        return out
    start = 0
    for n in counts.tolist():   # the numpy reference: one buffered add per piece (unique indices in a piece)
        out[idx[start:start + n]] += val[start:start + n]
        start += n
    return out


def densify(idx, val, size: int, out=None) -> np.ndarray:
    """The dense vector with ``val`` at ``idx`` (unique) and zeros elsewhere (into ``out`` if given)."""
    if out is None:
        out = np.zeros(size, dtype=val.dtype)
    else:
        out[...] = 0
    out[idx] = val
    return out


@functools.lru_cache(maxsize=64)
def digest(dtype, size: int, op_label: str) -> int:
    """A 62-bit digest of what every rank must agree on (the same in every process)."""
    raw = hashlib.blake2b(repr((np.dtype(dtype).str, int(size), op_label)).encode(), digest_size=8).digest()
    return int.from_bytes(raw, "little") >> 2


@dataclass
class Result:
    """What :func:`run` gives back: the sorted result ``indices`` and ``values``, or ``dense``."""

    indices: np.ndarray | None
    values: np.ndarray | None
    dense: np.ndarray | None
    path: str
    bytes_sent: int


def pack(idx, val) -> np.ndarray:
    """Index and value side by side, one record each (one message instead of two)."""
    rec = np.empty(idx.size, dtype=_record(idx.dtype, val.dtype))
    rec["i"], rec["v"] = idx, val
    return rec


def _alltoallv(comm, send, send_counts, recv_counts):
    """One alltoallv of records, moved as bytes (every dtype, float16 included)."""
    item = send.dtype.itemsize
    recv = np.empty(int(recv_counts.sum()), dtype=send.dtype)
    sc, rc = send_counts * item, recv_counts * item
    sd = np.concatenate(([0], np.cumsum(sc)[:-1]))
    rd = np.concatenate(([0], np.cumsum(rc)[:-1]))
    comm.Alltoallv([send.view(np.uint8), (sc, sd), MPI.BYTE], [recv.view(np.uint8), (rc, rd), MPI.BYTE])
    return recv


def run(comm, indices, values, size: int, op, algorithm: str, dense_out, error=None, allreduce=None) -> Result:
    """One sparse allreduce on ``comm`` (at least two ranks; collective).

    ``indices``/``values``: this rank's valid 1-D input (``error``: this rank's argument
    error instead, raised on every rank after the first exchange). ``dense_out``: a dense
    array to write the result into, ``True`` for a new one, ``False`` for ``indices,
    values``. ``allreduce``: the dense allreduce of the dense switch (``mpiml.allreduce``).
    """
    if _PENDING:
        _settle()
    p, rank = comm.Get_size(), comm.Get_rank()
    wire = index_dtype(size)
    isz = wire.itemsize
    vsz = values.dtype.itemsize if error is None else 0
    hw = HEAD + p
    fast = error is None and _compiled_sum(values.dtype)
    # round one, point to point, one message per pair (no count exchange first): a head (digest, error
    # flag, eager flag, counts per range) and, when this rank expects the split allgather (``eager``),
    # its indices and values right behind it, packed once into this rank's row of a reused workspace;
    # every other rank's message is received into its row (posted at once, completed in any order)
    n = indices.size if error is None else 0
    ws = _workspace(p, 8 * hw + _payload(n, isz, vsz))
    base = rank * ws.rowbytes
    head = ws.tab[rank]
    packed = error is None and fast and indices.dtype in (np.int32, np.int64) and _pack_kernel(
        indices, ranges(size, p), ws.flat(wire), (base + 8 * hw) // isz, head[HEAD:hw]) >= 0
    if packed:
        ws.u8[base + 8 * hw + _pad(n * isz):][:n * vsz] = values.view(np.uint8)
    elif error is None:   # the reference: canonical order, then counts and bytes by numpy
        idx, val = canonical(indices, values, op, wire)
        idx, val, n = np.ascontiguousarray(idx), np.ascontiguousarray(val), idx.size
        head[HEAD:hw] = route(idx, ranges(size, p))
        at = base + 8 * hw
        ws.u8[at:at + n * isz] = idx.view(np.uint8)
        ws.u8[at + _pad(n * isz):][:n * vsz] = val.view(np.uint8)
    else:
        head[HEAD:hw] = 0
    payload = _payload(n, isz, vsz)
    eager = error is None and payload <= _eager_bytes(p) and _eager_guess(
        head[HEAD:hw], n, size, vsz, isz, algorithm, dense_out is not False)
    head[0] = digest(values.dtype, size, op.label) if error is None else -1
    head[1] = 0 if error is None else 1
    head[2] = 1 if eager else 0
    dtype = values.dtype if error is None else None
    return _exchange(comm, p, rank, ws, n, payload if eager else 0, hw, wire, dtype, size, op, algorithm, dense_out,
                     error, allreduce, fast)


def _exchange(comm, p, rank, ws, n, payload, hw, wire, dtype, size, op, algorithm, dense_out, error, allreduce,
              fast, receives=None) -> Result:
    """From this rank's message in its row of ``ws`` (``payload``: the bytes of nonzeros behind its head,
    0 when not eager) to the result: round one, the decision every rank takes from the heads, the rest.
    ``receives``: persistent receives into the other rows of ``ws`` (:meth:`_Plan.arm`), else posted here."""
    base = rank * ws.rowbytes
    mine = ws.u8[base:base + 8 * hw + payload]
    if receives is None:
        u8, rowbytes = ws.u8, ws.rowbytes
        receives = [comm.Irecv([u8[source * rowbytes:(source + 1) * rowbytes], MPI.BYTE], source, TAG_GATHER)
                    for source in range(p) if source != rank]
    else:
        MPI.Prequest.Startall(receives)
    sends, message = [], [mine, MPI.BYTE]
    for dest in range(p):
        if dest != rank:
            sends.append(comm.Isend(message, dest, TAG_GATHER))
    MPI.Request.Waitall(receives)
    sent = (p - 1) * mine.size
    isz, vsz = wire.itemsize, (dtype.itemsize if dtype is not None else 0)
    bad = _heads(ws, hw, isz, vsz, fast)
    if bad:
        MPI.Request.Waitall(sends)
        _check_table(comm, ws.tab[:, :hw], error)
    if not ws.late and algorithm in ("auto", "sparse", "allgather"):
        # every rank holding nonzeros has sent them already, each expecting the split allgather from its own
        # counts: only the local combination is left, cheaper than any other way from here (the same
        # decision on every rank: it reads the heads)
        _PENDING.extend(sends)   # completed while this rank combines: waited for at the next call's start
        return _combine(ws, wire, dtype, size, op, dense_out, fast, sent)
    how = model.sparse_choice((ws.rows.tolist(), ws.cols.tolist(), ws.own.tolist()), size, vsz, isz,
                              algorithm=algorithm, dense_out=dense_out is not False)
    if how == "allgather":
        ws, sent = _second_round(comm, ws, hw, isz, vsz, fast, sends, sent)
        return _combine(ws, wire, dtype, size, op, dense_out, fast, sent)
    MPI.Request.Waitall(sends)   # an eager rank's nonzeros were received with the heads: nothing to drain
    at = base + 8 * hw
    idx = ws.u8[at:at + n * isz].view(wire)
    val = ws.u8[at + _pad(n * isz):][:n * vsz].view(dtype)
    if how == "dense":
        if allreduce is None:
            from mpiml.collectives.api import allreduce
        x = densify(idx, val, size, None if isinstance(dense_out, bool) else dense_out)
        allreduce(x, op=op, comm=comm, out=x)
        sent += model.allreduce_bytes(x.nbytes, p)
        if dense_out is False:
            return Result(np.arange(size, dtype=wire), x, None, "dense", sent)
        return Result(None, None, x, "dense", sent)
    return _reduce_scatter(comm, idx, val, ws.tab[:, HEAD:hw], size, op, algorithm, dense_out, sent)


class _Plan:
    """What :func:`quick` resolves once per (communicator, size, op, algorithm, dtypes, result form)."""

    __slots__ = ("user", "comm", "p", "rank", "wire", "isz", "vsz", "hw", "bounds", "digest", "op", "dtype",
                 "algorithm", "size", "room", "eager", "receives", "armed")

    def __init__(self, user, comm, size, op, algorithm, dtype, wire):
        self.user, self.comm, self.size, self.op, self.algorithm, self.dtype = user, comm, size, op, algorithm, dtype
        self.p, self.rank = comm.Get_size(), comm.Get_rank()
        self.wire, self.isz, self.vsz, self.hw = wire, wire.itemsize, dtype.itemsize, HEAD + self.p
        self.bounds = np.ascontiguousarray(ranges(size, self.p), dtype=np.int64)
        self.digest, self.room, self.eager = digest(dtype, size, op.label), _eager_bytes(self.p), {}
        self.receives, self.armed = None, None

    def eager_for(self, key, tuning, counts, dense: bool) -> bool:
        """:func:`_eager_guess`'s decision for ``key`` (the counts to a quarter octave) under ``tuning``.

        Kept per plan rather than asked of :func:`_eager_guess`: its key (a counts maximum, the model's
        parameters, nine fields) made a cold call 0.04-0.05 ms slower of 0.23-0.31 in 4 of 5 interleaved
        pairs of benchmarks/sparse_allreduce.py at p = 2 (level in the fifth)."""
        if len(self.eager) > 256:
            self.eager.clear()
        decision = model.sparse_eager(counts.tolist(), self.size, self.vsz, self.isz, algorithm=self.algorithm,
                                      dense_out=dense, params=model.sparse_params())
        self.eager[key] = (tuning, decision)
        return decision

    def arm(self, ws):
        """Persistent receives of every other rank's message into its row of ``ws`` (started per call)."""
        self.free()
        rowbytes = ws.rowbytes
        self.receives = [self.comm.Recv_init([ws.u8[r * rowbytes:(r + 1) * rowbytes], MPI.BYTE], r, TAG_GATHER)
                         for r in range(self.p) if r != self.rank]
        self.armed = ws

    def free(self):
        """Free the persistent receives (all inactive between calls)."""
        if self.receives and not MPI.Is_finalized():
            for request in self.receives:
                request.Free()
        self.receives, self.armed = None, None


_PLANS: dict = {}
_ENVIRON = getattr(os.environ, "_data", None)
_KERNELS_KEY = os.environ.encodekey("MPIML_KERNELS") if isinstance(_ENVIRON, dict) and hasattr(
    os.environ, "encodekey") else None


def _drop_plans() -> None:
    """Forget every plan, freeing its persistent receives."""
    for plan in _PLANS.values():
        if plan:
            plan.free()
    _PLANS.clear()


atexit.register(_drop_plans)   # before MPI is finalized (mpi4py's own exit hook was registered first)


def _plan(comm, size, op, algorithm, dtype, itype):
    """A new :class:`_Plan`, or False where :func:`quick` leaves the call to the general path."""
    from mpiml.collectives.ops import resolve_op
    from mpiml.runtime.comm import context_of
    from mpiml.runtime.jit import compiled

    if (type(size) is not int or size < 0 or algorithm not in ALGORITHMS or op not in OPS or itype not in _INDEX_TYPES
            or dtype not in (np.float32, np.float64) or not compiled()):
        return False
    c = context_of(comm).comm
    if c.Get_size() == 1:
        return False
    return _Plan(comm, c, size, resolve_op(op), algorithm, dtype, index_dtype(size))


_INDEX_TYPES = (np.dtype(np.int32), np.dtype(np.int64))


def quick(indices, values, size, op, algorithm, comm, out, dense):
    """The common call (float sums, sorted unique int32/int64 indices, two ranks or more, check mode off)
    with its per-shape work done once and its checks, order test, routing and packing in one compiled
    pass (:func:`_quick_pack_kernel`); the result as :func:`mpiml.sparse_allreduce` (``dense``) or
    :func:`mpiml.sparse_allreduce_coo` return it, or None, before any message, for the general path
    (which checks the arguments and raises their errors on every rank)."""
    if type(indices) is not np.ndarray or type(values) is not np.ndarray or type(op) is not str or (
            _KERNELS_KEY is None or _ENVIRON.get(_KERNELS_KEY) is not None):
        return None
    key = (id(comm), size, op, algorithm, values.dtype, indices.dtype, dense)
    plan = _PLANS.get(key)
    if plan is None or (plan is not False and plan.user is not comm):
        if len(_PLANS) > 64:
            _drop_plans()
        plan = _PLANS[key] = _plan(comm, size, op, algorithm, values.dtype, indices.dtype)
    if plan is False:
        return None
    n = indices.size
    if indices.ndim != 1 or values.ndim != 1 or values.size != n or (n > 1 and (
            values.strides[0] != plan.vsz or indices.strides[0] != indices.itemsize)):
        return None
    if dense:
        if out is None:
            out = np.empty(size, dtype=values.dtype)
        elif (type(out) is not np.ndarray or out.shape != (size,) or out.dtype != values.dtype
              or not out.flags.c_contiguous or not out.flags.writeable or np.may_share_memory(out, values)
              or np.may_share_memory(out, indices)):
            return None
    if _PENDING:
        _settle()
    p, rank, hw, wire = plan.p, plan.rank, plan.hw, plan.wire
    payload = _pad(n * plan.isz) + _pad(n * plan.vsz)
    ws = _WORKSPACES.get(p)
    if ws is None or ws.rowbytes < 8 * hw + payload:
        ws = _workspace(p, 8 * hw + payload)
    at = rank * ws.rowbytes + 8 * hw
    head = ws.tab[rank]
    top = _quick_pack_kernel(indices, values, plan.bounds, ws.flat(wire), ws.flat(values.dtype), at // plan.isz,
                             (at + _pad(n * plan.isz)) // plan.vsz, head, size, plan.digest)
    if top < 0:   # not sorted and unique, or out of range: the general path's canonical order or error
        return None
    if payload > plan.room or algorithm in ("dense", "reduce_scatter"):
        eager = False
    elif algorithm == "allgather":
        eager = True
    else:
        tuning, key = _current_tuning(), (int(4 * math.log2(n + 1)), int(4 * math.log2(top + 1)))
        hit = plan.eager.get(key)
        eager = hit[1] if hit is not None and hit[0] is tuning else plan.eager_for(key, tuning, head[HEAD:hw], dense)
    head[2] = eager
    if plan.armed is not ws:
        plan.arm(ws)
    result = _exchange(plan.comm, p, rank, ws, n, payload if eager else 0, hw, wire, values.dtype, size, plan.op,
                       algorithm, out if dense else False, None, None, True, plan.receives)
    STATS["path"], STATS["bytes_sent"] = result.path, result.bytes_sent
    return result.dense if dense else (result.indices, result.values)


@kernel
def _quick_pack_kernel(indices, values, bounds, wire, vals, at, vat, head, size, key):
    """This rank's message into its row: the digest and no-error flag in ``head``, the counts per range
    after them, ``indices`` (as the wire's type) from ``wire[at]`` and ``values`` from ``vals[vat]``, in
    one pass; the largest count, -1 as soon as an index is not above the one before (not sorted and
    unique), -2 for an index outside ``[0, size)``."""
    n = indices.size
    p = bounds.size - 1
    if n > 0 and indices[0] < 0:
        return -2
    head[0] = key
    head[1] = 0
    for j in range(p):
        head[HEAD + j] = 0
    j = 0
    c = 0
    for k in range(n):
        x = indices[k]
        if k > 0 and x <= indices[k - 1]:
            return -1
        if x >= size:
            return -2
        while x >= bounds[j + 1]:
            head[HEAD + j] = c
            c = 0
            j += 1
        c += 1
        wire[at + k] = x
        vals[vat + k] = values[k]
    head[HEAD + j] = c
    top = 0
    for j in range(p):
        top = max(top, head[HEAD + j])
    return top


def _reduce_scatter(comm, idx, val, C, size, op, algorithm, dense_out, sent) -> Result:
    """SparCML's sparse reduce-scatter: each range's pieces to its owner, combined there in rank order,
    then every owner's range to every other rank (records or a dense block, whichever the model prices
    lower for that range; a header says which)."""
    p, rank = comm.Get_size(), comm.Get_rank()
    bounds = ranges(size, p)
    wire, isz, vsz = idx.dtype, idx.dtype.itemsize, val.dtype.itemsize
    send_counts = C[rank].copy()
    recv_counts = C[:, rank].copy()
    got = _alltoallv(comm, pack(idx, val), send_counts, recv_counts)
    sent += int((send_counts.sum() - send_counts[rank]) * (isz + vsz))
    lo, hi = int(bounds[rank]), int(bounds[rank + 1])
    mine_idx, mine_val = merge(got["i"], got["v"], recv_counts, p, op)
    dense = algorithm == "auto" and model.sparse_range_dense(mine_idx.size, hi - lo, vsz, isz)
    payload = np.zeros(HEADER + (hi - lo) * vsz if dense else HEADER + mine_idx.size * (isz + vsz), np.uint8)
    payload[:HEADER].view(np.int64)[0] = 1 if dense else 0
    if dense:
        payload[HEADER:].view(val.dtype)[mine_idx - lo] = mine_val
    else:
        records = payload[HEADER:].view(_record(wire, val.dtype))
        records["i"], records["v"] = mine_idx, mine_val
    requests = [comm.Isend([payload, MPI.BYTE], dest, TAG_RANGES) for dest in range(p) if dest != rank]
    pieces = []
    for source in range(p):
        if source == rank:
            pieces.append(payload)
            continue
        status = MPI.Status()
        message = comm.Mprobe(source, TAG_RANGES, status)
        piece = np.empty(status.Get_count(MPI.BYTE), dtype=np.uint8)
        message.Recv([piece, MPI.BYTE])
        pieces.append(piece)
    MPI.Request.Waitall(requests)
    sent += (p - 1) * payload.size
    return _assemble(pieces, bounds, wire, val.dtype, size, dense_out, sent)


HEAD = 3   # a head's fields before the counts: digest, error flag, eager flag
EAGER_BYTES = 1 << 20     # the most a rank sends behind its head: every receiver has that room per sender
EAGER_BUDGET = 32 << 20   # ... within this much workspace in all (fewer bytes per sender at large p)


def _pad(nbytes: int) -> int:
    """``nbytes`` rounded up to whole 8-byte words (the values after the indices stay aligned)."""
    return (nbytes + 7) & ~7


def _payload(n: int, isz: int, vsz: int) -> int:
    """Bytes of ``n`` nonzeros behind a head: the indices, then the values, each padded to 8 bytes."""
    return _pad(n * isz) + _pad(n * vsz)


def _eager_bytes(p: int) -> int:
    """The room every rank keeps per sender for a payload sent with the head (the same on every rank)."""
    return min(EAGER_BYTES, EAGER_BUDGET // max(p, 1)) & ~7


class _Workspace:
    """Reused buffers of one rank count: ``p`` rows of ``rowbytes`` (rank ``r``'s message in row ``r``:
    its head, its indices, its values), views of them by type, and the per-call summaries."""

    def __init__(self, p: int, rowbytes: int, old=None):
        self.p, self.rowbytes = p, rowbytes
        self.u8 = np.empty(p * rowbytes, dtype=np.uint8)
        if old is not None:   # keep what is already there (heads and payloads received this call)
            self.u8.reshape(p, rowbytes)[:, :old.rowbytes] = old.u8.reshape(p, old.rowbytes)
        self.tab = self.u8.view(np.int64).reshape(p, rowbytes // 8)
        self._views = {}
        self.rows, self.cols, self.own = np.zeros(p), np.zeros(p), np.zeros(p)
        self.ioff, self.voff, self.counts = (np.zeros(p, dtype=np.int64) for _ in range(3))
        self.late, self.total = False, 0
        self.back, self.results = {}, {}

    def flat(self, dtype) -> np.ndarray:
        """The whole workspace as one array of ``dtype`` (8 divides ``rowbytes``, so rows start aligned)."""
        view = self._views.get(dtype)
        if view is None:
            view = self._views[dtype] = self.u8.view(dtype)
        return view

    def result(self, wire, dtype, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Index and value arrays of at least ``n`` elements for a COO result: the last ones when no caller
        holds them (or a view of them) any more, else new ones. Reused memory is mapped already: a fresh
        150 KB result costs its page faults, 25 us after a training step's large temporaries."""
        pair = self.results.get((wire, dtype))
        if pair is not None and pair[0].size >= n and getrefcount(pair[0]) == 2 and getrefcount(pair[1]) == 2:
            return pair   # 2: the tuple's reference and the argument's; a result handed out holds a third
        size = max(n, 0 if pair is None else pair[0].size) + (n >> 3)
        pair = self.results[wire, dtype] = (np.empty(size, dtype=wire), np.empty(size, dtype=dtype))
        return pair

    def scratch(self, dtype, n: int) -> np.ndarray:
        """A reused scratch array of at least ``n`` elements of ``dtype`` (the merges' ping-pong half)."""
        buf = self.back.get(dtype)
        if buf is None or buf.size < n:
            buf = self.back[dtype] = np.empty(max(n, 2 * (0 if buf is None else buf.size)), dtype=dtype)
        return buf


_WORKSPACES: dict = {}


def _workspace(p: int, need: int) -> _Workspace:
    """This process's workspace for ``p`` ranks with rows of at least ``need`` bytes (and the eager room)."""
    ws = _WORKSPACES.get(p)
    if ws is None or ws.rowbytes < need:
        ws = _keep(_Workspace(p, _pad(max(need, 8 * (HEAD + p) + _eager_bytes(p)))))
    return ws


def _keep(ws: _Workspace) -> _Workspace:
    """``ws``, kept for the next calls unless it is larger than :data:`EAGER_BUDGET` twice (then used once)."""
    if ws.u8.nbytes <= 2 * EAGER_BUDGET or ws.p not in _WORKSPACES:
        _WORKSPACES[ws.p] = ws
    return ws


@kernel
def _pack_kernel(indices, bounds, wire, at, counts):
    """``indices`` into ``wire[at:]`` (the wire's integer type) and their counts per range into ``counts``,
    in one pass; the largest count, or -1 as soon as an index is not above the one before (not sorted
    and unique: the caller takes the reference path, :func:`canonical`)."""
    for j in range(counts.size):
        counts[j] = 0
    j = 0
    for k in range(indices.size):
        x = indices[k]
        if k > 0 and x <= indices[k - 1]:
            return -1
        while x >= bounds[j + 1]:
            j += 1
        counts[j] += 1
        wire[at + k] = x
    top = 0
    for j in range(counts.size):
        top = max(top, counts[j])
    return top


_EAGER: dict = {}


def _eager_guess(counts, n, size, vsz, isz, algorithm, dense_out) -> bool:
    """:func:`mpiml.collectives.model.sparse_eager`, remembered per (model in force, shape of the call,
    counts to a quarter octave): a guess made by this rank alone, so rounding it costs at worst a round
    or unused bytes, never bits."""
    if algorithm in ("allgather", "dense", "reduce_scatter"):
        return algorithm == "allgather"
    prm = model.sparse_params()
    top = int(counts.max()) if counts.size else 0
    key = (id(prm), size, counts.size, vsz, isz, algorithm, dense_out, int(4 * math.log2(n + 1)),
           int(4 * math.log2(top + 1)))
    hit = _EAGER.get(key)
    if hit is None or hit[0] is not prm:
        if len(_EAGER) > 256:
            _EAGER.clear()
        hit = _EAGER[key] = (prm, model.sparse_eager(counts.tolist(), size, vsz, isz, algorithm=algorithm,
                                                      dense_out=dense_out, params=prm))
    return hit[1]


@kernel
def _heads_kernel(tab, hw, isz, vsz, rowbytes, rows, cols, own, ioff, voff, counts):
    """From every rank's head in ``tab`` (the workspace's rows as int64): the count table's row and
    column sums and diagonal, each rank's count and where its indices and values sit (in elements of
    ``isz`` and ``vsz`` bytes, both dividing 8); 1 when a rank has an error or the digests differ, plus 2
    when a rank holding nonzeros did not send them with its head (a second round if the allgather is chosen),
    plus 4 times the nonzeros of all ranks."""
    p = tab.shape[0]
    head = hw - p
    bad = 0
    late = 0
    total = 0
    for j in range(p):
        cols[j] = 0.0
    for r in range(p):
        if tab[r, 1] != 0 or tab[r, 0] != tab[0, 0]:
            bad = 1
        n = 0
        for j in range(p):
            c = tab[r, head + j]
            n += c
            cols[j] += c
        counts[r] = n
        total += n
        if n > 0 and tab[r, 2] == 0:
            late = 2
        rows[r] = n
        own[r] = tab[r, head + r]
        at = r * rowbytes + 8 * hw
        ioff[r] = at // isz
        voff[r] = (at + ((n * isz + 7) // 8) * 8) // vsz
    return bad + late + 4 * total


def _heads(ws, hw, isz, vsz, fast) -> bool:
    """Read the heads into ``ws``'s summaries (:func:`_heads_kernel`, or its numpy reference, where the
    offsets are in bytes; ``ws.late``: a rank's nonzeros did not come with its head; ``ws.total``: the
    nonzeros of all ranks); True when a rank has an error or the ranks disagree."""
    if fast:
        code = _heads_kernel(ws.tab, hw, isz, vsz, ws.rowbytes, ws.rows, ws.cols, ws.own, ws.ioff, ws.voff,
                             ws.counts)
        ws.late, ws.total = (code & 2) == 2, code >> 2
        return (code & 1) == 1
    p = ws.p
    table = ws.tab[:, :hw]
    C = table[:, HEAD:]
    ws.counts[:] = C.sum(axis=1)
    ws.rows[:], ws.cols[:], ws.own[:] = ws.counts, C.sum(axis=0), C.diagonal()
    ws.ioff[:] = np.arange(p) * ws.rowbytes + 8 * hw
    ws.voff[:] = ws.ioff + (ws.counts * isz + 7) // 8 * 8
    ws.late = bool(((table[:, 2] == 0) & (ws.counts > 0)).any())
    ws.total = int(ws.counts.sum())
    return bool(table[:, 1].any() or (table[:, 0] != table[0, 0]).any())


_PENDING: list = []   # the last split allgather's sends (its receivers posted their receives in that call)


def _settle() -> None:
    """Complete the last call's sends before this rank's row is written again."""
    MPI.Request.Waitall(_PENDING)
    _PENDING.clear()


@atexit.register
def _settle_at_exit() -> None:
    """Complete the last call's sends before MPI is finalized (bounded: a peer that died never receives)."""
    if not _PENDING or MPI.Is_finalized():
        return
    deadline = time.monotonic() + 10.0
    while not MPI.Request.Testall(_PENDING):
        if time.monotonic() > deadline:
            return
        time.sleep(1e-3)
    _PENDING.clear()


def _second_round(comm, ws, hw, isz, vsz, fast, sends, sent):
    """The split allgather's second round: the ranks that did not send their nonzeros with their head
    (not eager) send them now, into rows grown to hold them; ``(workspace, bytes sent)``."""
    p, rank = ws.p, comm.Get_rank()
    late = [r for r in range(p) if ws.tab[r, 2] == 0 and ws.counts[r] > 0]
    need = 8 * hw + max(_payload(int(ws.counts[r]), isz, vsz) for r in late)
    if need > ws.rowbytes:   # the old rows stay alive until this rank's round-one sends complete
        ws = _keep(_Workspace(p, _pad(need), ws))
        _heads(ws, hw, isz, vsz, fast)   # offsets in the new rows
    requests = list(sends)
    for source in late:
        at = source * ws.rowbytes + 8 * hw
        body = ws.u8[at:at + _payload(int(ws.counts[source]), isz, vsz)]
        if source == rank:
            requests += [comm.Isend([body, MPI.BYTE], dest, TAG_GATHER + 1) for dest in range(p) if dest != rank]
            sent += (p - 1) * body.size
        else:
            requests.append(comm.Irecv([body, MPI.BYTE], source, TAG_GATHER + 1))
    MPI.Request.Waitall(requests)
    return ws, sent


def _combine(ws, wire, dtype, size, op, dense_out, fast, sent) -> Result:
    """SparCML's split allgather, the local part: every rank's nonzeros are in its row of ``ws``; each rank
    combines all ``p`` pieces itself in rank order, the same function of the same data on every rank, so
    the same bits. Compiled for float sums, straight from the rows; else the pieces are joined first."""
    p, total = ws.p, ws.total
    if fast and op.label == "sum":
        ix, vx = ws.flat(wire), ws.flat(dtype)
        if dense_out is not False:
            out = np.empty(size, dtype=dtype) if dense_out is True else dense_out
            out.fill(0)
            _scatter_sum_kernel(ix, vx, ws.ioff, ws.voff, ws.counts, out)
            return Result(None, None, out, "sparse_allgather", sent)
        union, acc = ws.result(wire, dtype, total)
        m = _merge_sum_kernel(ix, vx, ws.ioff, ws.voff, ws.counts, union, acc, ws.scratch(wire, total),
                              ws.scratch(dtype, total))
        return Result(union[:m], acc[:m], None, "sparse_allgather", sent)
    isz, vsz = wire.itemsize, np.dtype(dtype).itemsize
    if fast:   # the kernels' offsets are in elements
        ibytes, vbytes = ws.ioff * isz, ws.voff * vsz
    else:
        ibytes, vbytes = ws.ioff, ws.voff
    counts = ws.counts.copy()
    all_idx = np.concatenate([ws.u8[a:a + c * isz].view(wire) for a, c in zip(ibytes.tolist(), counts.tolist())])
    all_val = np.concatenate([ws.u8[a:a + c * vsz].view(dtype) for a, c in zip(vbytes.tolist(), counts.tolist())])
    if dense_out is not False and op.label == "sum":
        out = np.empty(size, dtype=dtype) if dense_out is True else dense_out
        return Result(None, None, scatter_sum(all_idx, all_val, counts, out), "sparse_allgather", sent)
    union, acc = merge(all_idx, all_val, counts, p, op)
    if dense_out is False:
        return Result(union, acc, None, "sparse_allgather", sent)
    return Result(None, None, densify(union, acc, size, None if dense_out is True else dense_out),
                  "sparse_allgather", sent)


HEADER = 8          # bytes before a range's body: 1 = a dense block, 0 = index-value records
TAG_RANGES = 1901   # the reduced ranges' messages (no other mpiml algorithm uses this tag)
TAG_GATHER = 1902   # round one's messages (+ 1: round two's nonzeros)


def _record(wire, dtype):
    return np.dtype([("i", wire), ("v", dtype)])


def _assemble(pieces, bounds, wire, dtype, size, dense_out, sent) -> Result:
    """The result from every range's message (rank order): dense into ``out``, or indices and values."""
    forms = [int(piece[:HEADER].view(np.int64)[0]) for piece in pieces]
    path = "sparse+dense_allgather" if any(forms) else "sparse"
    if dense_out is False:
        idx, val = [], []
        for j, (piece, form) in enumerate(zip(pieces, forms)):
            body = piece[HEADER:]
            if form:
                idx.append(np.arange(bounds[j], bounds[j + 1], dtype=wire))
                val.append(body.view(dtype))
            else:
                rec = body.view(_record(wire, dtype))
                idx.append(rec["i"])
                val.append(rec["v"])
        return Result(np.concatenate(idx), np.concatenate(val).astype(dtype, copy=False), None, path, sent)
    out = np.zeros(size, dtype=dtype) if dense_out is True else dense_out
    for j, (piece, form) in enumerate(zip(pieces, forms)):
        lo, hi = int(bounds[j]), int(bounds[j + 1])
        body = piece[HEADER:]
        if form:
            out[lo:hi] = body.view(dtype)
        else:
            if dense_out is not True:
                out[lo:hi] = 0
            rec = body.view(_record(wire, dtype))
            out[rec["i"]] = rec["v"]
    return Result(None, None, out, path, sent)


def _check_table(comm, table, error):
    """Raise on every rank if a rank had an argument error or the ranks disagree on dtype, size or op."""
    if table[:, 1].any():
        from mpiml.runtime.agree import raise_if_any

        raise_if_any(error, comm)
    odd = np.flatnonzero(table[:, 0] != table[0, 0])
    if odd.size:
        raise MismatchError("sparse_allreduce needs the same size, op and values dtype on every rank; rank(s) "
                            f"{', '.join(map(str, odd.tolist()))} differ from rank 0", collective=True)


def local(indices, values, size: int, op, dense_out) -> Result:
    """One rank: the canonical input (no messages)."""
    idx, val = canonical(indices, values, op, index_dtype(size))
    if dense_out is False:
        return Result(idx, val, None, "local", 0)
    return Result(None, None, densify(idx, val, size, None if dense_out is True else dense_out), "local", 0)


def calibrate(comm=None, size: int = 1 << 20, nonzeros: int = 7000, repeats: int = 40, flush_bytes: int | None = None,
              params=None) -> dict:
    """Measure the sparse allreduce's model constants on this machine, cold; collective over ``comm``.

    Every timed repetition starts cold, after what a data-parallel training step does between
    two exchanges: every rank copies a dense gradient of ``flush_bytes`` (default: the
    vector's, ``8 * size``), allreduces it (``mpiml.allreduce``) and copies it again into a
    fresh temporary, freed (8 MB each at the default size), so the code, the buffers and the
    MPI library's state start out of the caches (a call in a tight loop, warm, is 2-3x
    faster). The data: ``nonzeros`` random sorted float64 nonzeros per rank in ``size``
    elements.

    Parameters
    ----------
    comm : mpi4py.MPI.Intracomm, optional
        Defaults to ``MPI.COMM_WORLD``. With one rank, only the local constants are
        measured (``p`` pieces of two ranks are merged).
    size, nonzeros, repeats, flush_bytes : int
        The vectors' length, the nonzeros per rank, the timed repetitions of the whole call
        (medians; half as many for each kernel), the dense gradient's bytes moved before each.
    params : ModelParams, optional
        The machine's other parameters (alpha, beta, overheads): those in force by default.

    Returns
    -------
    dict
        By name, for ``ModelParams.sparse``: ``SPARSE_HELD`` (per held nonzero: order
        check, routing and packing), ``SPARSE_MERGED`` (per element a two-way merge step
        reads), ``SPARSE_SCATTERED`` (per nonzero added into a dense result),
        ``SPARSE_ZERO`` (per byte of the dense result's memset), each the median of the
        kernel timed alone, on every rank at once (the merge with its inputs in cache: a call
        merges what it has just received); with two or more ranks also ``SPARSE_FIXED``: the median of the
        whole :func:`mpiml.sparse_allreduce_coo` call (``auto``, the split allgather at these
        counts; barrier to barrier, the slowest rank) less what the model prices for its other
        terms with these constants (the same on every rank), and ``SPARSE_DENSE``: the same for
        :func:`mpiml.sparse_allreduce` into a reused ``out`` (the dense result), less its model
        with that ``SPARSE_FIXED``.
    """
    from dataclasses import replace

    from mpiml.collectives.api import allreduce, sparse_allreduce, sparse_allreduce_coo
    from mpiml.collectives.ops import SUM
    from mpiml.runtime.comm import context_of

    c = context_of(comm).comm
    p, rank = c.Get_size(), c.Get_rank()
    pieces_p = max(p, 2)
    rng = np.random.default_rng([7, rank])
    nonzeros = min(nonzeros, size)
    pieces = [np.sort(rng.choice(size, nonzeros, replace=False)) for _ in range(pieces_p)]
    wire = index_dtype(size)
    idx = np.concatenate(pieces).astype(wire)
    val = rng.standard_normal(idx.size)
    counts = np.full(pieces_p, nonzeros, dtype=np.int64)
    out = np.zeros(size)

    gradient = np.ones(max((8 * size if flush_bytes is None else flush_bytes) // 8, 1))

    def flush(k):
        """A training step's memory traffic between two exchanges: its dense gradient copied, allreduced,
        copied again (fresh temporaries, freed: page faults and unmapping as numpy's large ones do)."""
        step = gradient.copy()
        allreduce(step, comm=c, out=step)
        step = gradient.copy()
        step[0] = k
    bounds = np.ascontiguousarray(ranges(size, pieces_p), dtype=np.int64)
    packed, packed_values = np.empty(nonzeros, dtype=wire), np.empty(nonzeros)
    head = np.empty(HEAD + pieces_p, dtype=np.int64)

    def held():
        if compiled_pack:   # the lean call's pass: checks, order, routing, indices and values packed
            _quick_pack_kernel(pieces[0], val[:nonzeros], bounds, packed, packed_values, 0, 0, head, size, 1)
        else:
            head[HEAD:] = route(canonical(pieces[0], val[:nonzeros], SUM, wire)[0], bounds)

    def cold(fn, *warm):
        fn()   # compiles the kernels
        spent = []
        for k in range(max(repeats // 2, 1)):   # a kernel alone varies less than a whole call
            flush(k)
            for x in warm:   # inputs a call has just received or written (in its cache), the rest cold
                x.sum()
            if p > 1:   # every rank at once, as in a call (they share the memory bandwidth)
                c.Barrier()
            start = time.perf_counter()
            fn()
            spent.append(time.perf_counter() - start)
        return float(np.median(spent))

    from mpiml.runtime.jit import compiled

    compiled_pack = compiled()
    touched, prefix = nonzeros, nonzeros
    for _ in range(1, pieces_p):
        touched += prefix + nonzeros
        prefix += nonzeros
    fill = cold(lambda: out.fill(0))
    found = {"SPARSE_HELD": cold(held) / nonzeros,
             "SPARSE_MERGED": cold(lambda: merge(idx, val, counts, pieces_p, SUM), idx, val) / touched,
             "SPARSE_SCATTERED": max(cold(lambda: scatter_sum(idx, val, counts, out)) - fill, 0.0) / idx.size,
             "SPARSE_ZERO": fill / out.nbytes}
    if p == 1:
        return found
    mine, values = pieces[0], val[:nonzeros]
    everyone = c.allgather(mine)
    C = np.array([route(i, ranges(size, p)) for i in everyone])
    M = route(np.unique(np.concatenate(everyone)), ranges(size, p))
    def whole(call):
        spent = []
        for k in range(repeats + 1):
            flush(k)
            c.Barrier()
            start = time.perf_counter()
            call()   # "auto": its pricing is part of the call
            took = time.perf_counter() - start
            if k:   # the first call compiles
                spent.append(c.allreduce(took, op=MPI.MAX))
        return float(np.median(spent))

    prm = model.sparse_params(params)
    trial = replace(prm, sparse={**prm.sparse, **found, "SPARSE_FIXED": 0.0, "SPARSE_DENSE": 0.0})
    rest = model.predict_sparse_counts(C, M, size, trial, index_bytes=wire.itemsize, dense_out=False)[0]
    found["SPARSE_FIXED"] = max(whole(lambda: sparse_allreduce_coo(mine, values, size, comm=c)) - rest, 0.0)
    trial = replace(trial, sparse={**trial.sparse, "SPARSE_FIXED": found["SPARSE_FIXED"]})
    rest = model.predict_sparse_counts(C, M, size, trial, index_bytes=wire.itemsize, dense_out=True)[0]
    found["SPARSE_DENSE"] = max(whole(lambda: sparse_allreduce(mine, values, size, comm=c, out=out)) - rest, 0.0)
    return found


__all__ = ["ALGORITHMS", "OPS", "STATS", "Result", "calibrate", "canonical", "densify", "extent", "index_dtype", "local",
           "merge", "ranges", "route", "run", "scatter_sum"]
