"""Tensor fusion (as Horovod's): many small arrays reduced as a few large buffers (pure numpy, no MPI).

Arrays are grouped by dtype (in their order), and each group is cut into buckets of at
most ``bucket_bytes`` (an array larger than that is a bucket of its own). A bucket is packed
into one flat buffer, reduced by one allreduce in place, and the results are views of it.

Bitwise equal to separate calls: an elementwise reduction gives each element the same
result wherever it sits in the message, provided the algorithm combines every element's
operands in the same order. ``recursive_doubling``, ``rabenseifner``, ``tree`` and the MPI
library's ``native`` do (the order depends only on the ranks); ``ring`` at p >= 3 does not
(an element's order starts at the ring position of its block), so fused and separate
floating sums through ``ring`` agree only to rounding. :func:`fused_algorithm` keeps
``auto`` off ``ring`` there when the result would depend on it.
"""

from __future__ import annotations

import numpy as np

DEFAULT_BUCKET_BYTES = 16 << 20  # 16 MiB: large enough to amortize a call, small enough to stay in memory twice
POSITION_DEPENDENT = ("ring",)   # algorithms whose per-element operand order depends on the element's place


def plan(nbytes, dtypes, bucket_bytes: int) -> list:
    """Buckets as lists of array indices: same dtype within a bucket, at most ``bucket_bytes`` each
    (an array larger than that alone); arrays keep their order within a dtype, dtypes by first appearance."""
    groups: dict = {}
    for index, dtype in enumerate(dtypes):
        groups.setdefault(np.dtype(dtype), []).append(index)
    buckets = []
    for members in groups.values():
        current, size = [], 0
        for index in members:
            n = int(nbytes[index])
            if current and size + n > bucket_bytes:
                buckets.append(current)
                current, size = [], 0
            current.append(index)
            size += n
        if current:
            buckets.append(current)
    return buckets


def pack(arrays, bucket) -> np.ndarray:
    """One flat buffer holding ``arrays[i]`` for ``i`` in ``bucket``, in order (a new array)."""
    if len(bucket) == 1:
        return arrays[bucket[0]].reshape(-1).copy()
    return np.concatenate([arrays[i].reshape(-1) for i in bucket])  # one C loop: 10x a Python loop of copies


def unpack(buffer, arrays, bucket, results) -> None:
    """Set ``results[i]`` to the view of ``buffer`` that holds array ``i``'s elements, in its shape."""
    offset = 0
    for i in bucket:
        shape = arrays[i].shape
        n = arrays[i].size
        results[i] = buffer[offset:offset + n].reshape(shape)
        offset += n


def fused_algorithm(chosen: str, auto: bool, exact: bool, size: int) -> str:
    """``auto``'s pick for a fused buffer: not a position-dependent algorithm where that changes the bits."""
    if auto and not exact and size > 2 and chosen in POSITION_DEPENDENT:
        return "rabenseifner"
    return chosen


def exact_op(op, dtype) -> bool:
    """Whether ``op`` on ``dtype`` gives the same bits in any operand order (integers; min and max)."""
    return np.dtype(dtype).kind in "iub" or op.label in ("min", "max", "fmin", "fmax", "band", "bor", "bxor")
