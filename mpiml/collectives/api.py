"""The public collectives: argument checks, algorithm choice, dispatch.

Every function takes numpy arrays and ``comm=None`` (COMM_WORLD), communicates on a
private duplicate of ``comm``, and accepts ``check=True`` (or ``MPIML_CHECK=1`` in the
environment) to verify first that every rank passed the same arguments.

Contiguity: a non-contiguous input is copied to a contiguous one; an ``out`` array or a
broadcast buffer (written in place) must be C-contiguous, else the call is refused.

Reproducible sums: ``reproducible=True`` on :func:`allreduce`, :func:`reduce_scatter` and
:func:`reduce` (op ``sum`` on floating or complex data) makes the result independent of
the order and grouping of the operands, hence of the algorithm and of the number of ranks
(:mod:`mpiml.collectives.reproducible`: a max-reduction, then an exact sum of folds;
``min``, ``max`` and integer sums are order-independent already and are not changed);
:func:`reproducible_sum` sums rows spread over the ranks the same way.

Dispatch: ``algorithm`` (or ``auto``'s choice) names an entry of
:mod:`mpiml.collectives.registry`, whose implementation runs with the communicator's
blocking :class:`~mpiml.collectives.transport.Transport` and its
:class:`~mpiml.collectives.workspace.Workspace` (both kept per communicator).
"""

from __future__ import annotations

import hashlib
import math
import os
import sys
import time
import weakref

import numpy as np
from mpi4py import MPI

from mpiml.collectives import algorithms as _algorithms  # noqa: F401  (registers the built-in algorithms)
from mpiml.collectives import nodes as _nodes
from mpiml.collectives import registry
from mpiml.collectives import reproducible as _repro
from mpiml.collectives import select as _select
from mpiml.collectives.algorithms import native as _native
from mpiml.collectives.layout import block_counts
from mpiml.collectives.ops import check_dtype, resolve_op
from mpiml.collectives.select import choose
from mpiml.collectives.transport import Transport
from mpiml.collectives.workspace import Workspace
from mpiml.errors import ArgumentError, MismatchError
from mpiml.runtime import fault as _fault
from mpiml.runtime import watchdog as _watchdog
from mpiml.runtime.agree import raise_if_any
from mpiml.runtime.comm import CommContext, context_of

# The live name -> Algorithm tables: a dispatch is one dictionary lookup.
_ALLREDUCE = registry.table("allreduce")
_REDUCE_SCATTER = registry.table("reduce_scatter")
_ALLGATHER = registry.table("allgather")
_BCAST = registry.table("bcast")
_REDUCE = registry.table("reduce")
_IN_PLACE = MPI.IN_PLACE

# Ctrl-C ends every rank, and MPIML_TIMEOUT arms the collective timeout (mpiml.runtime.watchdog).
# Every public collective counts itself in _CALLS: a rank whose count stays put for the timeout
# while it is inside a collective is stuck there (the watchdog thread does all the timing).
_CALLS = _watchdog.CALLS
_watchdog.install_from_env()


# MPIML_CHECK is read on every call (a job or a test may set it at any time), from os.environ's own
# table where there is one: os.environ.get costs 0.7 us, a quarter of a small allreduce.
_ENV = getattr(os.environ, "_data", None)
if isinstance(_ENV, dict) and hasattr(os.environ, "encodekey"):
    _env, _CHECK_VAR = _ENV.get, os.environ.encodekey("MPIML_CHECK")
else:   # pragma: no cover (a Python without os.environ._data)
    _ENV, _env, _CHECK_VAR = os.environ, os.environ.get, "MPIML_CHECK"
_CHECK_OFF = (None, "", "0", b"", b"0")


def _check_enabled(check):
    if check is None:
        return _env(_CHECK_VAR) not in _CHECK_OFF
    return bool(check)


def _state(context):
    """``(transport, workspace)`` of a communicator, made on its first collective (callers
    look in ``context.plans["collectives"]`` first: a function call costs 2% of a small call)."""
    state = context.plans.get("collectives")
    if state is None:
        state = context.plans["collectives"] = (Transport(context.comm), Workspace())
    return state


def _flat(a):
    """``a`` as a 1-D view (itself when already 1-D: a reshape costs as much as a dispatch)."""
    return a if a.ndim == 1 else a.reshape(-1)


def _contiguous_input(x, name="x"):
    if not isinstance(x, np.ndarray):
        x = np.asarray(x)
    return np.ascontiguousarray(x)


_checked_dtypes: dict = {}


def _dtype_for(dtype, op):
    """``check_dtype`` remembered per (dtype, op): the per-call path pays a dict lookup."""
    key = (dtype, op)
    try:
        checked = _checked_dtypes.get(key)
    except TypeError:  # a ReduceOp around an unhashable callable
        return check_dtype(dtype, op)
    if checked is None:
        checked = _checked_dtypes[key] = check_dtype(dtype, op)
    return checked


_row_digests: dict = {}


def _row_digest(tail, dtype) -> int:
    """A 63-bit digest of a row shape and dtype, the same in every process."""
    key = (tail, dtype)
    digest = _row_digests.get(key)
    if digest is None:
        raw = hashlib.blake2b(repr((tail, dtype.str)).encode(), digest_size=8).digest()
        digest = _row_digests[key] = int.from_bytes(raw, "little") >> 1
    return digest


def _output(out, shape, dtype, x=None, name="out"):
    """Validate a caller's ``out`` (or allocate one); ``out is x`` means in place."""
    if out is None:
        return np.empty(shape, dtype=dtype)
    if not isinstance(out, np.ndarray):
        raise ArgumentError(f"{name} must be a numpy array, got {type(out).__name__}")
    if out.shape != tuple(shape) or out.dtype != dtype:
        raise ArgumentError(
            f"{name} has shape {out.shape} and dtype {out.dtype}; expected {tuple(shape)} and {dtype}"
        )
    flags = out.flags
    if not flags.c_contiguous or not flags.writeable:
        raise ArgumentError(f"{name} must be a writeable C-contiguous array")
    # Both are contiguous here, so overlapping address ranges mean shared elements.
    if x is not None and out is not x and np.may_share_memory(out, x):
        raise ArgumentError(f"{name} overlaps the input without being the same array")
    return out


def _agree(context, error, check, name, signature):
    """Raise local argument errors; in check mode, collectively and with a signature check.

    ``signature`` is a callable returning the tuple ranks must agree on: it is only built
    in check mode (formatting a dtype costs more than a small message). In check mode the
    ranks first exchange which call they are in (:func:`_exchange`), so a rank that skipped
    or added a call raises :class:`MismatchError` on every rank instead of hanging.
    """
    if not _check_enabled(check):
        if error is not None:
            raise error
        return
    record = _record(context, name, error, None if error is not None else signature())
    records = _exchange(context, record)
    if any(r[0] != record[0] or r[1] != name for r in records):
        raise MismatchError("ranks are in different collective calls (a rank skipped or added one): "
                            + _sites(records), collective=True)
    if any(r[3] for r in records):
        raise_if_any(error, context.comm)
    if any(r[4] != record[4] for r in records):
        raise MismatchError(f"ranks called {name} with different arguments (checked call #{record[0]}): "
                            + "; ".join(f"rank {rank}: {r[4]} at {r[2]}" for rank, r in enumerate(records)),
                            collective=True)


def _checked_args(name, comm, check, parse, signature):
    """``(context, result)`` of a call on ``comm``: ``result = parse(context.comm)``, the call's argument
    checks (ArgumentError), agreed by :func:`_agree`, with ``signature(*result)`` in check mode."""
    context = context_of(comm)
    error = result = None
    try:
        if _select.keyed is not False:   # a tuning with two links: auto's choice is keyed by the node layout
            _select.enter(context)
        result = parse(context.comm)
    except ArgumentError as exc:
        error = exc
    _agree(context, error, check, name, lambda: signature(*result))
    return context, result


# Check mode's exchange: every checked call, and the end of the program, is one allgather of
# (number, name, call site, has an error, signature) on the collectives' communicator. These
# pair up in order on every rank whatever call each rank is in, so a skipped call meets
# another call or the end of the program instead of a peer that never comes.
_EXIT = "the end of the program"
_checked: list = []     # the contexts (communicators) with checked calls, in order


def _record(context, name, error, signature):
    """This rank's check record of its next checked call (or of its exit) on ``context``."""
    plans = context.plans
    seq = plans["checked"] = plans.get("checked", 0) + 1
    if seq == 1:
        _checked.append(context)
        if len(_checked) == 1:
            import atexit

            atexit.register(_check_at_exit)
    site = None if name == _EXIT else _watchdog.call_site(sys._getframe(2))
    return (seq, name, site, error is not None, signature)


def _exchange(context, record):
    return context.comm.allgather(record)


def _sites(records) -> str:
    return "; ".join(f"rank {rank}: {name}" + ("" if name == _EXIT else f" (checked call #{seq}) at {site}")
                     + (f" after {seq - 1} checked call(s)" if name == _EXIT else "")
                     for rank, (seq, name, site, _, _) in enumerate(records))


def _check_at_exit():
    """A normal exit after checked calls: the exit is one more checked call, so a rank still
    waiting in a call that this rank skipped raises instead of waiting forever."""
    if getattr(sys, "last_value", None) is not None:
        return  # leaving on an uncaught exception: the other ranks may be anywhere
    from mpi4py import MPI

    if MPI.Is_finalized():
        return
    if os.environ.get("MPIML_CHECK", "") not in ("", "0"):
        world = context_of(None)  # a rank that never called a collective meets the others' first call
        if not any(context is world for context in _checked):
            _checked.insert(0, world)
    for context in list(_checked):
        if context.comm == MPI.COMM_NULL:
            continue
        records = _exchange(context, _record(context, _EXIT, None, None))
        if any(r[1] != _EXIT or r[0] != records[0][0] for r in records):
            sys.stdout.flush()
            rank = MPI.COMM_WORLD.Get_rank()
            sys.stderr.write(f"[rank {rank}] mpiml: error: ranks are in different collective calls "
                             f"(a rank skipped or added one): {_sites(records)}\n")
            sys.stderr.flush()
            time.sleep(0.5)  # the ranks still in a call raise and report before the launcher ends them
            os._exit(2)


def allreduce(x, op="sum", algorithm="auto", comm=None, out=None, check=None, reproducible=False):
    """Combine ``x`` elementwise across all ranks; every rank gets the result.

    Parameters
    ----------
    x : array_like
        This rank's contribution; same shape and dtype on every rank. Integer,
        unsigned, floating (float16 included) or complex.
    op : str, numpy.ufunc or ReduceOp
        ``"sum"``, ``"prod"``, ``"min"``, ``"max"``, a binary ufunc, or a
        :class:`ReduceOp`. Operands are combined as if in rank order.
    algorithm : str
        ``"auto"`` (see :mod:`mpiml.collectives.select`) or a name in
        ``ALGORITHMS["allreduce"]``: ``"native"``, ``"ring"``, ``"recursive_doubling"``,
        ``"rabenseifner"``, ``"tree"`` and any registered since.
    comm : mpi4py.MPI.Intracomm, optional
        Defaults to ``MPI.COMM_WORLD``.
    out : numpy.ndarray, optional
        Where to write the result; ``out=x`` reduces in place.
    check : bool, optional
        Verify first that all ranks passed the same op, algorithm, dtype and count.
    reproducible : bool
        A floating or complex ``sum`` whose result does not depend on the order or the
        grouping of the operands (the algorithm, the number of ranks): the exact sum,
        rounded once, within :func:`mpiml.collectives.reproducible.error_bound` (with
        ``count`` 2^20). Costs a max-reduction of ``x.size`` float64 and a sum of
        2 or 3 times that; other ops and integer sums are order-independent already.

    Returns
    -------
    numpy.ndarray
        The reduction, bitwise identical on every rank.
    """
    _CALLS[0] += 1
    if _fault.ARMED:
        _fault.collective(_CALLS[0])
    key = None
    if out is not None and not reproducible and (
            (_CHECK_VAR not in _ENV or _env(_CHECK_VAR) in _CHECK_OFF) if check is None else not check):
        # Repeated calls, inlined: each function call or attribute here is 2-4% of the whole call, so the
        # checks are written out and cheapest first. The same arrays as a recent call (see _remember
        # below): only what they can change in place is compared.
        if comm is None:
            context, m = _world, _world_last
            if m[0] is not x or m[1] is not out:
                m = _world.memo.get(id(x))
        else:
            context = context_of(comm)
            m = context.memo.get(id(x))
        if (m is not None and m[0] is x and m[1] is out and m[2] is op and m[3] is algorithm
                and x.dtype is m[4] and out.dtype is m[5] and x.shape == m[6] and out.shape == m[6]):
            try:
                m[7](m[8], m[9], m[10])
            except (BufferError, ValueError):   # refused before any message (out made read-only)
                pass
            else:
                if comm is None and m is not _world_last:
                    _last_world(m)
                return out
        # The same op, algorithm, dtype and shape (see _plan below).
        if type(x) is np.ndarray:
            shape = x.shape
            key = (op, algorithm, x.dtype, shape)
            try:
                plan = context.repeats.get(key)
            except TypeError:        # a ReduceOp around an unhashable callable
                plan = key = None
            if plan is not None:
                x_flags = x.flags
                if x_flags.c_contiguous:
                    dtype, native, datatype, mpi_op, run = plan
                    if out is x:
                        if x_flags.owndata and _CALLS[0] >= _memo_resume and x.nbytes <= MEMO_BYTES:
                            _remember(context, x, out, op, algorithm, plan)
                        if native is None:
                            return run(x, out)
                        native(_IN_PLACE, [out, datatype], mpi_op)
                        return out
                    if type(out) is np.ndarray and out.shape == shape and out.dtype == dtype:
                        flags = out.flags
                        # two arrays that each own their memory cannot overlap (may_share_memory costs 0.2 us)
                        if flags.c_contiguous and flags.writeable:
                            if flags.owndata and x_flags.owndata:
                                if _CALLS[0] >= _memo_resume and x.nbytes <= MEMO_BYTES:
                                    _remember(context, x, out, op, algorithm, plan)
                            elif np.may_share_memory(out, x):
                                plan = None
                            if plan is not None:
                                if native is None:
                                    return run(x, out)
                                native([x, datatype], [out, datatype], mpi_op)
                                return out
    context, (x, op, dtype, out, chosen, reproducible) = _checked_args(
        "allreduce", comm, check, lambda c: _reduction_args(x, op, algorithm, out, c, reproducible),
        _reduction_signature)
    if key is not None:
        _keep_plan(context, key, chosen, op, dtype, comm is None)
    c = context.comm
    if reproducible and x.size:
        folds = _reproducible_folds(_operand(x, c), comm)
        F = allreduce(folds.F, algorithm=chosen, comm=comm, out=folds.F)
        return _round_into(out, _repro.value(F, folds.E))
    if x.size == 0 or c.Get_size() == 1:
        if out is not x:
            np.copyto(out, x)
        return out
    transport, workspace = context.plans.get("collectives") or _state(context)
    _ALLREDUCE[chosen].run(transport, _flat(x), _flat(out), op, workspace)
    return out


# --- repeated calls: the per-call cost of a small allreduce --------------------------------------------
# A training loop calls allreduce with the same op, algorithm, dtype, shape and out many times. The first
# such call takes the full path (argument checks, algorithm choice) and leaves a plan in the
# communicator's context, keyed by (op, algorithm, dtype, shape); the next ones check only what
# the key does not fix (contiguity, the out array) and call the chosen algorithm, or the duplicated
# communicator's Allreduce with prebuilt datatype and op for ``native`` with a predefined type and op.
# Check mode and reproducible sums always take the full path. Plans are dropped when an algorithm is
# registered or removed and when the tuning changes (``auto``'s choice may change).

MAX_REPEAT_PLANS = 256
_world = CommContext(None)   # COMM_WORLD's context (comm=None) once a plan is kept: context_of costs 0.06 us
_planned = weakref.WeakValueDictionary()   # id -> a context holding plans

# The same arrays again: a loop that reduces the same x into the same out (or in place) skips even the
# plan's key (a shape tuple, a hash, a dict lookup: 0.2 us) and out's flags. ``context.memo`` maps id(x)
# to ``(x, out, op, algorithm, x.dtype, out.dtype, shape, call, a, b, c)``, stored by a call that passed
# the plan's checks; ``call(a, b, c)`` is the MPI library's Allreduce with prebuilt [array, datatype]
# messages (or the local copy of p = 1), so it still refuses an out made read-only or non-contiguous
# since (the buffer request asks for a writeable, contiguous buffer: for one axis, C-contiguous). Kept
# only for 1-D arrays that own their memory (two of them cannot overlap; keeping one alive keeps no
# larger base alive) of at most MEMO_BYTES, at most MAX_MEMOS a communicator: the references it holds
# stay small. What an array can change in place (dtype, shape) is compared on every call; registered
# algorithms and tuning drop the memos with the plans.
# Storing a memo costs about what it saves once: a loop that makes a new x or out for every call would
# pay that and never use it. So after MAX_MEMOS stores, none is stored during the next MEMO_PAUSE
# collective calls (the memos already stored are kept and used), then it starts again, with the memo
# emptied if full.
MEMO_BYTES = 1 << 16
MAX_MEMOS = 64
MEMO_PAUSE = 4096
_memo_budget = MAX_MEMOS   # stores left before a pause
_memo_resume = 0           # no store before this value of _CALLS[0]
_NO_MEMO = (None, None)
_world_last = _NO_MEMO     # the memo comm=None used last: a loop on one pair of arrays skips the dict too


def _last_world(m):
    global _world_last
    _world_last = m


def _remember(context, x, out, op, algorithm, plan):
    """Store the memo of a call of ``x`` into ``out`` that passed the plan's checks (see above)."""
    global _memo_budget, _memo_resume
    dtype, native, datatype, mpi_op, run = plan
    if native is None and run is not _copy_into:
        return   # a registered algorithm: it may fail half-way through its messages, so it keeps the checks
    if x.ndim != 1:
        return   # the buffer request takes F order too: its contiguity check is C order's for one axis only
    _memo_budget -= 1
    if _memo_budget <= 0:
        _memo_budget, _memo_resume = MAX_MEMOS, _CALLS[0] + MEMO_PAUSE
    if native is not None:
        call, a, b, c = native, (_IN_PLACE if out is x else [x, datatype]), [out, datatype], mpi_op
    else:
        call, a, b, c = _copy_memo, x, out, None
    memo = context.memo
    if len(memo) >= MAX_MEMOS:
        memo.clear()
    memo[id(x)] = entry = (x, out, op, algorithm, x.dtype, out.dtype, x.shape, call, a, b, c)
    if context is _world:   # else the last one, for other op or algorithm on these arrays, hides it
        _last_world(entry)


def _copy_memo(x, out, _):
    if out is not x:
        np.copyto(out, x)


def _keep_plan(context, key, chosen, op, dtype, world):
    """Store the plan of a repeated allreduce (see :func:`_plan`) under ``key`` (``world``: the context
    is COMM_WORLD's, found through comm=None)."""
    global _world
    if world:
        _world = context
    repeats = context.repeats
    if len(repeats) >= MAX_REPEAT_PLANS:   # a program of many shapes: start afresh
        repeats.clear()
    repeats[key] = _plan(context, chosen, op, dtype, key[3])
    _planned[id(context)] = context


_generation = [0]   # bumped when plans are dropped: the fused plans' algorithms are chosen again


def _forget_plans():
    _last_world(_NO_MEMO)
    _generation[0] += 1
    for context in list(_planned.values()):
        context.repeats.clear()
        context.memo.clear()


registry.on_change(_forget_plans)
_select.on_tuning_change(_forget_plans)
_nodes.on_layout_change(_forget_plans)


def _plan(context, chosen, op, dtype, shape):
    """``(dtype, native, datatype, mpi_op, run)``: the result's dtype, and either the duplicated
    communicator's ``Allreduce`` with the MPI datatype and op to give it, or (``native`` None)
    ``run(x, out)``, the registered algorithm or a local copy."""
    comm = context.comm
    if comm.Get_size() == 1 or math.prod(shape) == 0:
        return dtype, None, None, None, _copy_into
    datatype, mpi_op = _native.message_and_op(np.empty(0, dtype), op)
    if chosen == "native" and _native.predefined(mpi_op):
        return dtype, comm.Allreduce, datatype, mpi_op, None
    transport, workspace = context.plans.get("collectives") or _state(context)

    def run(x, out, _run=_ALLREDUCE[chosen].run):
        flat = _flat(x)
        _run(transport, flat, flat if out is x else _flat(out), op, workspace)   # in place: one object
        return out

    return dtype, None, None, None, run


def _reduction_args(x, op, algorithm, out, c, reproducible=False):
    """``(x, op, dtype, out, chosen, reproducible)`` of a (nonblocking) allreduce on ``c``, checked (raises
    ArgumentError)."""
    in_place = out is not None and out is x
    x = _contiguous_input(x)
    op = resolve_op(op)
    dtype = _dtype_for(x.dtype, op)
    out = x if in_place else _output(out, x.shape, dtype, x)
    return (x, op, dtype, out, choose("allreduce", algorithm, x.nbytes, c.Get_size(), op.commutative),
            _exact_sum(reproducible, op, dtype))


def _reduction_signature(x, op, dtype, out, chosen, reproducible):
    return op.label, chosen, str(x.dtype), x.size, reproducible


def _copy_into(x, out):
    if out is not x:
        np.copyto(out, x)
    return out


def reduce_scatter(x, op="sum", algorithm="auto", comm=None, counts=None, out=None, check=None,
                   reproducible=False):
    """Reduce ``x`` across ranks and leave block ``rank`` of the result on each rank.

    ``x`` is read as a flat vector of ``n`` elements. Block ``i`` is elements
    ``displ[i]:displ[i] + counts[i]``; by default ``counts`` is balanced like
    ``numpy.array_split`` (the first ``n % p`` blocks get one extra element), and any
    non-negative ``counts`` summing to ``n`` may be given instead. ``reproducible``: as
    in :func:`allreduce` (the maximum runs over all ``n`` elements).

    Returns
    -------
    numpy.ndarray
        1-D, ``counts[rank]`` elements.
    """
    _CALLS[0] += 1
    if _fault.ARMED:
        _fault.collective(_CALLS[0])
    context, (x, op, dtype, counts, out, chosen, reproducible) = _checked_args(
        "reduce_scatter", comm, check,
        lambda c: _reduce_scatter_args(x, op, algorithm, counts, out, c, reproducible), _reduce_scatter_signature)
    c = context.comm
    p, r = c.Get_size(), c.Get_rank()
    if reproducible and x.size:
        folds = _reproducible_folds(_operand(x, c), comm)
        width = 2 if dtype.kind == "c" else 1     # float64 values per element
        lo = int(np.sum(counts[:r])) * width
        hi = lo + int(counts[r]) * width
        # element-major folds, so that each rank's block of elements is one block of the message
        mine = reduce_scatter(np.ascontiguousarray(folds.F.T), algorithm=chosen, comm=comm,
                              counts=np.asarray(counts) * width * folds.F.shape[0])
        return _round_into(out, _repro.value(mine.reshape(-1, folds.F.shape[0]).T, folds.E[lo:hi]))
    flat_x = _flat(x)
    if p == 1 or x.size == 0:
        np.copyto(out, flat_x)
    else:
        transport, workspace = context.plans.get("collectives") or _state(context)
        _REDUCE_SCATTER[chosen].run(transport, flat_x, out, op, counts, workspace)
    return out


def _reduce_scatter_args(x, op, algorithm, counts, out, c, reproducible=False):
    """``(x, op, dtype, counts, out, chosen, reproducible)`` of a (nonblocking) reduce_scatter on ``c``,
    checked (raises ArgumentError)."""
    p = c.Get_size()
    x = _contiguous_input(x)
    op = resolve_op(op)
    dtype = _dtype_for(x.dtype, op)
    counts = block_counts(x.size, p, counts)
    out = _output(out, (int(counts[c.Get_rank()]),), dtype, x)
    return (x, op, dtype, counts, out, choose("reduce_scatter", algorithm, x.nbytes, p, op.commutative),
            _exact_sum(reproducible, op, dtype))


def _reduce_scatter_signature(x, op, dtype, counts, out, chosen, reproducible):
    return op.label, chosen, str(x.dtype), x.size, np.asarray(counts).tolist(), reproducible


def allgather(x, algorithm="auto", comm=None, out=None, check=None):
    """Concatenate every rank's ``x`` along the first axis, in rank order (allgatherv).

    Ranks may contribute different numbers of rows; the remaining dimensions and the
    dtype must agree (a mismatch raises :class:`MismatchError` on every rank). A 0-d
    ``x`` counts as one element.

    Returns
    -------
    numpy.ndarray
        Shape ``(sum of rows, *x.shape[1:])``, identical on every rank.
    """
    _CALLS[0] += 1
    if _fault.ARMED:
        _fault.collective(_CALLS[0])
    context, (x, _, _) = _checked_args("allgather", comm, check,
                                       lambda c: _allgather_args(x, None, algorithm, c), _allgather_signature)
    c = context.comm
    p = c.Get_size()
    transport, workspace = context.plans.get("collectives") or _state(context)
    rows = _rows_of_all(c, x, workspace.get("allgather_rows", 2 * p, np.int64).reshape(p, 2), "allgather")
    out, chosen, counts = _gathered(x, rows, out, algorithm, p)
    flat_x, flat_out = _flat(x), _flat(out)
    if p == 1:
        np.copyto(flat_out, flat_x)
    else:
        _ALLGATHER[chosen].run(transport, flat_x, flat_out, counts, workspace)
    return out


def _allgather_args(x, rows, algorithm, c):
    """``(x, rows, algorithm)`` of a (nonblocking) allgather on ``c``: ``x`` at least 1-D and contiguous,
    ``rows`` (None, or every rank's row count) checked (raises ArgumentError)."""
    x = np.atleast_1d(_contiguous_input(x))
    _dtype_for(x.dtype, None)
    if rows is not None:
        p = c.Get_size()
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if rows.size != p or (rows < 0).any() or rows[c.Get_rank()] != x.shape[0]:
            raise ArgumentError(f"rows must give each of the {p} ranks' row counts (this rank's is "
                                f"{x.shape[0]}), got {rows.tolist()}")
    return x, rows, algorithm


def _allgather_signature(x, rows, algorithm):
    return algorithm, str(x.dtype), x.shape[1:], None if rows is None else rows.tolist()


def _rows_of_all(c, x, table, name):
    """Every rank's row count, exchanged in ``table`` (p x 2 int64) with a digest of its row shape and
    dtype: the same data everywhere, so a mismatch raises MismatchError identically on every rank."""
    c.Allgather(np.array([x.shape[0], _row_digest(x.shape[1:], x.dtype)], dtype=np.int64), table)
    if (table[:, 1] != table[0, 1]).any():
        shapes = c.allgather((x.shape, x.dtype.str))  # only to name the culprits
        raise MismatchError(
            f"{name} needs the same trailing shape and dtype on every rank; got "
            + "; ".join(f"rank {i}: shape {s} dtype {d}" for i, (s, d) in enumerate(shapes)),
            collective=True)
    return table[:, 0]


def _gathered(x, rows, out, algorithm, p):
    """``(out, chosen, counts)`` of an allgather of every rank's ``rows`` rows: the output (checked or
    made), the algorithm, the element counts."""
    out = _output(out, (int(rows.sum()), *x.shape[1:]), x.dtype)
    return out, choose("allgather", algorithm, out.nbytes, p), rows * math.prod(x.shape[1:])


def bcast(x, root=0, algorithm="auto", comm=None, segment_bytes=None, check=None):
    """Broadcast ``root``'s ``x`` into ``x`` on every rank, in place; returns ``x``.

    Every rank passes a writeable C-contiguous array of the same shape and dtype.
    ``algorithm`` is ``"auto"`` or a name in ``ALGORITHMS["bcast"]``: ``"native"``,
    ``"binomial"``, ``"pipeline"`` (segments of ``segment_bytes``, default 1 MiB).
    """
    _CALLS[0] += 1
    if _fault.ARMED:
        _fault.collective(_CALLS[0])
    context, (x, root, chosen) = _checked_args("bcast", comm, check,
                                               lambda c: _bcast_args(x, root, algorithm, c, "bcast"), _bcast_signature)
    c = context.comm
    if c.Get_size() == 1 or x.size == 0:
        return x
    transport, workspace = context.plans.get("collectives") or _state(context)
    _BCAST[chosen].run(transport, _flat(x), root, segment_bytes, workspace)
    return x


def _bcast_args(x, root, algorithm, c, name):
    """``(x, root, chosen)`` of a (nonblocking) broadcast of ``x`` from ``root`` on ``c``, checked (raises
    ArgumentError)."""
    if not isinstance(x, np.ndarray):
        raise ArgumentError(f"{name} writes in place and needs a numpy array, got {type(x).__name__}")
    _dtype_for(x.dtype, None)
    _output(x, x.shape, x.dtype, name="x")
    if not 0 <= int(root) < c.Get_size():
        raise ArgumentError(f"root {root} is not a rank of a communicator of size {c.Get_size()}")
    return x, root, choose("bcast", algorithm, x.nbytes, c.Get_size())


def _bcast_signature(x, root, chosen):
    return root, chosen, str(x.dtype), x.size


def reduce(x, root=0, op="sum", algorithm="auto", comm=None, out=None, check=None, reproducible=False):
    """Combine ``x`` elementwise across ranks onto ``root``.

    Returns the result on ``root`` (in ``out`` if given; ``out=x`` reduces in place) and
    None on every other rank. ``algorithm`` is ``"auto"`` or a name in
    ``ALGORITHMS["reduce"]`` (``"native"``, ``"binomial"``). ``reproducible``: as in
    :func:`allreduce` (the maximum is an allreduce).
    """
    _CALLS[0] += 1
    if _fault.ARMED:
        _fault.collective(_CALLS[0])
    context, (x, op, out, chosen, reproducible) = _checked_args(
        "reduce", comm, check, lambda c: _reduce_args(x, root, op, algorithm, out, c, reproducible),
        lambda x, op, out, chosen, reproducible: (root, op.label, chosen, str(x.dtype), x.size, reproducible))
    c = context.comm
    is_root = c.Get_rank() == root
    if reproducible and x.size:
        folds = _reproducible_folds(_operand(x, c), comm)
        F = reduce(folds.F, root=root, algorithm=chosen, comm=comm)
        return _round_into(out, _repro.value(F, folds.E)) if is_root else None
    if c.Get_size() == 1 or x.size == 0:
        if out is not None and out is not x:
            np.copyto(out, x)
        return out
    transport, workspace = context.plans.get("collectives") or _state(context)
    _REDUCE[chosen].run(transport, _flat(x), _flat(out) if is_root else None, op, root, workspace)
    return out if is_root else None


def _reduce_args(x, root, op, algorithm, out, c, reproducible):
    """``(x, op, out, chosen, reproducible)`` of a reduce onto ``root`` on ``c`` (``out`` None but on the
    root), checked (raises ArgumentError)."""
    in_place = out is not None and out is x
    x = _contiguous_input(x)
    op = resolve_op(op)
    dtype = _dtype_for(x.dtype, op)
    if not 0 <= int(root) < c.Get_size():
        raise ArgumentError(f"root {root} is not a rank of a communicator of size {c.Get_size()}")
    if c.Get_rank() == root:
        out = x if in_place else _output(out, x.shape, dtype, x)
    else:
        out = None  # non-root buffers are never written
    return (x, op, out, choose("reduce", algorithm, x.nbytes, c.Get_size(), op.commutative),
            _exact_sum(reproducible, op, dtype))


def reproducible_sum(rows, comm=None, count=None, algorithm="auto", check=None):
    """Sum the rows of every rank (axis 0 of the concatenation), reproducibly.

    The result does not depend on how the rows are split over the ranks, on their order
    or on the number of ranks: the exact sum rounded once, within
    :func:`mpiml.collectives.reproducible.error_bound`.

    Parameters
    ----------
    rows : array_like
        This rank's rows, shape ``(local rows, *shape)``: the same ``shape`` on every rank
        (real floating data; integers are converted to float64).
    comm : mpi4py.MPI.Intracomm, optional
        Defaults to ``MPI.COMM_WORLD``.
    count : int, optional
        A bound on the rows of all ranks together, the same on every rank whatever their
        number (it sets the folds); by default the total, which costs one more reduction.
    algorithm : str
        The allreduce algorithm of the sum of the folds.
    check : bool, optional
        As in :func:`allreduce`.

    Returns
    -------
    numpy.ndarray
        float64 of shape ``shape``, bitwise identical on every rank.
    """
    _CALLS[0] += 1
    if _fault.ARMED:
        _fault.collective(_CALLS[0])
    rows = np.asarray(rows)
    _checked_args("reproducible_sum", comm, check, lambda c: _summed_rows(rows),
             lambda rows: (algorithm, rows.shape[1:], count))
    flat = rows.reshape(rows.shape[0], math.prod(rows.shape[1:]))
    if count is None:
        count = int(allreduce(np.array([flat.shape[0]], dtype=np.int64), comm=comm)[0])
    folds = _reproducible_folds(_repro.Sum(flat.shape[1], count).add_rows(flat), comm)
    if flat.shape[1]:
        allreduce(folds.F, algorithm=algorithm, comm=comm, out=folds.F)
    return _repro.value(folds.F, folds.E).reshape(rows.shape[1:])


def _summed_rows(rows):
    """``(rows,)``, checked for :func:`reproducible_sum` (raises ArgumentError)."""
    if rows.ndim == 0:
        raise ArgumentError("reproducible_sum needs rows: an array with a first axis")
    if rows.dtype.kind not in "iuf":
        raise ArgumentError(f"reproducible_sum sums real numbers, got dtype {rows.dtype}")
    return (rows,)


class _Folds:
    """The agreed exponents ``E`` and this rank's folds ``F`` of a reproducible sum."""

    def __init__(self, E, F):
        self.E, self.F = E, F


def _reproducible_folds(terms, comm) -> _Folds:
    """Pass one of a reproducible sum: the exponents, maximized over the ranks; then this rank's folds."""
    E = _repro.exponents(terms.maxima())
    if E.size:
        allreduce(E, op="max", comm=comm, out=E)
    return _Folds(E, terms.folds(E))


def _exact_sum(reproducible, op, dtype) -> bool:
    """Whether ``reproducible`` needs the two-pass sum (floating sums); refuse ops it cannot make reproducible."""
    if not reproducible or dtype.kind in "iu" or op.label in ("min", "max", "fmin", "fmax"):
        return False
    if op.label != "sum":
        raise ArgumentError(f"reproducible=True supports op 'sum' (min and max are reproducible already), "
                            f"not {op.label!r}")
    return True


def _operand(x, comm):
    """A rank's ``x`` as the one row of terms of a reproducible sum (count: :data:`~reproducible.MAX_OPERANDS`)."""
    if comm.Get_size() > _repro.MAX_OPERANDS:
        raise ArgumentError(f"reproducible=True sums at most {_repro.MAX_OPERANDS} ranks' operands exactly")
    flat = _floats(x)
    return _repro.Sum(flat.size, _repro.MAX_OPERANDS).add_rows(flat[None, :])


def _floats(x):
    """``x`` as float64 values (a complex number as two)."""
    x = _flat(x)
    if x.dtype.kind == "c":
        x = x.view(np.float32 if x.dtype.itemsize == 8 else np.float64)
    return x.astype(np.float64, copy=False)


def _round_into(out, values):
    """Write float64 ``values`` into ``out`` (its dtype; complex from pairs)."""
    flat = _flat(out)
    if flat.dtype.kind == "c":
        flat = flat.view(np.float32 if flat.dtype.itemsize == 8 else np.float64)
    flat[...] = values
    return out


# --- sparse allreduce (mpiml.collectives.sparse) ------------------------------------------------

def sparse_allreduce(indices, values, size, op="sum", algorithm="auto", comm=None, out=None, check=None):
    """Combine vectors given as ``(indices, values)`` across ranks, moving only nonzeros; the dense result.

    SparCML's algorithms (:mod:`mpiml.collectives.sparse`): for small counts a split
    allgather (every rank's nonzeros to every rank in one round, combined locally in rank
    order), else a sparse reduce-scatter over ``p`` index ranges, each range combined on its
    owner in rank order, then an allgather of the reduced ranges, sparse or dense as the
    cost model prices them; ``auto`` switches to a dense allreduce when the inputs are dense
    enough for that to be cheaper.

    Parameters
    ----------
    indices : array_like
        This rank's nonzero positions, integers in ``[0, size)``, 1-D, in any order;
        duplicates are combined with ``op`` (in the order given). Ranks may pass
        different numbers (none too).
    values : array_like
        The values at ``indices``, 1-D, as long; the same dtype on every rank (integer,
        unsigned, floating incl. float16, or complex).
    size : int
        The vectors' length, the same on every rank.
    op : str
        ``"sum"``, ``"min"`` or ``"max"`` (absent positions count as zeros).
    algorithm : str
        ``"auto"`` (switch to dense where the model predicts it cheaper), ``"sparse"``
        (never switch), ``"dense"`` (densify, then :func:`allreduce`), or one sparse way:
        ``"allgather"`` or ``"reduce_scatter"``.
    comm : mpi4py.MPI.Intracomm, optional
        Defaults to ``MPI.COMM_WORLD``.
    out : numpy.ndarray, optional
        A C-contiguous array of ``size`` elements of the values' dtype to write into.
    check : bool, optional
        Verify first that all ranks passed the same size, op, algorithm and dtype.

    Returns
    -------
    numpy.ndarray
        The reduced dense vector of ``size`` elements, bitwise identical on every rank.
    """
    _CALLS[0] += 1
    if _fault.ARMED:
        _fault.collective(_CALLS[0])
    return _sparse_call(indices, values, size, op, algorithm, comm, out, check, True)


def sparse_allreduce_coo(indices, values, size, op="sum", algorithm="auto", comm=None, check=None):
    """:func:`sparse_allreduce` returning the result sparse: ``(indices, values)``.

    ``indices`` (sorted, unique, int32 below 2^31 elements else int64) hold every position
    any rank passed (every position, after a dense switch); ``values`` the result there,
    bitwise identical on every rank. The other positions of the result are zero.
    """
    _CALLS[0] += 1
    if _fault.ARMED:
        _fault.collective(_CALLS[0])
    result = _sparse_call(indices, values, size, op, algorithm, comm, None, check, False)
    return result


def _sparse_call(indices, values, size, op, algorithm, comm, out, check, dense):
    if not _check_enabled(check):   # the common call, its per-shape work done once (None: the general path)
        got = _sparse_quick(indices, values, size, op, algorithm, comm, out, dense)
        if got is not None:
            return got
    context = context_of(comm)
    c = context.comm
    error = None
    try:
        indices, values = np.asarray(indices), _contiguous_input(values, "values")
        if indices.size == 0:
            indices = np.empty(0, dtype=np.int64)
        op = resolve_op(op)
        if op.label not in _sparse.OPS:
            raise ArgumentError(f"sparse_allreduce supports op {', '.join(_sparse.OPS)}, not {op.label!r}")
        dtype = _dtype_for(values.dtype, op)
        if algorithm not in _sparse.ALGORITHMS:
            raise ArgumentError(f"unknown sparse_allreduce algorithm {algorithm!r}; choose from "
                                f"{', '.join(_sparse.ALGORITHMS)}")
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 0:
            raise ArgumentError(f"size must be a non-negative integer, got {size!r}")
        size = int(size)
        if indices.ndim != 1 or values.ndim != 1 or indices.size != values.size:
            raise ArgumentError(f"indices and values must be 1-D and as long; got shapes {indices.shape} and "
                                f"{values.shape}")
        if indices.dtype.kind not in "iu":
            raise ArgumentError(f"indices must be integers, got dtype {indices.dtype}")
        lo, hi = _sparse.extent(indices) if indices.size else (0, -1)
        if lo < 0 or hi >= size:
            raise ArgumentError(f"indices must lie in [0, {size}); got {lo}..{hi}")
        if dense:
            out = _output(out, (size,), dtype)
            if np.may_share_memory(out, values) or np.may_share_memory(out, indices):
                raise ArgumentError("out overlaps the indices or values")
    except ArgumentError as exc:
        error = exc
    if _check_enabled(check) or c.Get_size() == 1:
        _agree(context, error, check, "sparse_allreduce",
               lambda: ("sparse_allreduce", getattr(op, "label", op), algorithm, str(values.dtype), size))
    if c.Get_size() == 1:
        result = _sparse.local(indices, values, size, op, out if dense else False)
    else:   # an argument error is raised on every rank after the first exchange (no rank is left waiting)
        result = _sparse.run(c, indices, values, size, op, algorithm, out if dense else False, error,
                             allreduce)
    _sparse.STATS.update(path=result.path, bytes_sent=result.bytes_sent)
    return result.dense if dense else (result.indices, result.values)


from mpiml.collectives import sparse as _sparse  # noqa: E402
from mpiml.collectives.sparse import quick as _sparse_quick  # noqa: E402

_watchdog.watch(allreduce, reduce_scatter, allgather, bcast, reduce, reproducible_sum, sparse_allreduce,
                sparse_allreduce_coo)

__all__ = ["allgather", "allreduce", "bcast", "reduce", "reduce_scatter", "reproducible_sum", "sparse_allreduce",
           "sparse_allreduce_coo"]


# ------------------------------------------------------------------ nonblocking and fused calls
# The argument checks are those of the blocking calls above; the machinery is in
# mpiml.collectives.nonblocking (requests, progress) and mpiml.collectives.fusion (buckets).
from mpiml.collectives import fusion as _fusion  # noqa: E402
from mpiml.collectives import nonblocking as _nb  # noqa: E402


def iallreduce(x, op="sum", algorithm="auto", comm=None, out=None, check=None):
    """Start :func:`allreduce` and return at once; the request's ``wait()`` returns the result.

    Same arguments and same result, bitwise, as :func:`allreduce` with the same
    ``algorithm`` (``auto`` chooses as it does); ``reproducible`` is not offered. ``x`` must
    not be written (nor ``out`` read) until the request completes.

    Returns
    -------
    mpiml.collectives.nonblocking.Request
        ``wait()`` returns the reduction; ``test()`` is True once it is complete. Any number
        may be outstanding, completed in any order; each ``test()``/``wait()`` advances them all.
    """
    _CALLS[0] += 1
    if _fault.ARMED:
        _fault.collective(_CALLS[0])
    context, (x, op, _, out, chosen, _) = _checked_args(
        "iallreduce", comm, check, lambda c: _reduction_args(x, op, algorithm, out, c), _reduction_signature)
    c = context.comm
    site = _nb.call_site(sys._getframe(1))
    if x.size == 0 or c.Get_size() == 1:
        if out is not x:
            np.copyto(out, x)
        return _nb.completed(out, site)
    return _nb.start(context, "allreduce", chosen, (_flat(x), _flat(out), op), lambda: out, site)


def ireduce_scatter(x, op="sum", algorithm="auto", comm=None, counts=None, out=None, check=None):
    """Start :func:`reduce_scatter`; the request's ``wait()`` returns this rank's block (as the blocking call)."""
    _CALLS[0] += 1
    if _fault.ARMED:
        _fault.collective(_CALLS[0])
    context, (x, op, _, counts, out, chosen, _) = _checked_args(
        "ireduce_scatter", comm, check, lambda c: _reduce_scatter_args(x, op, algorithm, counts, out, c),
        _reduce_scatter_signature)
    p = context.comm.Get_size()
    site = _nb.call_site(sys._getframe(1))
    if p == 1 or x.size == 0:
        np.copyto(out, _flat(x))
        return _nb.completed(out, site)
    return _nb.start(context, "reduce_scatter", chosen, (_flat(x), out, op, counts), lambda: out, site)


def iallgather(x, algorithm="auto", comm=None, out=None, rows=None, check=None):
    """Start :func:`allgather`; the request's ``wait()`` returns the concatenation.

    ``rows``: every rank's number of rows, when known (the same sequence on every rank); it
    saves the blocking exchange of row counts that otherwise runs first (and the check of
    the trailing shapes, which ``check=True`` still does).
    """
    _CALLS[0] += 1
    if _fault.ARMED:
        _fault.collective(_CALLS[0])
    context, (x, rows, _) = _checked_args("iallgather", comm, check,
                                          lambda c: _allgather_args(x, rows, algorithm, c), _allgather_signature)
    c = context.comm
    p = c.Get_size()
    site = _nb.call_site(sys._getframe(1))
    if rows is None:
        rows = _rows_of_all(c, x, np.empty((p, 2), dtype=np.int64), "iallgather")
    out, chosen, counts = _gathered(x, rows, out, algorithm, p)
    if p == 1:
        np.copyto(_flat(out), _flat(x))
        return _nb.completed(out, site)
    return _nb.start(context, "allgather", chosen, (_flat(x), _flat(out), counts), lambda: out, site)


def iallgather_in_place(out, rows, offsets, algorithm="auto", comm=None, check=None):
    """Start an allgather of row blocks at arbitrary places of ``out`` (allgatherv in place, with displacements).

    Rank ``r`` has filled ``out[offsets[r]:offsets[r] + rows[r]]`` (its block); the request's
    ``wait()`` returns ``out`` with every rank's block in place. Blocks must not overlap;
    ``out`` (C-contiguous, same shape and dtype everywhere), ``rows`` and ``offsets`` are the
    same on every rank. Several such requests may fill disjoint blocks of one array at once
    (:mod:`mpiml.mf.overlap` gathers chunks of a factor matrix so, without assembling them).
    ``algorithm``: ``"auto"`` or ``"ring"`` (driven by ``test``/``wait``), ``"native"``
    (``MPI_Iallgatherv``).
    """
    _CALLS[0] += 1
    if _fault.ARMED:
        _fault.collective(_CALLS[0])
    context, (rows, offsets, ends) = _checked_args(
        "iallgather_in_place", comm, check, lambda c: _blocks_in_place(out, rows, offsets, algorithm, c.Get_size()),
        lambda rows, offsets, ends: (algorithm, str(out.dtype), out.shape, rows.tolist(), offsets.tolist()))
    p = context.comm.Get_size()
    site = _nb.call_site(sys._getframe(1))
    if p == 1 or out.size == 0:
        return _nb.completed(out, site)
    width = math.prod(out.shape[1:])
    return _nb.start_in_place_allgather(context, _flat(out), offsets * width, ends * width,
                                        "native" if algorithm == "native" else "ring", site, out)


def _blocks_in_place(out, rows, offsets, algorithm, p):
    """``(rows, offsets, ends)`` of :func:`iallgather_in_place`, as int64 arrays, checked (raises
    ArgumentError)."""
    if not isinstance(out, np.ndarray):
        raise ArgumentError(f"iallgather_in_place needs a numpy array, got {type(out).__name__}")
    _dtype_for(out.dtype, None)
    _output(out, out.shape, out.dtype)
    rows = np.asarray(rows, dtype=np.int64).reshape(-1)
    offsets = np.asarray(offsets, dtype=np.int64).reshape(-1)
    order = np.argsort(offsets, kind="stable")
    ends = offsets + rows
    if (rows.size != p or offsets.size != p or (rows < 0).any() or (offsets < 0).any()
            or (p and ends.max() > (out.shape[0] if out.ndim else 1))
            or (ends[order][:-1] > offsets[order][1:]).any()):
        raise ArgumentError(f"rows and offsets must place {p} non-overlapping blocks inside out's "
                            f"{out.shape[0] if out.ndim else 1} rows; got rows {rows.tolist()}, offsets "
                            f"{offsets.tolist()}")
    if algorithm not in ("auto", "ring", "native"):
        raise ArgumentError(f"iallgather_in_place runs 'auto', 'ring' or 'native', not {algorithm!r}")
    return rows, offsets, ends


def ibcast(x, root=0, algorithm="auto", comm=None, segment_bytes=None, check=None):
    """Start :func:`bcast` (in place into ``x``); the request's ``wait()`` returns ``x``."""
    _CALLS[0] += 1
    if _fault.ARMED:
        _fault.collective(_CALLS[0])
    context, (x, root, chosen) = _checked_args("ibcast", comm, check,
                                               lambda c: _bcast_args(x, root, algorithm, c, "ibcast"), _bcast_signature)
    site = _nb.call_site(sys._getframe(1))
    if context.comm.Get_size() == 1 or x.size == 0:
        return _nb.completed(x, site)
    return _nb.start(context, "bcast", chosen, (_flat(x), int(root), segment_bytes), lambda: x, site)


def _fused(arrays, op, algorithm, bucket_bytes, comm, check, name, cached=True):
    """``allreduce_many``'s arguments checked: ``(arrays, op, plan, algorithms)``.

    A repeated call (the same op, algorithm, bucket size, shapes and dtypes, as a training
    loop makes every step) takes its plan, and the buckets' algorithms, from the
    communicator's context (the algorithms are chosen again after a registration or a new
    tuning: ``_forget_plans``); check mode, and ``cached=False``, always take the full path."""
    context = context_of(comm)
    size = context.comm.Get_size()
    key = (name, op, algorithm, bucket_bytes, len(arrays) if hasattr(arrays, "__len__") else -1)
    checked = _check_enabled(check)
    plans = context.plans.setdefault("fused", {})
    plan = None if checked or not cached else _fusion.cached(plans, arrays, key)
    if plan is not None:
        op = plan.op
    else:
        error = None
        try:
            if isinstance(arrays, np.ndarray) or not hasattr(arrays, "__len__"):
                raise ArgumentError(f"{name} takes a sequence of arrays, got {type(arrays).__name__}")
            arrays = [_contiguous_input(a) for a in arrays]
            op = resolve_op(op)
            for a in arrays:
                _dtype_for(a.dtype, op)
            if not isinstance(bucket_bytes, (int, np.integer)) or bucket_bytes < 1:
                raise ArgumentError(f"bucket_bytes must be a positive integer, got {bucket_bytes!r}")
            plan = _fusion.Plan([a.shape for a in arrays], [a.dtype for a in arrays], int(bucket_bytes))
            plan.op = op
        except ArgumentError as exc:
            error = exc
        _agree(context, error, check, name,
               lambda: (name, getattr(op, "label", op), algorithm, int(bucket_bytes),
                        [(str(a.dtype), a.shape) for a in arrays]))
        if not checked:
            _fusion.remember(plans, key, plan)
    if plan.names_at != _generation[0]:
        plan.names = [_fusion.fused_algorithm(choose("allreduce", algorithm, nbytes, size, op.commutative),
                                              algorithm == "auto", _fusion.exact_op(op, dtype), size)
                      for _, _, dtype, _, nbytes, _ in plan.parts]
        plan.names_at = _generation[0]
    return arrays, op, plan, plan.names


def _packed(arrays, op, algorithm, bucket_bytes, comm, check, name):
    """:func:`_fused`, and the first bucket packed (a cached plan with one bucket leaves the dtypes
    to the pack, before any message: an array whose dtype changed takes the full path)."""
    fused = _fused(arrays, op, algorithm, bucket_bytes, comm, check, name)
    if not fused[2].parts:
        return fused, None
    try:
        return fused, fused[2].pack(fused[0], 0)
    except TypeError:
        fused = _fused(arrays, op, algorithm, bucket_bytes, comm, check, name, cached=False)
        return fused, fused[2].pack(fused[0], 0)


def allreduce_many(arrays, op="sum", algorithm="auto", comm=None, bucket_bytes=_fusion.DEFAULT_BUCKET_BYTES,
                   check=None):
    """Allreduce many arrays at once (tensor fusion): one call per bucket of packed arrays.

    Parameters
    ----------
    arrays : sequence of array_like
        Any shapes; any supported dtypes (a bucket holds one dtype). The same shapes and
        dtypes, in the same order, on every rank.
    op, algorithm, comm, check
        As in :func:`allreduce`; ``algorithm`` is applied per bucket (``auto`` chooses for
        the bucket's size, and never an algorithm whose result depends on where an
        element sits: see :mod:`mpiml.collectives.fusion`).
    bucket_bytes : int
        The most bytes packed into one buffer (an array larger than that goes alone).

    Returns
    -------
    list of numpy.ndarray
        The reductions, in order, each in its array's shape: bitwise equal to
        ``[allreduce(a, op, algorithm=name) for a in arrays]`` with the bucket's algorithm
        ``name`` (any but ``ring`` at p >= 3 with a floating sum or product), on every rank.
        They are views of the fused buffers (new ones at every call).
    """
    _CALLS[0] += 1
    if _fault.ARMED:
        _fault.collective(_CALLS[0])
    (arrays, op, plan, names), buffer = _packed(arrays, op, algorithm, bucket_bytes, comm, check, "allreduce_many")
    if plan.whole:
        return plan.views(allreduce(buffer, op, names[0], comm, out=buffer))
    results = [None] * plan.count
    for j, (part, name) in enumerate(zip(plan.parts, names)):
        if j:
            buffer = plan.pack(arrays, j)
        plan.unpack(allreduce(buffer, op, name, comm, out=buffer), part, results)
    return results


def iallreduce_many(arrays, op="sum", algorithm="auto", comm=None, bucket_bytes=_fusion.DEFAULT_BUCKET_BYTES,
                    check=None):
    """Start :func:`allreduce_many`: one :func:`iallreduce` per bucket; ``wait()`` returns the list of results."""
    _CALLS[0] += 1
    if _fault.ARMED:
        _fault.collective(_CALLS[0])
    (arrays, op, plan, names), buffer = _packed(arrays, op, algorithm, bucket_bytes, comm, check, "iallreduce_many")
    site = _nb.call_site(sys._getframe(1))
    parts = []
    for j, (part, name) in enumerate(zip(plan.parts, names)):
        if j:
            buffer = plan.pack(arrays, j)
        parts.append((part, iallreduce(buffer, op, name, comm, out=buffer)))

    def finish():
        if plan.whole:
            return plan.views(parts[0][1].wait())
        results = [None] * plan.count
        for part, request in parts:
            plan.unpack(request.wait(), part, results)
        return results

    return _nb.gathered([request for _, request in parts], finish, site)


_watchdog.watch(iallreduce, ireduce_scatter, iallgather, iallgather_in_place, ibcast, allreduce_many, iallreduce_many)
__all__ += ["allreduce_many", "iallgather", "iallgather_in_place", "iallreduce", "iallreduce_many", "ibcast",
            "ireduce_scatter"]
