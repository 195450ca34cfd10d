"""Gradient compression codecs: pure functions of local arrays (no MPI).

What :class:`mpiml.train.compressed.CompressedSync` puts on the wire instead of the
float64 gradient, and how the receivers turn it back into numbers:

- ``fp16``: IEEE half precision (numpy's ``float16``, round to nearest even), after a
  scaling of each rank's message by a power of two (exact: it changes only exponents)
  that puts its largest entry near ``2**15``, so that no entry overflows half precision's
  65504 and few underflow. 2 bytes an entry.
- ``bf16``: bfloat16, the upper 16 bits of the float32 pattern, rounded to nearest even
  (numpy has no bfloat16 type: the 16 bits travel as ``uint16``). The float64 gradient
  is rounded to float32 first, as a float32 trainer would hold it: two roundings, which in
  rare ties can differ from a direct float64 rounding by one bfloat16 unit. 2 bytes an entry.
- ``topk``: the ``k = ceil(ratio * n)`` entries of largest magnitude (ties: the lowest
  index), as int32 indices and float32 values, with error feedback (Stich et al. 2018,
  "Sparsified SGD with memory"): each rank keeps a residual, adds its gradient to it,
  sends the residual's top k, and keeps what it did not send (including the float32
  rounding of the values sent): ``sent + new residual == old residual + gradient`` exactly.
- ``powersgd``: a rank-``r`` approximation ``P Q^T`` of a matrix-shaped gradient (the
  softmax model's ``features x classes`` weights), one step of subspace iteration per
  update with ``Q`` warm-started from the previous update (Vogels et al. 2019), with error
  feedback; vectors (one-output models, intercepts) travel uncompressed. Bytes
  ``8 r (rows + cols)`` instead of ``8 rows cols``.

Bytes on the wire are each rank's message per update (what it hands to the collective),
see the codecs' ``wire_bytes``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mpiml.errors import ArgumentError

CODECS = ("none", "fp16", "bf16", "topk", "powersgd")
DEFAULT_RATIO = 0.01
DEFAULT_RANK = 1
FP16_TARGET = 15  # the largest entry is scaled to [2**14, 2**15): fp16's largest finite value is 65504 < 2**16


@dataclass(frozen=True)
class Spec:
    """A parsed ``--compress`` value: the codec, with its ratio (topk) or rank (powersgd)."""

    name: str = "none"
    ratio: float | None = None
    rank: int | None = None

    def __str__(self) -> str:
        if self.name == "topk":
            return f"topk:{self.ratio:g}"
        if self.name == "powersgd":
            return f"powersgd:{self.rank}"
        return self.name


def parse(text) -> Spec:
    """``none``, ``fp16``, ``bf16``, ``topk[:RATIO]`` (0 < RATIO <= 1) or ``powersgd[:RANK]`` -> :class:`Spec`."""
    name, _, arg = str(text).strip().lower().partition(":")
    if name not in CODECS:
        raise ArgumentError(f"unknown compress {text!r}; choose from none, fp16, bf16, topk[:RATIO], powersgd[:RANK]")
    if name == "topk":
        try:
            ratio = float(arg) if arg else DEFAULT_RATIO
        except ValueError:
            raise ArgumentError(f"compress {text!r}: topk's ratio must be a number in (0, 1]") from None
        if not 0 < ratio <= 1:
            raise ArgumentError(f"compress {text!r}: topk's ratio must be in (0, 1], got {ratio:g}")
        return Spec(name, ratio=ratio)
    if name == "powersgd":
        try:
            rank = int(arg) if arg else DEFAULT_RANK
        except ValueError:
            raise ArgumentError(f"compress {text!r}: powersgd's rank must be an integer >= 1") from None
        if rank < 1:
            raise ArgumentError(f"compress {text!r}: powersgd's rank must be >= 1, got {rank}")
        return Spec(name, rank=rank)
    if arg:
        raise ArgumentError(f"compress {text!r}: {name} takes no argument")
    return Spec(name)


# -- 16-bit floats --------------------------------------------------------------------------------
def fp16_scale(x: np.ndarray) -> float:
    """The power of two that brings ``max |x|`` into ``[2**14, 2**15)`` (1.0 for an all-zero or non-finite ``x``)."""
    top = float(np.max(np.abs(x), initial=0.0))
    if not (top > 0 and math.isfinite(top)):
        return 1.0
    return math.ldexp(1.0, min(max(FP16_TARGET - math.frexp(top)[1], -1000), 1000))  # a finite float64


def encode_fp16(x: np.ndarray) -> tuple[np.ndarray, float]:
    """``(bits, scale)``: ``x * scale`` rounded to float16 (as ``uint16`` bits), ``scale`` from :func:`fp16_scale`."""
    scale = fp16_scale(x)
    return (np.asarray(x, dtype=np.float64) * scale).astype(np.float16).view(np.uint16), scale


def decode_fp16(bits: np.ndarray, scale: float) -> np.ndarray:
    """The float64 values of :func:`encode_fp16`'s message."""
    return bits.view(np.float16).astype(np.float64) / scale


def encode_bf16(x: np.ndarray) -> np.ndarray:
    """bfloat16 bits (``uint16``) of ``x``: float32, then its upper 16 bits rounded to nearest even.

    NaN stays a (quiet) NaN; values past bfloat16's range round to infinity.
    """
    with np.errstate(over="ignore"):   # past float32's range: infinity, as bfloat16 would have it
        f = np.asarray(x, dtype=np.float32)
    u = f.view(np.uint32).astype(np.uint64)
    # round to nearest, ties to even: add 0x7FFF plus the lowest kept bit, then cut the low half
    rounded = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(f)
    if nan.any():
        rounded[nan] = (u[nan] >> 16).astype(np.uint16) | 0x0040
    return rounded


def decode_bf16(bits: np.ndarray) -> np.ndarray:
    """The float64 values of bfloat16 bits (exact: every bfloat16 is a float32)."""
    return (bits.astype(np.uint32) << 16).view(np.float32).astype(np.float64)


# -- top-k with error feedback ----------------------------------------------------------------------
def topk_count(n: int, ratio: float) -> int:
    """Entries a rank sends of ``n``: ``ceil(ratio n)``, at least 1 (0 for ``n == 0``), at most ``n``."""
    return min(n, max(1, math.ceil(ratio * n - 1e-9))) if n else 0


def _magnitudes(x: np.ndarray) -> np.ndarray:
    """``|x|`` with NaN as infinity: a diverging gradient is sent (and the loss check stops the run)
    rather than shortening one rank's message."""
    a = np.abs(x)
    return np.where(np.isnan(a), np.inf, a) if np.isnan(a).any() else a


def select_topk(x: np.ndarray, k: int) -> np.ndarray:
    """Ascending indices of the ``k`` entries of largest ``|x|`` (NaN largest); ties go to the lowest index.

    O(n): a partition finds the k-th largest magnitude; every entry above it is taken, and
    the lowest-indexed entries equal to it fill the rest.
    """
    n = x.size
    if k >= n:
        return np.arange(n, dtype=np.int64)
    if k <= 0:
        return np.empty(0, dtype=np.int64)
    a = _magnitudes(x)
    kth = a[np.argpartition(a, n - k)[n - k]]
    above = np.flatnonzero(a > kth)
    tied = np.flatnonzero(a == kth)[: k - above.size]
    return np.sort(np.concatenate([above, tied]))


def select_topk_reference(x: np.ndarray, k: int) -> np.ndarray:
    """:func:`select_topk` by a stable sort of ``-|x|`` (the obviously-correct reference)."""
    return np.sort(np.argsort(-_magnitudes(x), kind="stable")[:k])


class TopK:
    """Top-k sparsification of ``n`` entries with error feedback (one per rank: the residual is its own)."""

    def __init__(self, n: int, ratio: float, select=select_topk):
        self.n, self.k = int(n), topk_count(int(n), ratio)
        self.residual = np.zeros(self.n)
        self.select = select
        self.index_dtype = np.int32 if self.n < 2**31 else np.int64

    @property
    def wire_bytes(self) -> int:
        """Bytes of one message: k indices and k float32 values."""
        return self.k * (np.dtype(self.index_dtype).itemsize + 4)

    def encode(self, grad: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(indices, values)`` to send for ``grad``; the residual keeps what is not sent."""
        r = self.residual
        r += grad
        index = self.select(r, self.k)
        values = r[index].astype(np.float32)
        # the float32 rounding error is exactly representable in float64: it stays, exactly, in the residual
        r[index] -= values
        return index.astype(self.index_dtype), values

    @staticmethod
    def decode(messages, n: int) -> np.ndarray:
        """The sum of the ranks' ``(indices, values)`` messages, added in list (rank) order."""
        out = np.zeros(n)
        for index, values in messages:
            out[index] += values   # a rank's indices are distinct
        return out


# -- PowerSGD -------------------------------------------------------------------------------------
def orthonormalize(P: np.ndarray) -> np.ndarray:
    """Orthonormal columns by modified Gram-Schmidt, in place (a zero column stays zero)."""
    for j in range(P.shape[1]):
        col = P[:, j]
        for i in range(j):
            col -= (P[:, i] @ col) * P[:, i]
        norm = math.sqrt(float(col @ col))
        if norm > 0:
            col /= norm
        else:
            col[:] = 0.0
    return P


def powersgd_applies(shape, rank: int) -> bool:
    """Whether rank-``rank`` factors of a ``shape`` matrix are smaller than it (else it travels whole)."""
    rows, cols = shape
    return rows > 1 and cols > 1 and rank * (rows + cols) < rows * cols


class PowerSGD:
    """Rank-``rank`` PowerSGD of a ``shape`` gradient with error feedback, on one rank.

    One update: ``P_i = M_i Q`` with ``M_i = residual + gradient`` (:meth:`left`); the sum of
    the ``P_i`` over the ranks orthonormalized to ``P``; ``Q_i = M_i^T P`` (:meth:`right`);
    the sum ``Q`` of the ``Q_i`` gives the update's gradient sum ``P Q^T`` (:meth:`finish`),
    the residual ``M_i - P Q_i^T``, and the next update's start ``Q`` (warm start). The first
    ``Q`` (and any column that became zero) is drawn from ``seed``: the same on every rank.
    """

    def __init__(self, shape, rank: int, seed: int = 0):
        self.shape, self.rank = (int(shape[0]), int(shape[1])), int(rank)
        self.rng = np.random.default_rng([int(seed), 0x9051D])
        self.Q = self.rng.standard_normal((self.shape[1], self.rank))
        self.residual = np.zeros(self.shape)
        self.M = self.P = self.Qi = None

    @property
    def wire_bytes(self) -> int:
        """Bytes of one update's two messages, float64 ``P_i`` and ``Q_i``."""
        return 8 * self.rank * (self.shape[0] + self.shape[1])

    def left(self, grad: np.ndarray) -> np.ndarray:
        """``P_i = (residual + grad) Q`` (``grad`` of ``shape``), to be summed over the ranks."""
        self.M = self.residual + grad
        return self.M @ self.Q

    def right(self, P_sum: np.ndarray) -> np.ndarray:
        """``Q_i = M_i^T P`` with ``P`` the orthonormalized sum of the ``P_i``, to be summed over the ranks."""
        self.P = orthonormalize(np.array(P_sum, dtype=np.float64))
        self.Qi = self.M.T @ self.P
        return self.Qi

    def finish(self, Q_sum: np.ndarray) -> np.ndarray:
        """The update's gradient sum ``P Q^T``; keeps the residual and the next ``Q``."""
        approx = self.P @ Q_sum.T
        np.subtract(self.M, self.P @ self.Qi.T, out=self.residual)
        self.Q = np.array(Q_sum, dtype=np.float64)
        dead = ~np.any(self.Q != 0, axis=0)
        if dead.any():   # a zero column would stay zero for ever: draw it again
            self.Q[:, dead] = self.rng.standard_normal((self.shape[1], int(dead.sum())))
        self.M = self.Qi = None
        return approx
