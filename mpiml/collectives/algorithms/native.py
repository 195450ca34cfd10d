"""The MPI library's own collectives, as the baseline every hand-written algorithm is
measured against.

Dtypes MPI has no datatype for (float16) and operators MPI has no predefined op for
run through a contiguous byte datatype and a user-defined ``MPI.Op`` that calls numpy,
so every dtype and operator works here too.
"""

from __future__ import annotations

import numpy as np
from mpi4py import MPI

from mpiml.collectives import model
from mpiml.collectives.registry import register

_PREDEFINED_OPS = {"sum": "SUM", "prod": "PROD", "min": "MIN", "max": "MAX",
                   "band": "BAND", "bor": "BOR", "bxor": "BXOR",
                   "land": "LAND", "lor": "LOR", "lxor": "LXOR"}
_user_ops: dict = {}
_byte_types: dict = {}


def _byte_type(itemsize):
    datatype = _byte_types.get(itemsize)
    if datatype is None:
        datatype = MPI.BYTE.Create_contiguous(itemsize).Commit()
        _byte_types[itemsize] = datatype
    return datatype


def _mpi_datatype(dtype):
    # float16 goes through the byte path on purpose: MPICH's MPIX_C_FLOAT16 is an
    # extension Open MPI lacks, and numpy's rounding then matches the other algorithms.
    if dtype.kind == "f" and dtype.itemsize == 2:
        return None
    try:
        return MPI.Datatype.fromcode(dtype.char)
    except (ValueError, KeyError):
        return None


def _user_op(op, dtype):
    key = (op, dtype)
    mpi_op = _user_ops.get(key)
    if mpi_op is None:
        def apply(inbuf, inoutbuf, datatype, _op=op, _dtype=dtype):
            a = np.frombuffer(inbuf, dtype=_dtype)
            b = np.frombuffer(inoutbuf, dtype=_dtype)
            _op(a, b, out=b)  # MPI: inout = in op inout, with `in` from the lower ranks

        mpi_op = MPI.Op.Create(apply, commute=op.commutative)
        _user_ops[key] = mpi_op
    return mpi_op


def predefined(mpi_op) -> bool:
    """Whether ``mpi_op`` is one of the MPI library's own operations (not one made for a numpy ufunc)."""
    return mpi_op not in _user_ops.values()


_messages: dict = {}


def message_and_op(array, op):
    """The buffer spec and ``MPI.Op`` that make the MPI library reduce ``array`` with ``op``
    (found once per dtype and op: every native call asks)."""
    key = (array.dtype, op)
    try:
        found = _messages.get(key)
    except TypeError:  # a ReduceOp around an unhashable callable
        return _message_and_op(array.dtype, op)
    if found is None:
        found = _messages[key] = _message_and_op(array.dtype, op)
    return found


def _message_and_op(dtype, op):
    datatype = _mpi_datatype(dtype)
    predefined = _PREDEFINED_OPS.get(op.name)
    if datatype is not None and predefined is not None:
        return datatype, getattr(MPI, predefined)
    return _byte_type(dtype.itemsize), _user_op(op, dtype)


def _same_buffer(a, b):
    # may_share_memory first: a bounds check, where reading .ctypes costs a microsecond per array
    return a is b or (a.size == b.size and np.may_share_memory(a, b) and a.ctypes.data == b.ctypes.data)


def _cost(textbook, collective, copies_input):
    """The library's cost: one Python step (the mpi4py call), then its own steps at ``alpha``.

    allreduce and reduce also copy the input out of place and, from ``fault_bytes`` up,
    fault in fresh temporaries; every collective pays its fitted ``native_extra`` per byte
    (:func:`mpiml.collectives.model.with_native_extra`).
    """
    def cost(n, p, r):
        seconds = r.params.step_overhead + textbook(n, p, r.alpha, r.beta, r.gamma)
        if copies_input:
            seconds += 0.0 if r.in_place else n * r.copy
            if n >= r.params.fault_bytes:
                seconds += n * r.params.native_fault
        return model.with_native_extra(seconds, r.params, collective, n)

    return cost


@register("allreduce", "native", cost=_cost(model.allreduce_library, "allreduce", True))
def allreduce(transport, x, out, op, workspace):
    datatype, mpi_op = message_and_op(x, op)
    send = MPI.IN_PLACE if _same_buffer(x, out) else [x, datatype]
    transport.comm.Allreduce(send, [out, datatype], mpi_op)
    return out


@register("reduce_scatter", "native", cost=_cost(model.reduce_scatter_library, "reduce_scatter", False))
def reduce_scatter(transport, x, out, op, counts, workspace):
    datatype, mpi_op = message_and_op(x, op)
    transport.comm.Reduce_scatter([x, datatype], [out, datatype], [int(c) for c in counts], mpi_op)
    return out


@register("allgather", "native", cost=_cost(model.allgather_library, "allgather", False))
def allgather(transport, local, out, counts, workspace):
    itemsize = local.dtype.itemsize
    byte_counts = [int(c) * itemsize for c in counts]
    displs = np.zeros(len(counts), dtype=np.int64)
    np.cumsum(byte_counts[:-1], out=displs[1:])
    transport.comm.Allgatherv([local, MPI.BYTE], [out, (byte_counts, displs.tolist()), MPI.BYTE])
    return out


@register("bcast", "native", cost=_cost(model.bcast_library, "bcast", False))
def bcast(transport, buf, root, segment_bytes, workspace):
    transport.comm.Bcast([buf, MPI.BYTE], root)
    return buf


@register("reduce", "native", cost=_cost(model.reduce_library, "reduce", True))
def reduce(transport, x, out, op, root, workspace):
    datatype, mpi_op = message_and_op(x, op)
    is_root = transport.rank == root
    send = MPI.IN_PLACE if (is_root and _same_buffer(x, out)) else [x, datatype]
    transport.comm.Reduce(send, [out, datatype] if is_root else None, mpi_op, root)
    return out
