"""The MPI library's own collectives, as the baseline every hand-written algorithm is
measured against.

Dtypes MPI has no datatype for (float16) and operators MPI has no predefined op for
run through a contiguous byte datatype and a user-defined ``MPI.Op`` that calls numpy,
so every dtype and operator works here too.
"""

from __future__ import annotations

import numpy as np
from mpi4py import MPI

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


def message_and_op(array, op):
    """The buffer spec and ``MPI.Op`` that make the MPI library reduce ``array`` with ``op``."""
    datatype = _mpi_datatype(array.dtype)
    predefined = _PREDEFINED_OPS.get(op.name)
    if datatype is not None and predefined is not None:
        return datatype, getattr(MPI, predefined)
    return _byte_type(array.dtype.itemsize), _user_op(op, array.dtype)


def _same_buffer(a, b):
    return a is b or (a.size == b.size and a.ctypes.data == b.ctypes.data)


def allreduce(comm, x, out, op):
    datatype, mpi_op = message_and_op(x, op)
    send = MPI.IN_PLACE if _same_buffer(x, out) else [x, datatype]
    comm.Allreduce(send, [out, datatype], mpi_op)
    return out


def reduce(comm, x, out, op, root):
    datatype, mpi_op = message_and_op(x, op)
    is_root = comm.Get_rank() == root
    send = MPI.IN_PLACE if (is_root and _same_buffer(x, out)) else [x, datatype]
    comm.Reduce(send, [out, datatype] if is_root else None, mpi_op, root)
    return out


def reduce_scatter(comm, x, out, op, counts):
    datatype, mpi_op = message_and_op(x, op)
    comm.Reduce_scatter([x, datatype], [out, datatype], [int(c) for c in counts], mpi_op)
    return out


def allgather(comm, local, out, counts):
    itemsize = local.dtype.itemsize
    byte_counts = [int(c) * itemsize for c in counts]
    displs = np.zeros(len(counts), dtype=np.int64)
    np.cumsum(byte_counts[:-1], out=displs[1:])
    comm.Allgatherv([local, MPI.BYTE], [out, (byte_counts, displs.tolist()), MPI.BYTE])
    return out


def bcast(comm, buf, root):
    comm.Bcast([buf, MPI.BYTE], root)
    return buf
