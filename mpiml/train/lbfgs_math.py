"""L-BFGS over a parameter vector split into blocks, as pure functions of local arrays (no MPI).

Every rank holds one block of the parameters, of the gradient, of the search direction and
of the ``m`` history pairs ``(s_i, y_i)``. Inner products and maxima of split vectors are
partial over the block and combined by an injected reduction (:class:`Blocks`); the scalar
work is then repeated identically on every rank.

The two-loop recursion is run on the Gram matrix of the basis ``s_1..s_M, y_1..y_M, g``
(the "vector-free" form of Chen et al., 2014): one iteration needs the inner products of
the three new vectors ``s, y, g`` with the basis, ``3 (2M + 3)`` numbers, all in *one*
small reduction (with ``max |g|`` riding in it), instead of ``2M`` dependent reductions of
one number each. The direction is then a linear combination of the basis, formed locally.
:func:`two_loop` is the textbook recursion on whole vectors, kept as the reference.

The line search is Moré and Thuente's (MINPACK-2 ``dcsrch``/``dcstep``), with the
parameters and first step of scipy's L-BFGS-B, and the stopping rules are L-BFGS-B's:
``max |g| <= gtol`` (``tol``), relative reduction ``(f_k - f_{k+1}) / max(|f_k|, |f_{k+1}|, 1)
<= ftol`` (:data:`FTOL` = 64 machine epsilons, as scikit-learn passes it) or ``max_iter``
iterations. A failed line search restarts from steepest descent with an empty memory, and
ends the run if that fails too. So on one block the iterates are scipy's up to rounding.

The objective is an object with three methods (see :class:`FunctionObjective`):

- ``value_grad() -> (f, g)`` at the current point (``g``: this rank's block);
- ``line(p) -> phi`` with ``phi(step) -> (f(x + step p), d/dstep f(x + step p))``;
- ``move() -> (f, g)``: the current point becomes the last point ``phi`` evaluated.

The point itself stays inside the objective: a linear model evaluates ``phi`` from the
margins ``X x`` and ``X p`` without another pass over the data (:mod:`mpiml.parallel.lbfgs`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from mpiml.runtime.jit import compiled, kernel

EPS = float(np.finfo(np.float64).eps)
FTOL = 64 * EPS          # relative reduction of f that stops the run (scikit-learn's setting of L-BFGS-B)
MEMORY = 10              # history pairs (scipy's maxcor default)
MAX_LINE_SEARCH = 20     # evaluations per line search (scipy's maxls default)
WOLFE_DECREASE = 1e-3    # sufficient decrease (L-BFGS-B's line search parameters)
WOLFE_CURVATURE = 0.9    # |phi'(step)| <= 0.9 |phi'(0)|: the strong Wolfe curvature condition
STEP_XTOL = 0.1          # relative width of the bracket at which the search gives up
MAX_STEP = 1e10

CONVERGED_G = "CONVERGENCE: NORM OF PROJECTED GRADIENT <= PGTOL"
CONVERGED_F = "CONVERGENCE: RELATIVE REDUCTION OF F <= FACTR*EPSMCH"
STOPPED = "STOP: TOTAL NO. OF ITERATIONS REACHED LIMIT"
ABNORMAL = "ABNORMAL: the line search found no step (the point is kept)"


def _identity(sums, maxes):
    return sums, maxes


@dataclass
class Blocks:
    """How inner products and maxima of block vectors combine over the blocks (the transport).

    ``reduce(sums, maxes)``: the sums and maxima of two small arrays over every block, the
    same numbers on every rank. ``shared``: the number of trailing entries that every block
    holds a copy of (the intercepts of a features split); they are computed by position-free
    elementwise arithmetic only, so the copies stay equal bit for bit, and they count in the
    inner products of the one block with ``count_shared``. The defaults describe one block
    holding everything.
    """

    reduce: Callable = _identity
    shared: int = 0
    count_shared: bool = True

    def counted(self, n: int) -> int:
        """How many leading entries of a block vector of length ``n`` this block counts in inner products."""
        return n - self.shared if self.shared and not self.count_shared else n

    def partial_dots(self, A, B) -> np.ndarray:
        """This block's share of the inner products of the rows of ``A`` and ``B``."""
        stop = self.counted(A.shape[1])
        return np.asarray(A[:, :stop] @ B[:, :stop].T)

    def dots(self, A, B) -> np.ndarray:
        """Whole inner products of the rows of ``A`` with the rows of ``B`` (one reduction)."""
        A, B = np.atleast_2d(A), np.atleast_2d(B)
        sums = self.reduce(np.asarray(self.partial_dots(A, B), dtype=np.float64).ravel(), np.zeros(0))[0]
        return sums.reshape(A.shape[0], B.shape[0])

    def dot(self, a, b) -> float:
        return float(self.dots(a, b)[0, 0])

    def max_abs(self, g) -> float:
        return float(self.reduce(np.zeros(0), np.array([np.abs(g).max(initial=0.0)]))[1][0])


# --- the line search ---------------------------------------------------------------------------

def _cubic(sa, fa, da, sb, fb, db):
    """``theta`` and ``|gamma|`` of the cubic through two points with their values and slopes."""
    theta = 3.0 * (fa - fb) / (sb - sa) + da + db
    scale = max(abs(theta), abs(da), abs(db))  # keeps the square from overflowing
    return theta, scale * math.sqrt(max(0.0, (theta / scale) ** 2 - (da / scale) * (db / scale)))


def dcstep(stx, fx, dx, sty, fy, dy, stp, fp, dp, brackt, stpmin, stpmax):
    """One safeguarded step of Moré–Thuente: the new trial ``stp`` and the updated interval.

    ``(stx, fx, dx)``: the best step so far; ``(sty, fy, dy)``: the other end of the interval;
    ``(stp, fp, dp)``: the current trial. Returns ``(stx, fx, dx, sty, fy, dy, stp, brackt)``.
    """
    sgnd = dp * math.copysign(1.0, dx)
    if fp > fx:  # higher value: the minimizer is bracketed
        theta, gamma = _cubic(stx, fx, dx, stp, fp, dp)
        if stp < stx:
            gamma = -gamma
        p = (gamma - dx) + theta
        q = ((gamma - dx) + gamma) + dp
        stpc = stx + p / q * (stp - stx)
        stpq = stx + ((dx / ((fx - fp) / (stp - stx) + dx)) / 2.0) * (stp - stx)
        stpf = stpc if abs(stpc - stx) < abs(stpq - stx) else stpc + (stpq - stpc) / 2.0
        brackt = True
    elif sgnd < 0.0:  # derivatives of opposite sign: bracketed
        theta, gamma = _cubic(stx, fx, dx, stp, fp, dp)
        if stp > stx:
            gamma = -gamma
        p = (gamma - dp) + theta
        q = ((gamma - dp) + gamma) + dx
        stpc = stp + p / q * (stx - stp)
        stpq = stp + (dp / (dp - dx)) * (stx - stp)
        stpf = stpc if abs(stpc - stp) > abs(stpq - stp) else stpq
        brackt = True
    elif abs(dp) < abs(dx):  # same sign, the derivative decreases in magnitude
        theta, gamma = _cubic(stx, fx, dx, stp, fp, dp)
        if stp > stx:
            gamma = -gamma
        p = (gamma - dp) + theta
        q = (gamma + (dx - dp)) + gamma
        r = p / q
        if r < 0.0 and gamma != 0.0:
            stpc = stp + r * (stx - stp)
        else:
            stpc = stpmax if stp > stx else stpmin
        stpq = stp + (dp / (dp - dx)) * (stx - stp)
        if brackt:
            stpf = stpc if abs(stpc - stp) < abs(stpq - stp) else stpq
            stpf = min(stp + 0.66 * (sty - stp), stpf) if stp > stx else max(stp + 0.66 * (sty - stp), stpf)
        else:
            stpf = stpc if abs(stpc - stp) > abs(stpq - stp) else stpq
            stpf = min(max(stpf, stpmin), stpmax)
    else:  # same sign, the derivative does not decrease
        if brackt:
            theta, gamma = _cubic(sty, fy, dy, stp, fp, dp)
            if stp > sty:
                gamma = -gamma
            p = (gamma - dp) + theta
            q = ((gamma - dp) + gamma) + dy
            stpf = stp + p / q * (sty - stp)
        else:
            stpf = stpmax if stp > stx else stpmin
    if fp > fx:
        sty, fy, dy = stp, fp, dp
    else:
        if sgnd < 0.0:
            sty, fy, dy = stx, fx, dx
        stx, fx, dx = stp, fp, dp
    return stx, fx, dx, sty, fy, dy, stpf, brackt


class MoreThuente:
    """The state of one line search (MINPACK-2 ``dcsrch``): call :meth:`next` with each trial's value.

    ``next(f, g)`` returns ``("FG", step)`` for another trial, ``("CONVERGENCE", step)`` when
    ``step`` (the last trial) satisfies the strong Wolfe conditions, or ``("WARNING: ...", step)``
    when no better step can be found (the last trial is then the answer, as in L-BFGS-B).
    """

    def __init__(self, f0, g0, step, ftol=WOLFE_DECREASE, gtol=WOLFE_CURVATURE, xtol=STEP_XTOL,
                 stpmin=0.0, stpmax=MAX_STEP):
        self.ftol, self.gtol, self.xtol, self.stpmin, self.stpmax = ftol, gtol, xtol, stpmin, stpmax
        self.brackt, self.stage = False, 1
        self.finit, self.ginit, self.gtest = f0, g0, ftol * g0
        self.width = stpmax - stpmin
        self.width1 = self.width / 0.5
        self.stx = self.sty = 0.0
        self.fx = self.fy = f0
        self.gx = self.gy = g0
        self.stmin, self.stmax = 0.0, step + 4.0 * step
        self.stp = step

    def next(self, f, g) -> tuple[str, float]:
        stp = self.stp
        ftest = self.finit + stp * self.gtest
        if self.stage == 1 and f <= ftest and g >= 0.0:
            self.stage = 2
        task = "FG"
        if self.brackt and (stp <= self.stmin or stp >= self.stmax):
            task = "WARNING: ROUNDING ERRORS PREVENT PROGRESS"
        if self.brackt and self.stmax - self.stmin <= self.xtol * self.stmax:
            task = "WARNING: XTOL TEST SATISFIED"
        if stp == self.stpmax and f <= ftest and g <= self.gtest:
            task = "WARNING: STP = STPMAX"
        if stp == self.stpmin and (f > ftest or g >= self.gtest):
            task = "WARNING: STP = STPMIN"
        if f <= ftest and abs(g) <= self.gtol * -self.ginit:
            task = "CONVERGENCE"
        if task != "FG":
            return task, stp
        if self.stage == 1 and self.fx >= f > ftest:
            # the modified function psi(step) = f - f0 - ftol step g0 until a point of sufficient decrease
            gt = self.gtest
            out = dcstep(self.stx, self.fx - self.stx * gt, self.gx - gt, self.sty, self.fy - self.sty * gt,
                         self.gy - gt, stp, f - stp * gt, g - gt, self.brackt, self.stmin, self.stmax)
            self.stx, fxm, gxm, self.sty, fym, gym, stp, self.brackt = out
            self.fx, self.fy = fxm + self.stx * gt, fym + self.sty * gt
            self.gx, self.gy = gxm + gt, gym + gt
        else:
            out = dcstep(self.stx, self.fx, self.gx, self.sty, self.fy, self.gy, stp, f, g, self.brackt,
                         self.stmin, self.stmax)
            self.stx, self.fx, self.gx, self.sty, self.fy, self.gy, stp, self.brackt = out
        if self.brackt:  # force a sufficient shrink of the interval
            if abs(self.sty - self.stx) >= 0.66 * self.width1:
                stp = self.stx + 0.5 * (self.sty - self.stx)
            self.width1, self.width = self.width, abs(self.sty - self.stx)
            self.stmin, self.stmax = min(self.stx, self.sty), max(self.stx, self.sty)
        else:
            self.stmin, self.stmax = stp + 1.1 * (stp - self.stx), stp + 4.0 * (stp - self.stx)
        stp = min(max(stp, self.stpmin), self.stpmax)
        if self.brackt and (stp <= self.stmin or stp >= self.stmax
                            or self.stmax - self.stmin <= self.xtol * self.stmax):
            stp = self.stx
        self.stp = stp
        return "FG", stp


def line_search(phi, f0: float, g0: float, step: float, max_evaluations: int = MAX_LINE_SEARCH):
    """A step along a descent direction satisfying the strong Wolfe conditions (or L-BFGS-B's fallback).

    ``phi(step) -> (f, derivative)``; ``f0, g0``: the value and derivative at 0 (``g0 < 0``).
    Returns ``(ok, step, f, derivative, evaluations, task)``; ``ok`` is False when
    ``max_evaluations`` trials did not end the search (the last trial is not a result then).
    """
    search = MoreThuente(f0, g0, min(step, MAX_STEP))
    stp, f, g = search.stp, f0, g0
    for evaluations in range(1, max_evaluations + 1):
        f, g = phi(stp)
        if not (math.isfinite(f) and math.isfinite(g)):
            return False, stp, f, g, evaluations, "ERROR: THE OBJECTIVE IS NOT FINITE"
        task, nxt = search.next(f, g)
        if task != "FG":
            return True, stp, f, g, evaluations, task
        stp = nxt
    return False, stp, f, g, max_evaluations, "WARNING: TOO MANY EVALUATIONS"


# --- the two-loop recursion --------------------------------------------------------------------

def two_loop(g: np.ndarray, S: list, Y: list) -> np.ndarray:
    """Reference: ``H g`` by the textbook recursion (Nocedal & Wright, Alg. 7.4), pairs oldest first."""
    q = np.array(g, dtype=np.float64, copy=True)
    alphas = []
    for s, y in zip(reversed(S), reversed(Y)):
        a = float(s @ q) / float(s @ y)
        q -= a * y
        alphas.append(a)
    if S:
        q *= float(S[-1] @ Y[-1]) / float(Y[-1] @ Y[-1])
    for (s, y), a in zip(zip(S, Y), reversed(alphas)):
        b = float(y @ q) / float(s @ y)
        q += (a - b) * s
    return q


def gram_two_loop(G: np.ndarray, order: list, m: int) -> np.ndarray:
    """``H g`` as coefficients over the basis ``S rows, Y rows, g`` from their Gram matrix ``G``.

    ``G`` is ``(2m + 1) x (2m + 1)``: entry ``i < m`` is history row ``i`` of S, ``m + i`` row
    ``i`` of Y, ``2m`` the gradient; ``order`` lists the rows in use, oldest first. The result
    ``c`` gives ``H g = sum_l c_l b_l``; the arithmetic is :func:`two_loop`'s on the coefficients.
    Compiled (:func:`_gram_two_loop_kernel`) unless ``MPIML_KERNELS=numpy``; the numpy
    reference is :func:`gram_two_loop_reference`.
    """
    if compiled():
        return _gram_two_loop_kernel(G, np.asarray(order, dtype=np.int64), m)
    return gram_two_loop_reference(G, order, m)


def gram_two_loop_reference(G: np.ndarray, order: list, m: int) -> np.ndarray:
    """The numpy reference of :func:`gram_two_loop`."""
    c = np.zeros(2 * m + 1)
    c[2 * m] = 1.0
    alphas = []
    for i in reversed(order):
        a = float(c @ G[i]) / G[i, m + i]
        c[m + i] -= a
        alphas.append(a)
    if order:
        last = order[-1]
        c *= G[last, m + last] / G[m + last, m + last]
    for i, a in zip(order, reversed(alphas)):
        b = float(c @ G[m + i]) / G[i, m + i]
        c[i] += a - b
    return c


@kernel
def _gram_two_loop_kernel(G, order, m):
    """:func:`gram_two_loop_reference` compiled: a few hundred flops, where numpy calls would cost more."""
    n = 2 * m + 1
    c = np.zeros(n)
    c[2 * m] = 1.0
    k = order.shape[0]
    alphas = np.zeros(k)
    for t in range(k - 1, -1, -1):
        i = order[t]
        dot = 0.0
        for j in range(n):
            dot += c[j] * G[i, j]
        a = dot / G[i, m + i]
        c[m + i] -= a
        alphas[t] = a
    if k:
        last = order[k - 1]
        scale = G[last, m + last] / G[m + last, m + last]
        for j in range(n):
            c[j] *= scale
    for t in range(k):
        i = order[t]
        dot = 0.0
        for j in range(n):
            dot += c[j] * G[m + i, j]
        b = dot / G[i, m + i]
        c[i] += alphas[t] - b
    return c


# --- the vector work of an iteration ---------------------------------------------------------

def history_dots(V, S, Y, k, stop):
    """The inner products of the rows of ``V`` (3) with ``S[:k], Y[:k], V`` over entries ``[0, stop)``.

    Returns ``(3, 2k + 3)``. Matrix-vector products, one per row of ``V``: on a 2-core machine
    they beat both one skinny matrix product (its packing doubles the memory traffic) and a
    numba loop with the sums in a fixed order (no SIMD without reassociation).
    """
    out = np.empty((3, 2 * k + 3))
    Sh, Yh, Vh = S[:k, :stop], Y[:k, :stop], V[:, :stop]
    for i in range(3):
        out[i, :k] = Sh @ Vh[i]
        out[i, k:2 * k] = Yh @ Vh[i]
    out[:, 2 * k:] = Vh @ Vh.T
    return out


def combine(c_s, S, c_y, Y, k, c_g, g, shared=0):
    """``-(c_g g + c_s S[:k] + c_y Y[:k])``: the direction from its coefficients over the basis.

    The last ``shared`` entries are summed term by term: a matrix-vector product may round an
    entry differently depending on where it sits in the vector, and the copies of those
    entries in other blocks (at other positions) must come out equal.
    """
    p = c_g * g
    if k:
        head = g.size - shared
        p[:head] += c_s[:k] @ S[:k, :head]
        p[:head] += c_y[:k] @ Y[:k, :head]
        for rows, coefficients in ((S, c_s), (Y, c_y)) if shared else ():
            for row, coefficient in zip(rows[:k], coefficients[:k]):
                p[head:] += coefficient * row[head:]
    return np.negative(p, out=p)


# --- the driver --------------------------------------------------------------------------------

@dataclass
class Result:
    """How a run ended (the point itself is the objective's)."""

    f: float
    iterations: int
    evaluations: int
    message: str
    converged: bool
    trace: list = field(default_factory=list)   # f after every iteration


class _History:
    """The ``m`` newest pairs of this block (ring rows) and the Gram matrix of ``S, Y, g``."""

    def __init__(self, n: int, m: int):
        self.m = m
        # np.empty: pages are touched only as rows fill, so memory grows with the pairs in use
        self.S, self.Y = np.empty((m, n)), np.empty((m, n))
        self.V = np.empty((3, n))   # s, y and g of the latest iteration, whose dots are reduced together
        self.G = np.zeros((2 * m + 1, 2 * m + 1))
        self.order: list = []

    @property
    def used(self) -> int:
        return len(self.order)

    def clear(self) -> None:
        self.order = []
        self.G[:] = 0.0

    def direction(self, g: np.ndarray, shared: int = 0) -> tuple[np.ndarray, float]:
        """``p = -H g`` (this block) and the whole ``g . p`` (no communication); the last ``shared``
        entries are copies held by every block, computed so that the copies agree."""
        m, k = self.m, self.used
        c = gram_two_loop(self.G, self.order, m)
        p = combine(c[:m], self.S, c[m:2 * m], self.Y, k, c[2 * m], g, shared)
        return p, -float(c @ self.G[2 * m])

    def dots(self, blocks: Blocks, g) -> tuple[np.ndarray, float]:
        """The whole inner products of ``V`` (s, y, g) with ``S, Y, V`` and ``max |g|``: one reduction."""
        k, V = self.used, self.V
        local = history_dots(V, self.S, self.Y, k, blocks.counted(g.size))
        sums = np.concatenate([local[:, :k].ravel(), local[:, k:2 * k].ravel(), local[:, 2 * k:].ravel()])
        sums, maxes = blocks.reduce(sums, np.array([np.abs(g).max(initial=0.0)]))
        return sums, float(maxes[0])

    def update(self, sums: np.ndarray, keep_pair: bool) -> None:
        """Enter the reduced dots of ``V`` (and the pair s, y if ``keep_pair``) into the Gram matrix."""
        m, k = self.m, self.used
        h = -1
        if keep_pair:
            h = k if k < m else self.order[0]
            if k == m:
                self.order.pop(0)
            self.S[h], self.Y[h] = self.V[0], self.V[1]
            self.order.append(h)
        enter_dots(self.G, sums, self.order, k, m, h)


def enter_dots(G, sums, order: list, k: int, m: int, h: int) -> None:
    """Write the dots of the newest ``s, y, g`` (``sums`` of :meth:`_History.dots`, over the ``k`` pairs
    held before) into the Gram matrix ``G``; ``h``: the ring row of a pair kept now (-1: none).

    Compiled (:func:`_enter_dots_kernel`, the same assignments) unless ``MPIML_KERNELS=numpy``;
    the numpy reference is :func:`enter_dots_reference`.
    """
    if compiled():
        _enter_dots_kernel(G, sums, np.asarray(order, dtype=np.int64), k, m, h)
    else:
        enter_dots_reference(G, sums, order, k, m, h)


def enter_dots_reference(G, sums, order: list, k: int, m: int, h: int) -> None:
    """The numpy reference of :func:`enter_dots`."""
    VS = sums[: 3 * k].reshape(3, k)
    VY = sums[3 * k: 6 * k].reshape(3, k)
    VV = sums[6 * k:].reshape(3, 3)
    if h >= 0:
        others = [j for j in range(k) if j != h]
        for which, row in ((0, h), (1, m + h)):   # s and y against the pairs kept
            G[row, others] = G[others, row] = VS[which, others]
            G[row, [m + j for j in others]] = G[[m + j for j in others], row] = VY[which, others]
        G[h, h], G[h, m + h], G[m + h, h], G[m + h, m + h] = VV[0, 0], VV[0, 1], VV[1, 0], VV[1, 1]
    g_row = 2 * m
    G[g_row, :] = 0.0
    G[:, g_row] = 0.0
    for j in order:
        fresh = h >= 0 and j == order[-1]
        G[g_row, j] = G[j, g_row] = VV[2, 0] if fresh else VS[2, j]
        G[g_row, m + j] = G[m + j, g_row] = VV[2, 1] if fresh else VY[2, j]
    G[g_row, g_row] = VV[2, 2]


@kernel
def _enter_dots_kernel(G, sums, order, k, m, h):
    """:func:`enter_dots_reference` compiled: assignments only, so the same matrix to the bit."""
    vy, vv = 3 * k, 6 * k
    if h >= 0:
        for j in range(k):
            if j != h:
                G[h, j] = G[j, h] = sums[j]
                G[h, m + j] = G[m + j, h] = sums[vy + j]
                G[m + h, j] = G[j, m + h] = sums[k + j]
                G[m + h, m + j] = G[m + j, m + h] = sums[vy + k + j]
        G[h, h] = sums[vv]
        G[h, m + h] = sums[vv + 1]
        G[m + h, h] = sums[vv + 3]
        G[m + h, m + h] = sums[vv + 4]
    g = 2 * m
    for j in range(2 * m + 1):
        G[g, j] = 0.0
        G[j, g] = 0.0
    last = order.shape[0] - 1
    for t in range(order.shape[0]):
        j = order[t]
        if h >= 0 and t == last:
            G[g, j] = G[j, g] = sums[vv + 6]
            G[g, m + j] = G[m + j, g] = sums[vv + 7]
        else:
            G[g, j] = G[j, g] = sums[2 * k + j]
            G[g, m + j] = G[m + j, g] = sums[vy + 2 * k + j]
    G[g, g] = sums[vv + 8]


def minimize(objective, blocks: Blocks | None = None, tol: float = 1e-4, max_iter: int = 500,
             memory: int = MEMORY, ftol: float = FTOL, callback=None) -> Result:
    """Minimize ``objective`` (see the module docstring) by L-BFGS, this rank holding one block.

    Parameters
    ----------
    objective : object
        ``value_grad()``, ``line(p)`` and ``move()``; the point lives inside it.
    blocks : Blocks, optional
        How inner products and maxima combine over the blocks (default: one block).
    tol : float
        Stop when ``max |g_i|`` over every parameter is at most ``tol`` (scipy's ``gtol``).
    max_iter : int
        Stop after this many iterations.
    memory : int
        History pairs kept (scipy's ``maxcor``).
    ftol : float
        Stop when the relative reduction of ``f`` in an iteration is at most ``ftol``.
    callback : callable, optional
        ``callback(iteration, f)`` after every iteration (on every rank).

    Returns
    -------
    Result
        The same on every rank when the reductions give every rank the same numbers.
    """
    blocks = blocks or Blocks()
    f, g = objective.value_grad()
    history = _History(g.size, memory)
    gg = blocks.reduce(np.array([float(blocks.partial_dots(g[None], g[None])[0, 0])]),
                       np.array([np.abs(g).max(initial=0.0)]))
    history.G[2 * memory, 2 * memory] = gg[0][0]
    g_max = float(gg[1][0])
    result = Result(f, 0, 1, "", False)
    if g_max <= tol:
        result.message, result.converged = CONVERGED_G, True
        return result
    while True:
        p, slope = history.direction(g, blocks.shared)
        if not slope < 0.0:   # rounding made H g no descent direction: forget the curvature pairs
            if history.used:
                history.clear()
                continue
            result.message = ABNORMAL
            return result
        first = min(1.0 / math.sqrt(history.G[2 * memory, 2 * memory]), MAX_STEP) if result.iterations == 0 else 1.0
        ok, step, _, _, evaluations, task = line_search(objective.line(p), f, slope, first)
        result.evaluations += evaluations
        if not ok:
            if history.used:   # as L-BFGS-B: restart from steepest descent with an empty memory
                history.clear()
                continue
            result.message = ABNORMAL
            return result
        f_old = f
        V = history.V
        V[1] = g
        f, g = objective.move()
        np.multiply(p, step, out=V[0])
        np.subtract(g, V[1], out=V[1])
        V[2] = g
        sums, g_max = history.dots(blocks, g)
        result.iterations += 1
        result.f = f
        result.trace.append(f)
        if callback is not None:
            callback(result.iterations, f)
        k = history.used
        sy, yy = sums[6 * k + 1], sums[6 * k + 4]
        # L-BFGS-B's test: skip a pair whose curvature s.y is not positive enough
        history.update(sums, keep_pair=sy > EPS * (-step * slope) and yy > 0.0)
        if result.iterations >= max_iter:
            result.message = STOPPED
            return result
        if g_max <= tol:
            result.message, result.converged = CONVERGED_G, True
            return result
        if f_old - f <= ftol * max(abs(f_old), abs(f), 1.0):
            result.message, result.converged = CONVERGED_F, True
            return result


def load() -> None:
    """Compile the kernels of this module now (or read them from numba's cache), not in a timed run."""
    gram_two_loop(np.ones((3, 3)) + np.eye(3), [0], 1)
    enter_dots(np.zeros((3, 3)), np.zeros(15), [0], 1, 1, 0)


class FunctionObjective:
    """The objective interface for a plain ``fun(x) -> (f, g)`` on this block (e.g. serial use)."""

    def __init__(self, fun, x0, blocks: Blocks | None = None):
        self.fun, self.blocks = fun, blocks or Blocks()
        self.x = np.array(x0, dtype=np.float64, copy=True)
        self.evaluations = 0
        self._last = None

    def value_grad(self):
        self.evaluations += 1
        f, g = self.fun(self.x)
        return float(f), np.asarray(g, dtype=np.float64)

    def line(self, p):
        def phi(step):
            x = self.x + step * p
            self.evaluations += 1
            f, g = self.fun(x)
            g = np.asarray(g, dtype=np.float64)
            self._last = (x, float(f), g)
            return float(f), self.blocks.dot(g, p)
        return phi

    def move(self):
        self.x, f, g = self._last
        return f, g
