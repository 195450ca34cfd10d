"""Reproducible sums: results that do not depend on how the terms are split over ranks (pure, no MPI).

A floating-point sum depends on the order of its additions, so the same data summed on 3
or on 4 ranks differs in the last bits. Here every term is cut, exactly, into ``K``
pieces that lie on a grid fixed by the *global* largest magnitude of its element and by
a bound ``count`` on the number of terms (Demmel and Nguyen's pre-rounding, the idea
behind ReproBLAS). On such a grid float64 additions are exact, so the sums of the pieces
(the *folds*) are the same whatever the order, the grouping or the number of ranks; one
final rounding makes the result. It costs two reductions instead of one: the maximum of
one number per element, then the sum of ``K`` numbers per element.

The grid of element ``j``: ``E_j`` is the exponent with ``max |t| < 2^E_j`` over every
term of the element on every rank; terms are scaled by ``2^-E_j`` (exact) so that they
lie in ``(-1, 1)``. With ``H = max(bit_length(count), 2)`` headroom bits and fold width
``W = 53 - H``, fold ``k`` has unit ``u_k = 2^(H - 53 - k W)``: the piece of a term in
fold ``k`` is its remainder rounded to a multiple of ``u_k`` (``(x + s_k) - s_k`` with
``s_k = 1.5 * 2^52 u_k``), and any sum of at most ``count`` such pieces stays below
``2^53 u_k``, hence exact. ``K`` is the smallest count of folds (at least 2) that drops
at most ``2^-64 max|t|`` per element: 2 folds up to 16383 terms, 3 up to about 2^21.

Error bound (:func:`error_bound`): with ``S`` the exact sum of ``n <= count`` terms,
``|result - S| <= n u_{K-1} 2^(E-1) + (K - 1) 2^-52 (|result| + count 2^(E + H - 53)) + 2^-1074``
(the dropped remainders, then the rounding of the ``K - 1`` additions of the folds).

Non-finite terms: an element with any NaN or infinite term (on any rank) sums only those
(order does not matter for them), so it is NaN, or the infinity of the one sign present.
An exact sum of zero is ``+0.0``.

Terms come as a matrix whose column ``j`` feeds element ``j`` (:meth:`Sum.add_rows`) or
as the outer products ``X[i, j] * R[i, c]`` of a dense or CSR ``X`` (element ``j k + c``,
:meth:`Sum.add_outer`: a gradient ``X^T R`` without forming it). Each compiled kernel has
its numpy reference beside it (``MPIML_KERNELS=numpy``), with the same results bit for bit.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from mpiml.errors import ArgumentError
from mpiml.runtime.jit import compiled, kernel

SPECIAL = 4096.0          # the exponent that marks an element with a non-finite term
MIN_EXPONENT = -1021      # 2^-E stays a normal number
TARGET_BITS = 64          # dropped remainders stay below 2^-64 max|t| per element (11 bits below float64's)
MAX_COUNT = 1 << 40
MAX_OPERANDS = 1 << 20    # the count of an allreduce (one operand per rank): fixed, so the same at every p
_POW2 = np.ldexp(1.0, np.arange(-1022, 1024))   # 2^e of the normal exponents


@dataclass(frozen=True)
class Plan:
    """The folds of a sum of at most ``count`` terms per element."""

    count: int
    headroom: int
    width: int
    folds: int
    sigmas: np.ndarray

    def unit(self, k: int) -> float:
        """``u_k``: the grid of fold ``k`` (for a term scaled into ``(-1, 1)``)."""
        return 2.0 ** (self.headroom - 53 - k * self.width)


def plan(count: int) -> Plan:
    """The :class:`Plan` of a sum of at most ``count`` terms per element (the same on every rank)."""
    return _plan(int(count))


@functools.lru_cache(maxsize=256)   # a training run asks for the same few plans once per update
def _plan(count: int) -> Plan:
    if not 0 <= count <= MAX_COUNT:
        raise ArgumentError(f"a reproducible sum takes at most {MAX_COUNT} terms per element, got count={count}")
    h = max(count.bit_length(), 2)
    w = 53 - h
    folds = max(2, 1 + math.ceil((2 * h + TARGET_BITS - 54) / w))
    sigmas = np.array([1.5 * 2.0 ** (h - 1 - k * w) for k in range(folds)])
    return Plan(count, h, w, folds, sigmas)


def exponents(top: np.ndarray) -> np.ndarray:
    """Per element, ``E`` with ``top < 2^E`` (as float64, for a max-reduction); :data:`SPECIAL` where not finite."""
    top = np.ascontiguousarray(top, dtype=np.float64)
    if compiled():
        out = np.empty(top.shape)
        _exponents(top, out)
        return out
    return exponents_reference(top)


def exponents_reference(top: np.ndarray) -> np.ndarray:
    """numpy reference of :func:`exponents`."""
    e = np.frexp(np.where(np.isfinite(top), top, 0.0))[1].astype(np.float64)
    np.maximum(e, MIN_EXPONENT, out=e)
    e[top == 0.0] = MIN_EXPONENT         # frexp(0) gives 0: a rank without terms must not raise the maximum
    e[~np.isfinite(top)] = SPECIAL
    return e


@kernel
def _exponents(top, out):
    bits = top.view(np.int64)
    for j in range(top.shape[0]):
        biased = (bits[j] >> 52) & 0x7FF    # frexp's exponent is biased - 1022 (top >= 0)
        out[j] = SPECIAL if biased == 0x7FF else max(biased - 1022, MIN_EXPONENT)


def scales(E: np.ndarray, fast: bool | None = None) -> np.ndarray:
    """``2^-E`` per element (0 where :data:`SPECIAL`: those elements are summed apart); ``fast``: the
    kernel or the reference (default: :func:`~mpiml.runtime.jit.compiled`)."""
    return _scales_and_specials(np.ascontiguousarray(E, dtype=np.float64), fast)[0]


def _scales_and_specials(E, fast):
    """``(scales(E), whether an element is SPECIAL)``: the kernel finds both in one pass."""
    if compiled() if fast is None else fast:
        out = np.empty(E.shape)
        return out, _scales(E, out) > 0
    special = E >= SPECIAL
    out = np.ldexp(1.0, -np.where(special, 0, E).astype(np.int64))
    out[special] = 0.0
    return out, bool(special.any())


@kernel
def _scales(E, out):
    bits = out.view(np.int64)
    specials = 0
    for j in range(E.shape[0]):
        e = int(E[j])
        if e >= SPECIAL:
            out[j] = 0.0
            specials += 1
        elif -1022 <= e <= 1022:
            bits[j] = (1023 - e) << 52       # 2^-e, a normal number
        else:
            out[j] = math.ldexp(1.0, -e)
    return specials


def value(F: np.ndarray, E: np.ndarray) -> np.ndarray:
    """The sums, rounded once, from the summed folds ``F`` (``(K, n)``) and the exponents ``E``."""
    if compiled():
        out = np.empty(F.shape[1])
        _value(np.ascontiguousarray(F), np.ascontiguousarray(E, dtype=np.float64), _POW2, out)
        return out
    return value_reference(F, E)


@kernel
def _value(F, E, pow2, out):
    K = F.shape[0]
    for j in range(F.shape[1]):
        v = F[K - 1, j]
        for k in range(K - 2, -1, -1):
            v = F[k, j] + v
        e = int(E[j])
        if e >= SPECIAL:
            out[j] = v
        elif -1022 <= e <= 1023:
            # times 2^e: one correctly rounded multiplication, as ldexp
            out[j] = v * pow2[e + 1022]
        else:
            out[j] = math.ldexp(v, e)


def value_reference(F: np.ndarray, E: np.ndarray) -> np.ndarray:
    """numpy reference of :func:`value`."""
    v = F[-1].copy()
    for k in range(F.shape[0] - 2, -1, -1):
        v = F[k] + v
    E = np.asarray(E)
    with np.errstate(over="ignore"):     # an exact sum beyond float64 is an infinity
        return np.ldexp(v, np.where(E >= SPECIAL, 0, E).astype(np.int64))


def error_bound(count: int, n_terms: int, max_abs: float, result: float) -> float:
    """The bound of the module docstring on ``|result - exact sum|`` for one element."""
    p = plan(count)
    if not math.isfinite(max_abs) or max_abs == 0.0:
        return 0.0
    e = max(math.frexp(max_abs)[1], MIN_EXPONENT)
    return (n_terms * p.unit(p.folds - 1) * 2.0 ** (e - 1)
            + (p.folds - 1) * 2.0 ** -52 * (abs(result) + count * 2.0 ** (e + p.headroom - 53)) + 2.0 ** -1074)


# --- the two passes over the terms: maxima, then deposits ---------------------------------------------

def _as_float(a):
    a = np.asarray(a)
    return a if a.dtype.kind == "f" and a.dtype.itemsize >= 4 else a.astype(np.float64)


def top_rows(T: np.ndarray, top: np.ndarray, square: bool = False) -> None:
    """``top[j] = max(top[j], |T[i, j]|)`` over rows ``i`` (``inf`` for NaN); of ``T[i, j]^2`` with ``square``."""
    if not compiled() or _top_rows(T, top, square):   # a NaN somewhere: the reference marks it
        top_rows_reference(T, top, square)


def top_rows_reference(T, top, square: bool = False) -> None:
    """numpy reference of :func:`top_rows`."""
    if T.shape[0]:
        a = np.abs(_terms(T, square))
        a[np.isnan(a)] = np.inf
        np.maximum(top, a.max(axis=0), out=top)


def _terms(T, square):
    """The terms of a rows part as float64: ``T`` itself, or its squares."""
    T = T.astype(np.float64, copy=False)
    if not square:
        return T
    with np.errstate(over="ignore"):
        return T * T


@kernel
def _top_rows(T, top, square):
    nan = 0
    for i in range(T.shape[0]):
        for j in range(T.shape[1]):
            v = np.float64(T[i, j])
            a = abs(v * v if square else v)
            t = top[j]
            top[j] = a if a > t else t
            nan += a != a
    return nan > 0


def deposit_rows(T: np.ndarray, scale: np.ndarray, sigmas: np.ndarray, F: np.ndarray, fast=None,
                 offset: int = 0, square: bool = False) -> bool:
    """Add the pieces of ``T[i, j] * scale[offset + j]`` (``T[i, j]^2`` with ``square``) to the folds
    ``F[:, offset + j]`` (``(K, n)``).

    Returns whether a scaled term was not below 1 in magnitude (or NaN): then the grid was
    too fine for it and the folds are not exact. ``fast`` as in :func:`scales`.
    """
    if compiled() if fast is None else fast:
        return _deposit_rows(T, scale, sigmas, F, offset, square) > 0
    return deposit_rows_reference(T, scale, sigmas, F, offset, square)


def deposit_rows_reference(T, scale, sigmas, F, offset: int = 0, square: bool = False) -> bool:
    """numpy reference of :func:`deposit_rows` (sums of pieces are exact: numpy's order is as good)."""
    width = T.shape[1]
    with np.errstate(invalid="ignore", over="ignore"):
        x = _terms(T, square) * scale[offset:offset + width]
        over = bool(np.any(~(np.abs(x) < 1.0)))
        _fold_reference(x, sigmas, F[:, offset:offset + width])
    return over


def _fold_reference(x, sigmas, F) -> None:
    for k, s in enumerate(sigmas):
        q = (x + s) - s
        F[k] += q.sum(axis=0)
        x -= q


@kernel
def _deposit_rows(T, scale, sigmas, F, offset, square):
    # the folds unrolled for K = 2 and 3 (what counts up to 2^21 give): the loop over j then vectorizes
    # one contiguous view per fold, indexed from 0: the loops over elements stay vectorizable
    F0, F1, F2, scale = F[0, offset:], F[1, offset:], F[min(2, F.shape[0] - 1), offset:], scale[offset:]
    n, K = T.shape[1], sigmas.shape[0]
    s0, s1 = sigmas[0], sigmas[1]
    s2 = sigmas[2] if K > 2 else 0.0
    over = 0
    if n == 1 and K <= 3:
        # one element (an intercept, a loss): its folds in registers, two sets interleaved for the adder's latency
        m, sc = T.shape[0], scale[0]
        a0 = a1 = a2 = b0 = b1 = b2 = 0.0
        for i in range(0, m - 1, 2):
            x = np.float64(T[i, 0])
            x = (x * x if square else x) * sc
            z = np.float64(T[i + 1, 0])
            z = (z * z if square else z) * sc
            over += (not abs(x) < 1.0) + (not abs(z) < 1.0)
            q = (x + s0) - s0
            t = (z + s0) - s0
            a0 += q
            b0 += t
            x -= q
            z -= t
            q = (x + s1) - s1
            t = (z + s1) - s1
            a1 += q
            b1 += t
            a2 += (x - q + s2) - s2
            b2 += (z - t + s2) - s2
        if m % 2:
            x = np.float64(T[m - 1, 0])
            x = (x * x if square else x) * sc
            over += not abs(x) < 1.0
            q = (x + s0) - s0
            a0 += q
            x -= q
            q = (x + s1) - s1
            a1 += q
            a2 += (x - q + s2) - s2
        F0[0] += a0 + b0
        F1[0] += a1 + b1
        if K == 3:
            F2[0] += a2 + b2
        return over
    for i in range(T.shape[0]):
        if K == 2:
            for j in range(n):
                x = np.float64(T[i, j])
                x = (x * x if square else x) * scale[j]
                over += not abs(x) < 1.0
                q = (x + s0) - s0
                F0[j] += q
                x -= q
                F1[j] += (x + s1) - s1
        elif K == 3:
            for j in range(n):
                x = np.float64(T[i, j])
                x = (x * x if square else x) * scale[j]
                over += not abs(x) < 1.0
                q = (x + s0) - s0
                F0[j] += q
                x -= q
                q = (x + s1) - s1
                F1[j] += q
                x -= q
                F2[j] += (x + s2) - s2
        else:
            for j in range(n):
                x = np.float64(T[i, j])
                x = (x * x if square else x) * scale[j]
                over += not abs(x) < 1.0
                for f in range(K):
                    q = (x + sigmas[f]) - sigmas[f]
                    F[f, offset + j] += q
                    x -= q
    return over


def top_outer(X, R: np.ndarray, top: np.ndarray) -> None:
    """Maxima of the terms ``X[i, j] * R[i, c]`` into ``top[j k + c]`` (``X`` dense or CSR)."""
    if not compiled():
        return top_outer_reference(X, R, top)
    nan = _top_outer_csr(X.indptr, X.indices, X.data, R, top) if _is_csr(X) else _top_outer_dense(X, R, top)
    if nan:   # the reference marks the NaN terms
        top_outer_reference(X, R, top)
    return None


def top_outer_reference(X, R, top) -> None:
    """numpy reference of :func:`top_outer`."""
    rows, cols, vals = _triplets(X)
    k = R.shape[1]
    a = np.abs(vals[:, None] * R[rows])
    a[np.isnan(a)] = np.inf
    np.maximum.at(top, (cols[:, None] * k + np.arange(k)).ravel(), a.ravel())


@kernel
def _top_outer_dense(X, R, top):
    k = R.shape[1]
    nan = 0
    for i in range(X.shape[0]):
        for c in range(k):
            r = R[i, c]
            for j in range(X.shape[1]):
                a = abs(np.float64(X[i, j]) * r)
                t = top[j * k + c]
                top[j * k + c] = a if a > t else t
                nan += a != a
    return nan > 0


@kernel
def _top_outer_csr(indptr, indices, data, R, top):
    k = R.shape[1]
    nan = 0
    for i in range(indptr.shape[0] - 1):
        for p in range(indptr[i], indptr[i + 1]):
            e = indices[p] * k
            v = np.float64(data[p])
            for c in range(k):
                a = abs(v * R[i, c])
                t = top[e + c]
                top[e + c] = a if a > t else t
                nan += a != a
    return nan > 0


def deposit_outer(X, R: np.ndarray, scale: np.ndarray, sigmas: np.ndarray, F: np.ndarray, columns=None,
                  fast=None, offset: int = 0) -> bool:
    """Add the pieces of ``X[i, j] * R[i, c]`` (scaled by ``scale[e]``) to the folds ``F[:, e]``,
    ``e = offset + j k + c``; the flag of :func:`deposit_rows`. ``columns``: ``X`` in CSC form
    (``X.tocsc()``), if at hand: the terms of one element are then adjacent and summed in registers.
    ``fast`` as in :func:`scales`."""
    if not (compiled() if fast is None else fast):
        return deposit_outer_reference(X, R, scale, sigmas, F, offset)
    if columns is not None:
        return _deposit_outer_csc(columns.indptr, columns.indices, columns.data, R, scale, sigmas, F, offset) > 0
    if _is_csr(X):
        return _deposit_outer_csr(X.indptr, X.indices, X.data, R, scale, sigmas, F, offset,
                                  X.shape[1] * R.shape[1]) > 0
    return _deposit_outer_dense(X, R, scale, sigmas, F, offset) > 0


def deposit_outer_reference(X, R, scale, sigmas, F, offset: int = 0) -> bool:
    """numpy reference of :func:`deposit_outer`: the terms one by one, added with ``numpy.add.at``."""
    rows, cols, vals = _triplets(X)
    k = R.shape[1]
    where = (offset + cols[:, None] * k + np.arange(k)).ravel()
    with np.errstate(invalid="ignore", over="ignore"):
        x = (vals[:, None] * R[rows]).ravel() * scale[where]
        over = bool(np.any(~(np.abs(x) < 1.0)))
        for j, s in enumerate(sigmas):
            q = (x + s) - s
            np.add.at(F[j], where, q)
            x -= q
    return over


@kernel
def _deposit_outer_dense(X, R, scale, sigmas, F, offset):
    # as _deposit_rows: folds unrolled for K = 2 and 3, the loop over j vectorizes (k = 1: contiguous)
    # one contiguous view per fold, indexed from 0: the loops over elements stay vectorizable
    F0, F1, F2, scale = F[0, offset:], F[1, offset:], F[min(2, F.shape[0] - 1), offset:], scale[offset:]
    k, K, d = R.shape[1], sigmas.shape[0], X.shape[1]
    s0, s1 = sigmas[0], sigmas[1]
    s2 = sigmas[2] if K > 2 else 0.0
    over = 0
    for i in range(X.shape[0]):
        for c in range(k):
            r = R[i, c]
            if K == 2:
                for j in range(d):
                    e = j * k + c
                    x = (np.float64(X[i, j]) * r) * scale[e]
                    over += not abs(x) < 1.0
                    q = (x + s0) - s0
                    F0[e] += q
                    x -= q
                    F1[e] += (x + s1) - s1
            elif K == 3:
                for j in range(d):
                    e = j * k + c
                    x = (np.float64(X[i, j]) * r) * scale[e]
                    over += not abs(x) < 1.0
                    q = (x + s0) - s0
                    F0[e] += q
                    x -= q
                    q = (x + s1) - s1
                    F1[e] += q
                    x -= q
                    F2[e] += (x + s2) - s2
            else:
                for j in range(d):
                    e = j * k + c
                    x = (np.float64(X[i, j]) * r) * scale[e]
                    over += not abs(x) < 1.0
                    for f in range(K):
                        q = (x + sigmas[f]) - sigmas[f]
                        F[f, offset + e] += q
                        x -= q
    return over


@kernel
def _deposit_outer_csr(indptr, indices, data, R, scale, sigmas, F, offset, width):
    # scattered elements: the K folds of one element side by side (G), added to F at the end
    scale = scale[offset:]
    k, K = R.shape[1], sigmas.shape[0]
    G = np.zeros((width, K))
    s0, s1 = sigmas[0], sigmas[1]
    over = 0
    for i in range(indptr.shape[0] - 1):
        for p in range(indptr[i], indptr[i + 1]):
            e0 = indices[p] * k
            v = np.float64(data[p])
            for c in range(k):
                e = e0 + c
                x = (v * R[i, c]) * scale[e]
                over += not abs(x) < 1.0
                q = (x + s0) - s0
                G[e, 0] += q
                x -= q
                if K == 2:
                    G[e, 1] += (x + s1) - s1
                else:
                    q = (x + s1) - s1
                    G[e, 1] += q
                    x -= q
                    for f in range(2, K):
                        q = (x + sigmas[f]) - sigmas[f]
                        G[e, f] += q
                        x -= q
    for e in range(G.shape[0]):
        for f in range(K):
            F[f, offset + e] += G[e, f]
    return over


@kernel
def _deposit_outer_csc(indptr, indices, data, R, scale, sigmas, F, offset):
    # column j of X: the terms of elements j k + c. Each piece of fold f is an integer multiple of u_f, so its
    # count of units is summed as an int64: integer sums may be reordered, so the loop vectorizes (1.5x faster
    # than float accumulators, which must keep their order); a column's count stays below 2^53, so converting
    # it back is exact. Non-finite or too large terms give meaningless counts, but they raise the flag, and
    # the caller then starts over (a priori grids) or sums those elements apart (SPECIAL).
    F0, F1, F2, scale = F[0, offset:], F[1, offset:], F[min(2, F.shape[0] - 1), offset:], scale[offset:]
    k, K = R.shape[1], sigmas.shape[0]
    s0, s1 = sigmas[0], sigmas[1]
    s2 = sigmas[2] if K > 2 else 0.0
    units = sigmas / (1.5 * 2.0 ** 52)          # u_f, exactly: sigma_f = 1.5 * 2^52 u_f
    u0, u1, u2 = units[0], units[1], units[min(2, K - 1)]
    n0, n1, n2 = 1.0 / u0, 1.0 / u1, 1.0 / u2   # powers of two: q * n_f is exact
    over = 0
    for j in range(indptr.shape[0] - 1):
        for c in range(k):
            e = j * k + c
            sc = scale[e]
            a0 = np.int64(0)
            a1 = np.int64(0)
            a2 = np.int64(0)
            flags = np.int64(0)
            lo, hi = np.uint64(indptr[j]), np.uint64(indptr[j + 1])   # unsigned: no wraparound
            if K == 2:   # a loop of its own: no branch inside, so it vectorizes
                for p in range(lo, hi):
                    x = (np.float64(data[p]) * R[np.uint64(indices[p]), c]) * sc
                    flags += np.int64(not abs(x) < 1.0)
                    q = (x + s0) - s0
                    a0 += np.int64(q * n0)
                    a1 += np.int64((((x - q) + s1) - s1) * n1)
            else:
                for p in range(lo, hi):
                    x = (np.float64(data[p]) * R[np.uint64(indices[p]), c]) * sc
                    flags += np.int64(not abs(x) < 1.0)
                    q = (x + s0) - s0
                    a0 += np.int64(q * n0)
                    x -= q
                    q = (x + s1) - s1
                    a1 += np.int64(q * n1)
                    x -= q
                    a2 += np.int64(((x + s2) - s2) * n2)
            over += flags
            F0[e] += np.float64(a0) * u0
            F1[e] += np.float64(a1) * u1
            if K > 2:
                F2[e] += np.float64(a2) * u2
            if K > 3:   # more folds (more than about 2^21 terms an element): the remainders, term by term
                for p in range(np.uint64(indptr[j]), np.uint64(indptr[j + 1])):
                    x = (np.float64(data[p]) * R[np.uint64(indices[p]), c]) * sc
                    for f in range(K):
                        q = (x + sigmas[f]) - sigmas[f]
                        if f >= 3:
                            F[f, offset + e] += q
                        x -= q
    return over


def _is_csr(X) -> bool:
    return hasattr(X, "indptr")


def _triplets(X):
    """``(rows, cols, values as float64)`` of every stored entry of a dense or CSR matrix."""
    if _is_csr(X):
        rows = np.repeat(np.arange(X.shape[0]), np.diff(X.indptr))
        return rows, np.asarray(X.indices, dtype=np.int64), np.asarray(X.data, dtype=np.float64)
    X = np.asarray(X)
    rows, cols = np.indices(X.shape).reshape(2, -1)
    return rows, cols, X.reshape(-1).astype(np.float64)


# --- a sum over one rank's terms, in two passes -------------------------------------------------------

class Sum:
    """A reproducible sum into ``n`` elements of at most ``count`` terms each (over all ranks).

    Add the local terms (:meth:`add_rows`, :meth:`add_outer`; they are kept, not copied),
    reduce :meth:`maxima` by max over the ranks into the exponents (:func:`exponents`
    before or after the reduction: both commute with max), compute :meth:`folds` with
    them, reduce those by sum, and read :func:`value`. :func:`reduce_sum` does all four
    with two injected reductions.
    """

    def __init__(self, n: int, count: int):
        self.n = int(n)
        self.plan = plan(count)
        self.parts: list = []

    def add_rows(self, T, offset: int = 0, square: bool = False) -> "Sum":
        """Terms ``T[i, j]`` of element ``offset + j`` (``T`` 2-D, or 1-D for one element); ``T[i, j]^2``
        with ``square`` (squared as float64 in the kernels: no array of squares is made)."""
        T = _as_float(T)
        T = T.reshape(-1, 1) if T.ndim == 1 else T
        if offset < 0 or offset + T.shape[1] > self.n:
            raise ArgumentError(f"terms for elements {offset}..{offset + T.shape[1]} of a sum of {self.n}")
        self.parts.append(("rows", offset, np.ascontiguousarray(T), bool(square)))
        return self

    def add_outer(self, X, R, offset: int = 0, columns=None, count: int | None = None) -> "Sum":
        """Terms ``X[i, j] * R[i, c]`` of element ``offset + j k + c`` (``X`` dense or CSR, ``R`` ``(rows, k)``;
        ``columns``: ``X.tocsc()``, if the caller keeps one, for a faster deposit of sparse data).

        ``count``: a smaller bound on these elements' terms than the sum's, the same on every rank
        (for sparse ``X``, the most stored entries of a column over all ranks): its plan may need
        fewer folds (2 up to 16383 terms), which makes the deposit cheaper at the same accuracy.
        """
        R = np.ascontiguousarray(R, dtype=np.float64)
        R = R.reshape(-1, 1) if R.ndim == 1 else R
        if not _is_csr(X):
            X = np.ascontiguousarray(_as_float(X))
        if X.shape[0] != R.shape[0] or offset < 0 or offset + X.shape[1] * R.shape[1] > self.n:
            raise ArgumentError(f"outer terms of shapes {X.shape} and {R.shape} at {offset} in a sum of {self.n}")
        if columns is not None and (getattr(columns, "format", "") != "csc" or columns.shape != X.shape):
            raise ArgumentError("columns must be X in CSC form (X.tocsc())")
        if count is not None and not 0 <= int(count) <= self.plan.count:
            raise ArgumentError(f"count must be in 0..{self.plan.count} (the sum's own), got {count}")
        part_plan = self.plan if count is None else plan(count)
        self.parts.append(("outer", offset, X, (R, columns, part_plan.sigmas)))
        return self

    def maxima(self, out: np.ndarray | None = None) -> np.ndarray:
        """The largest ``|term|`` of each element here (``inf`` for NaN), into ``out`` if given."""
        top = np.zeros(self.n) if out is None else out
        if out is not None:
            top[:] = 0.0
        for kind, offset, a, b in self.parts:
            if kind == "rows":
                top_rows(a, top[offset:offset + a.shape[1]], b)
            else:
                top_outer(a, b[0], top[offset:offset + a.shape[1] * b[0].shape[1]])
        return top

    def folds(self, E: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """``(K, n)``: this rank's pieces of every term summed per fold, on the grids of the global ``E``
        (into ``out``, if given: a ``(K, n)`` view, e.g. of the buffer the reduction sends).

        :attr:`over` tells whether a term was not below ``2^E`` of its element (or NaN): with
        ``E`` from the maxima of every term that happens only for NaN terms, which are summed
        apart (:data:`SPECIAL`); with ``E`` from a priori bounds, the caller starts over.
        """
        F = np.zeros((self.plan.folds, self.n)) if out is None else out
        if out is not None:
            F[:] = 0.0
        fast = compiled()
        scale, specials = _scales_and_specials(np.ascontiguousarray(E, dtype=np.float64), fast)
        self.over = self._deposit(F, scale, fast)
        if specials:
            with np.errstate(invalid="ignore", over="ignore"):   # non-finite terms are summed apart
                self._special(F, np.flatnonzero(np.asarray(E) >= SPECIAL))
        return F

    def _deposit(self, F, scale, fast) -> bool:
        """Every part's pieces into ``F`` at the part's elements (the kernels write there directly)."""
        sig = self.plan.sigmas
        over = False
        for kind, offset, a, b in self.parts:
            if kind == "rows":
                over |= deposit_rows(a, scale, sig, F, fast, offset, b)
            else:
                over |= deposit_outer(a, b[0], scale, b[2], F, b[1], fast, offset)
        return over

    def _special(self, F, special) -> None:
        """Elements with a non-finite term somewhere: only the non-finite terms are summed."""
        F[:, special] = 0.0
        for kind, offset, a, b in self.parts:
            if kind == "rows":
                terms = _terms(a, b)
                rows, cols = np.nonzero(~np.isfinite(terms))
                values, where = terms[rows, cols].astype(np.float64), offset + cols
            else:
                r, c, v = _triplets(a)
                t = v[:, None] * b[0][r]
                rows, cc = np.nonzero(~np.isfinite(t))
                values, where = t[rows, cc], offset + c[rows] * b[0].shape[1] + cc
            keep = np.isin(where, special)
            np.add.at(F[0], where[keep], values[keep])


def reduce_sum(terms: Sum, maximum, total) -> np.ndarray:
    """The reproducible sums of ``terms`` over the ranks: ``maximum(x)`` and ``total(x)`` reduce
    float64 arrays in place by max and by sum (identities on one rank)."""
    E = exponents(terms.maxima())
    maximum(E)
    F = terms.folds(E)
    total(F.reshape(-1))
    return value(F, E)


def local_sum(T, axis: int = 0, count: int | None = None) -> np.ndarray:
    """The reproducible sum of ``T`` along ``axis`` on one rank (the same bits as any split of it)."""
    T = np.moveaxis(_as_float(T), axis, 0)
    shape = T.shape[1:]
    flat = T.reshape(T.shape[0], math.prod(shape))
    acc = Sum(flat.shape[1], T.shape[0] if count is None else count).add_rows(flat)
    return reduce_sum(acc, _keep, _keep).reshape(shape)


def vector_sum(t: np.ndarray, count: int | None = None) -> float:
    """``local_sum(t[:, None], count=count)[0]`` of a 1-D ``t`` (the same bits), in one compiled pass."""
    t = np.ascontiguousarray(t, dtype=np.float64)
    count = max(t.size, 1) if count is None else count
    if compiled():
        p = plan(count)
        value, ok = _vector_sum(t, p.sigmas, _POW2)
        if ok:
            return value
    return float(local_sum(t[:, None], count=count)[0])   # a NaN or an infinity among the terms


@kernel
def _vector_sum(t, sigmas, pow2):
    # the maximum, its exponent, the folds and the one rounding of local_sum, for one element
    top = 0.0
    for v in t:
        a = abs(v)
        if not a < np.inf:      # NaN or infinite: the caller takes the general path
            return 0.0, False
        top = a if a > top else top
    e = max(math.frexp(top)[1], MIN_EXPONENT) if top > 0.0 else MIN_EXPONENT
    scale = pow2[1022 - e] if e <= 1022 else math.ldexp(1.0, -e)
    K = sigmas.shape[0]
    F = np.zeros(K)
    for v in t:
        x = v * scale
        for f in range(K):
            q = (x + sigmas[f]) - sigmas[f]
            F[f] += q
            x -= q
    v = F[K - 1]
    for f in range(K - 2, -1, -1):
        v = F[f] + v
    if -1022 <= e <= 1023:
        return v * pow2[e + 1022], True
    return math.ldexp(v, e), True


def _keep(x):
    return x
