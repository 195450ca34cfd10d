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

import math
from operator import attrgetter

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


class Plan:
    """How one sequence of shapes and dtypes is fused: its buckets, how each is packed and unpacked.

    Made once per sequence (a training loop fuses the same gradients every step) and kept
    in the communicator's context, so a repeated call pays no planning: it compares the
    arrays' shapes and dtypes with the plan's, packs each bucket with one
    ``np.concatenate``, and cuts the reduced buffer into views with one reshape per run of
    equally shaped arrays (slicing 100 views one by one cost as much as the pack).

    Each call packs into a new buffer (the results are its views, so results still held are
    never overwritten; malloc hands the freed one back when they are not). At p=2 a 400 KB
    pack costs 25 us on its own but about 110 us right after an allreduce of the previous
    buffer, as does the reduction after it: the peer's core read those cache lines, and
    reusing a buffer, or cycling through up to 8, did not make pack + allreduce cheaper.
    """

    def __init__(self, shapes, dtypes, bucket_bytes: int):
        self.shapes, self.dtypes = list(shapes), list(dtypes)
        self.count = len(self.shapes)
        sizes = [math.prod(shape) for shape in self.shapes]
        self.buckets = plan([n * d.itemsize for n, d in zip(sizes, self.dtypes)], self.dtypes, bucket_bytes)
        # per bucket: (members, selector of its arrays, dtype, elements, bytes, runs to unpack)
        self.parts = []
        for bucket in self.buckets:
            lo, hi = bucket[0], bucket[-1] + 1
            selector = slice(lo, hi) if hi - lo == len(bucket) else tuple(bucket)
            runs, offset = [], 0
            for i in bucket:
                shape, n = self.shapes[i], sizes[i]
                last = runs[-1] if runs else None
                if last is not None and last[0] + last[1] == i and last[2] == shape and shape != ():
                    last[1] += 1
                else:
                    runs.append([i, 1, shape, offset, n])
                offset += n
            dtype = self.dtypes[bucket[0]]
            self.parts.append((bucket, selector, dtype, offset, offset * dtype.itemsize,
                               [tuple(run) for run in runs]))
        self.whole = len(self.parts) == 1 and len(self.parts[0][5]) == 1 and self.count > 0
        self.single = len(self.parts) == 1
        self.names, self.names_at = None, None   # the buckets' algorithms, and for which tuning (api)

    def matches(self, arrays) -> bool:
        """Whether ``arrays`` (numpy arrays, already known) have this plan's shapes and dtypes, in order.

        With one bucket, the dtypes are left to :meth:`pack` (``casting="no"``: a TypeError),
        which packs the only bucket before any message."""
        return list(map(_SHAPE, arrays)) == self.shapes and (
            self.single or list(map(_DTYPE, arrays)) == self.dtypes)

    def pack(self, arrays, j: int) -> np.ndarray:
        """A new flat buffer holding bucket ``j``'s arrays, in order (TypeError: an array of another dtype)."""
        _, selector, dtype, size, _, _ = self.parts[j]
        members = arrays[selector] if type(selector) is slice else [arrays[i] for i in selector]
        return np.concatenate(members, axis=None, out=np.empty(size, dtype), casting="no")

    def unpack(self, buffer, part, results) -> None:
        """Set ``results[i]`` to the view of ``buffer`` holding array ``i`` of bucket ``part``, in its shape."""
        for i, k, shape, offset, n in part[5]:
            if k == 1:
                results[i] = buffer[offset:offset + n].reshape(shape)
            else:
                results[i:i + k] = buffer[offset:offset + k * n].reshape((k,) + shape)   # iterating: views

    def views(self, buffer) -> list:
        """The results of a plan with one bucket of one run (the common case): its views, as a list."""
        i, k, shape, offset, n = self.parts[0][5][0]
        return list(buffer.reshape((k,) + shape)) if k > 1 else [buffer.reshape(shape)]


_SHAPE, _DTYPE = attrgetter("shape"), attrgetter("dtype")
_NDARRAY = {np.ndarray}
MAX_PLANS = 64


def cached(plans, arrays, key):
    """The plan in ``plans`` under ``key`` if ``arrays`` (a list or tuple of numpy arrays) fit it, else None."""
    if type(arrays) not in (list, tuple) or set(map(type, arrays)) != _NDARRAY:
        return None
    try:
        found = plans.get(key)
    except TypeError:   # an op around an unhashable callable
        return None
    return found if found is not None and found.matches(arrays) else None


def remember(plans, key, plan) -> None:
    """Keep ``plan`` under ``key`` (a program of many shapes starts afresh beyond ``MAX_PLANS``)."""
    try:
        if len(plans) >= MAX_PLANS:
            plans.clear()
        plans[key] = plan
    except TypeError:
        pass


def fused_algorithm(chosen: str, auto: bool, exact: bool, size: int) -> str:
    """``auto``'s pick for a fused buffer: not a position-dependent algorithm where that changes the bits."""
    if auto and not exact and size > 2 and chosen in POSITION_DEPENDENT:
        return "rabenseifner"
    return chosen


def exact_op(op, dtype) -> bool:
    """Whether ``op`` on ``dtype`` gives the same bits in any operand order (integers; min and max)."""
    return np.dtype(dtype).kind in "iub" or op.label in ("min", "max", "fmin", "fmax", "band", "bor", "bxor")
