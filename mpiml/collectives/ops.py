"""Reduction operators and the dtypes the collectives accept (pure numpy, no MPI)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mpiml.errors import ArgumentError

SUPPORTED_KINDS = "iufc"  # signed/unsigned integers, floats, complex


@dataclass(frozen=True)
class ReduceOp:
    """An elementwise reduction ``out = func(a, b)`` applied in rank order.

    Parameters
    ----------
    func : callable
        A binary numpy ufunc, or any callable ``func(a, b, out=out)`` that writes the
        elementwise result into ``out`` (which may alias ``a`` or ``b``).
    commutative : bool
        Whether ``func(a, b) == func(b, a)``. Non-commutative operators are combined
        with lower ranks on the left; algorithms registered ``commutative_only``
        (``ring``, ``rabenseifner``) reorder operands and refuse such an operator.
        Every operator must be associative.
    name : str
        Used in messages and in the cross-rank argument check.
    """

    func: object
    commutative: bool = True
    name: str = ""

    def __call__(self, a, b, out):
        return self.func(a, b, out=out)

    @property
    def label(self) -> str:
        return self.name or getattr(self.func, "__name__", repr(self.func))


SUM = ReduceOp(np.add, True, "sum")
PROD = ReduceOp(np.multiply, True, "prod")
MIN = ReduceOp(np.minimum, True, "min")
MAX = ReduceOp(np.maximum, True, "max")

_BY_NAME = {"sum": SUM, "prod": PROD, "min": MIN, "max": MAX}
_COMMUTATIVE_UFUNCS = {
    np.add: "sum", np.multiply: "prod", np.minimum: "min", np.maximum: "max",
    np.fmin: "fmin", np.fmax: "fmax", np.bitwise_and: "band", np.bitwise_or: "bor",
    np.bitwise_xor: "bxor", np.logical_and: "land", np.logical_or: "lor",
    np.logical_xor: "lxor",
}
_ORDER_OPS = ("min", "max", "fmin", "fmax")


def resolve_op(op) -> ReduceOp:
    """Turn a name (``"sum"``, ``"prod"``, ``"min"``, ``"max"``), a numpy ufunc or a
    :class:`ReduceOp` into a :class:`ReduceOp`."""
    if isinstance(op, ReduceOp):
        return op
    if isinstance(op, str):
        try:
            return _BY_NAME[op.lower()]
        except KeyError:
            raise ArgumentError(
                f"unknown op {op!r}; expected one of {sorted(_BY_NAME)}, a numpy ufunc or a ReduceOp"
            ) from None
    if isinstance(op, np.ufunc):
        if op.nin != 2 or op.nout != 1:
            raise ArgumentError(f"ufunc {op.__name__} is not a binary reduction (nin=2, nout=1)")
        name = _COMMUTATIVE_UFUNCS.get(op)
        if name in _BY_NAME:
            return _BY_NAME[name]
        return ReduceOp(op, name is not None, name or op.__name__)
    raise ArgumentError(f"op must be a name, a numpy ufunc or a ReduceOp, got {op!r}")


def check_dtype(dtype, op: ReduceOp | None = None) -> np.dtype:
    """Refuse dtypes the collectives cannot handle, and ops undefined on the dtype."""
    dtype = np.dtype(dtype)
    if dtype.kind not in SUPPORTED_KINDS or dtype.fields is not None:
        raise ArgumentError(
            f"dtype {dtype} is not numeric; mpiml collectives take integer, unsigned, "
            "floating or complex arrays"
        )
    if op is not None and dtype.kind == "c" and op.label in _ORDER_OPS:
        raise ArgumentError(f"op {op.label!r} is not defined for complex dtype {dtype}")
    return dtype
