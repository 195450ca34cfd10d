"""Compiled kernels of the factorization math (numba), one row or one rating at a time.

Each kernel has a numpy reference in :mod:`mpiml.mf.als`, :mod:`mpiml.mf.ials` or
:mod:`mpiml.mf.dsgd` (chosen with :func:`mpiml.runtime.jit.compiled`) and a test
comparing the two. The kernels take plain arrays (CSR ``indptr``/``cols``, values,
factors), never Python objects, and allocate only per-row buffers of k or k x k (plus
one gather buffer of at most ``GATHER`` rows), never ratings x k temporaries.

They are generic in the factor dtype: float32 factors give float32 arithmetic (as the
``implicit`` library does), float64 factors float64; a kernel's buffers and accumulators
follow its factors' dtype. (Accumulating float32 dot products in float64 was measured:
it doubles the time of a CG half-step, for an error that is the float32 solver's anyway.)

Floating-point flags: ``reassoc`` (let sums be reordered so that dot products use SIMD
lanes) and ``contract`` (fused multiply-add). Results differ from the numpy references
only by rounding; NaN and infinity keep their IEEE meaning (no ``nnan``/``ninf``), so a
diverging run still shows up as NaN.

This module imports numba; the callers import it only on the compiled path. Kernels fill
arrays with explicit loops, not slice assignment: numba's slice assignment brings a
shape-mismatch error path that takes seconds to compile.
"""

from __future__ import annotations

import numpy as np
from llvmlite import binding, ir
from numba.core import cgutils, types
from numba.extending import intrinsic, register_jitable

from mpiml.runtime.jit import kernel

FAST = frozenset({"reassoc", "contract"})
GATHER = 256  # design rows gathered per BLAS call when forming a Gram matrix
AHEAD = 6  # ratings ahead whose factor rows SGD prefetches
CHUNK = 4096  # ratings whose indices SGD gathers at a time (in its random order)
# LLVM 16+ has only opaque pointers, which changed the intrinsic's mangled name.
_PREFETCH = "llvm.prefetch.p0" if binding.llvm_version_info[0] >= 16 else "llvm.prefetch.p0i8"


def _helper(fn):
    """Compile ``fn`` into the kernels that call it, with the kernels' float flags."""
    return register_jitable(fastmath=set(FAST))(fn)


@intrinsic
def _prefetch(typingctx, array, i, j):
    """Hint the CPU to load the cache line of ``array[i, j]`` (2-d) for writing; no effect on values."""

    def codegen(context, builder, signature, args):
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [args[1], args[2]], wraparound=False)
        byte_ptr = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [byte_ptr, i32, i32, i32]),
                                            _PREFETCH)
        builder.call(fn, [builder.bitcast(ptr, byte_ptr), i32(1), i32(3), i32(1)])  # write, keep in all caches, data
        return context.get_dummy_value()

    return types.void(array, i, j), codegen


@_helper
def _prefetch_row(a, i):
    """Prefetch every cache line of row ``i`` of ``a``."""
    for f in range(0, a.shape[1], max(1, 64 // a.itemsize)):
        _prefetch(a, i, f)


@_helper
def _zero(a):
    """A scalar 0 of ``a``'s dtype (so accumulators keep the factors' precision)."""
    return np.zeros(1, a.dtype)[0]


@_helper
def _one(a):
    """A scalar 1 of ``a``'s dtype."""
    return np.ones(1, a.dtype)[0]


@_helper
def _dot(a, i, b, j, zero):
    """``a[i] . b[j]`` for 2-d ``a`` and ``b``."""
    s = zero
    for f in range(a.shape[1]):
        s += a[i, f] * b[j, f]
    return s


@_helper
def _symv(m, v, out, zero):
    """``out = m @ v`` for a square ``m``."""
    k = m.shape[0]
    for a in range(k):
        s = zero
        for b in range(k):
            s += m[a, b] * v[b]
        out[a] = s


# Hand-written: faster than LAPACK's potrf through np.linalg.cholesky (which copies) by
# 1.2-1.4x and than np.linalg.solve by 2-3x for k = 10..100, one system at a time.
@_helper
def _cholesky_solve(a, b, x):
    """``x = a^-1 b`` by Cholesky; overwrites the lower triangle of ``a``. False when ``a`` is not positive definite."""
    k = a.shape[0]
    for j in range(k):
        s = a[j, j]
        for t in range(j):
            s -= a[j, t] * a[j, t]
        if not s > 0:  # also catches NaN
            return False
        d = np.sqrt(s)
        a[j, j] = d
        for i in range(j + 1, k):
            s = a[i, j]
            for t in range(j):
                s -= a[i, t] * a[j, t]
            a[i, j] = s / d
    for i in range(k):
        s = b[i]
        for t in range(i):
            s -= a[i, t] * x[t]
        x[i] = s / a[i, i]
    for i in range(k - 1, -1, -1):
        xi = x[i] / a[i, i]
        x[i] = xi
        for t in range(i):
            x[t] -= a[i, t] * xi
    return True


@kernel(fastmath=set(FAST))
def gram_solve_rows(indptr, cols, design, weights, targets, base, lam, out):
    """Per row ``r``: ``out[r] = (base + D_r^T W_r D_r + lam[r] I)^-1 D_r^T t_r``, 0 for empty rows.

    ``D_r`` = ``design[cols[indptr[r]:indptr[r+1]]]``, ``W_r`` = diag of ``weights`` over the
    same slice (``weights`` empty: all ones; else non-negative), ``t_r`` likewise from
    ``targets``; ``base`` (k x k, or 0 x 0 for none) is added as is. Returns -1, or the
    first row whose system is not positive definite (then ``out`` is partly written).
    """
    n, k = indptr.size - 1, design.shape[1]
    zero, one = _zero(design), _one(design)
    gathered = np.empty((GATHER, k), design.dtype)
    part = np.empty((k, k), design.dtype)
    a = np.empty((k, k), design.dtype)
    b = np.empty(k, design.dtype)
    x = np.empty(k, design.dtype)
    has_base, has_weights = base.shape[0] > 0, weights.size > 0
    for r in range(n):
        s, e = indptr[r], indptr[r + 1]
        if s == e:
            for f in range(k):
                out[r, f] = zero
            continue
        for f in range(k):
            b[f] = zero
        first = True
        for lo in range(s, e, GATHER):
            m = min(GATHER, e - lo)
            for j in range(m):
                c, t = cols[lo + j], targets[lo + j]
                w = np.sqrt(weights[lo + j]) if has_weights else one
                for f in range(k):
                    v = design[c, f]
                    b[f] += t * v
                    gathered[j, f] = w * v
            chunk = gathered[:m]
            # BLAS (np.dot into a buffer) was measured against hand-written rank-1, rank-4
            # and rank-8 updates of the lower triangle for k = 10..100 and 1..3000 ratings
            # per row: up to 1.5x faster at k = 10..32, about even at k = 64..100.
            # The first chunk writes ``a`` directly.
            if first:
                np.dot(chunk.T, chunk, a)
                first = False
            else:
                np.dot(chunk.T, chunk, part)
                for i in range(k):
                    for f in range(i + 1):
                        a[i, f] += part[i, f]
        for i in range(k):
            if has_base:
                for f in range(i + 1):
                    a[i, f] += base[i, f]
            a[i, i] += lam[r]
        if not _cholesky_solve(a, b, x):
            return r
        for f in range(k):
            out[r, f] = x[f]
    return -1


@kernel(fastmath=set(FAST))
def cg_rows(indptr, cols, vals, alpha, other, base, out, steps):
    """``steps`` conjugate-gradient steps per row of the iALS system, from ``out[r]``, in place.

    ``A_r v = base v + sum_j (c_j - 1) (y_j . v) y_j`` and ``b_r = sum_j c_j p_j y_j`` over
    the row's entries ``j`` (``y_j = other[cols[j]]``, ``c_j = 1 + alpha |vals_j|``,
    ``p_j = vals_j > 0``), matrix-free as in the ``implicit`` library's
    ``least_squares_cg``. Rows without entries get 0 (their exact solution).
    """
    n, k = indptr.size - 1, other.shape[1]
    zero = _zero(other)
    cast = other.dtype.type
    r = np.empty(k, other.dtype)
    p = np.empty(k, other.dtype)
    ap = np.empty(k, other.dtype)
    for u in range(n):
        s, e = indptr[u], indptr[u + 1]
        x = out[u]
        if s == e:
            for f in range(k):
                x[f] = zero
            continue
        _symv(base, x, r, zero)
        for f in range(k):
            r[f] = -r[f]
        for j in range(s, e):
            c = cols[j]
            v = vals[j]
            extra = alpha * abs(v)
            t = cast(1.0 + extra if v > 0 else 0.0) - cast(extra) * _dot(other, c, out, u, zero)
            for f in range(k):
                r[f] += t * other[c, f]
        rs = zero
        for f in range(k):
            p[f] = r[f]
            rs += r[f] * r[f]
        for _ in range(steps):
            if not rs > 1e-20:
                break
            _symv(base, p, ap, zero)
            for j in range(s, e):
                c = cols[j]
                d = zero
                for f in range(k):
                    d += other[c, f] * p[f]
                t = cast(alpha * abs(vals[j])) * d
                for f in range(k):
                    ap[f] += t * other[c, f]
            curvature = zero
            for f in range(k):
                curvature += p[f] * ap[f]
            step = rs / curvature
            rs_new = zero
            for f in range(k):
                x[f] += step * p[f]
                r[f] -= step * ap[f]
                rs_new += r[f] * r[f]
            beta = rs_new / rs
            for f in range(k):
                p[f] = r[f] + beta * p[f]
            rs = rs_new


@kernel(fastmath=set(FAST))
def sgd_ratings(order, users, items, vals, x, y, mu, lr, reg, x_fixed, y_fixed):
    """Plain SGD, one rating at a time in ``order``; updates ``x`` and ``y`` in place.

    ``e = r - mu - x[u] . y[i]``; every column ``f`` except ``x_fixed`` of ``x`` and
    ``y_fixed`` of ``y`` (-1: none) moves by ``lr * (e * y[i, f] - reg * x[u, f])`` and
    ``lr * (e * x_old[u, f] - reg * y[i, f])``.
    """
    k, n = x.shape[1], order.size
    zero = _zero(x)
    # A random order makes every rating two cache misses (its x and y rows) plus three for
    # its indices: gather the indices a chunk at a time (independent loads, overlapped)
    # and prefetch the rows AHEAD ratings early. Together 3x faster than the plain loop.
    chunk_u = np.empty(CHUNK, users.dtype)
    chunk_i = np.empty(CHUNK, items.dtype)
    chunk_v = np.empty(CHUNK, vals.dtype)
    for lo in range(0, n, CHUNK):
        m = min(CHUNK, n - lo)
        for t in range(m):
            j = order[lo + t]
            chunk_u[t], chunk_i[t], chunk_v[t] = users[j], items[j], vals[j]
        for t in range(m):
            if t + AHEAD < m:
                _prefetch_row(x, chunk_u[t + AHEAD])
                _prefetch_row(y, chunk_i[t + AHEAD])
            u, i = chunk_u[t], chunk_i[t]
            e = chunk_v[t] - mu - _dot(x, u, y, i, zero)
            kept_x = x[u, x_fixed] if x_fixed >= 0 else zero
            kept_y = y[i, y_fixed] if y_fixed >= 0 else zero
            # Update every column, then put the constant ones back: a branch per column
            # would keep the loop from being vectorized.
            for f in range(k):
                xf, yf = x[u, f], y[i, f]
                x[u, f] = xf + lr * (e * yf - reg * xf)
                y[i, f] = yf + lr * (e * xf - reg * yf)
            if x_fixed >= 0:
                x[u, x_fixed] = kept_x
            if y_fixed >= 0:
                y[i, y_fixed] = kept_y


@kernel(fastmath=set(FAST))
def pair_dots(left, rows, right, cols, out):
    """``out[j] = left[rows[j]] . right[cols[j]]``."""
    zero = _zero(out)
    for j in range(rows.size):
        out[j] = _dot(left, rows[j], right, cols[j], zero)


@kernel(fastmath=set(FAST))
def residual_sse(left, rows, right, cols, vals, mu):
    """``sum_j (vals[j] - mu - left[rows[j]] . right[cols[j]])**2`` (float64 sum)."""
    zero = _zero(left)
    total = 0.0
    for j in range(rows.size):
        e = vals[j] - mu - _dot(left, rows[j], right, cols[j], zero)
        total += e * e
    return total


@kernel(fastmath=set(FAST))
def ials_observed(left, start, indptr, right, cols, vals, alpha):
    """``sum (1 + alpha |v|) (p - s)**2 - s**2`` over CSR rows ``start + r`` (float64 sum).

    ``s`` = ``left[row] . right[col]`` and ``p`` = ``v > 0``.
    """
    zero = _zero(left)
    total = 0.0
    for r in range(indptr.size - 1):
        for j in range(indptr[r], indptr[r + 1]):
            s = float(_dot(left, start + r, right, cols[j], zero))
            v = vals[j]
            d = (1.0 if v > 0 else 0.0) - s
            total += (1.0 + alpha * abs(v)) * d * d - s * s
    return total


@kernel
def partial_normal_equations(indptr, cols, vals, design, offset, out):
    """Each row's ``[upper triangle of d^T d (row-major), d^T t, t . t]`` over its entries into ``out``
    (:func:`mpiml.mf.hot_rows.normal_equations`' numpy reference; entries in order, no fast math).
    The full ``d^T d`` is accumulated first: its contiguous inner loop vectorizes."""
    f = design.shape[1]
    tri = f * (f + 1) // 2
    g = np.empty((f, f))
    h = np.empty(f)
    for r in range(indptr.size - 1):
        g[:, :] = 0.0
        h[:] = 0.0
        tt = 0.0
        for j in range(indptr[r], indptr[r + 1]):
            c = cols[j]
            t = vals[j] - offset[c]
            d = design[c]
            for a in range(f):
                da = d[a]
                ga = g[a]
                for b in range(f):
                    ga[b] += da * d[b]
                h[a] += da * t
            tt += t * t
        row = out[r]
        k = 0
        for a in range(f):
            for b in range(a, f):
                row[k] = g[a, b]
                k += 1
        row[tri:tri + f] = h
        row[tri + f] = tt
