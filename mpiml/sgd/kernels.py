"""Compiled per-row losses of the one-output models (numpy references: ``Model.reference_loss_and_residual``).

One pass computes the loss sum and the residuals ``d loss / d score`` of every row:
numpy needs several (``logaddexp`` and ``expit`` each take an ``exp``; temporaries for
the rest). The logistic loss uses one ``exp`` per row: ``log(1 + e^s) = max(s, 0) +
log1p(e^-|s|)`` and the sigmoid from the same ``e^-|s|``, both stable for any ``s``.

:func:`line_pointwise` evaluates the scores ``z0 + t u`` of a line search's trial in the
same pass, with the sums a full-batch L-BFGS step needs (``sum r u``, ``sum r``);
:func:`pointwise` is its case ``t = 0``.
"""

from __future__ import annotations

import math

import numpy as np

from mpiml.runtime.jit import compiled, kernel

LEAST_SQUARES, LOGISTIC, HINGE, SQUARED_HINGE = 0, 1, 2, 3


def line_pointwise(kind, z0, u, step, y, z, r):
    """The loss ``kind`` at scores ``z = z0 + step * u`` (written to ``z``; ``step`` 0: ``z0`` as it is).

    Returns ``(sum of the losses, sum of r * u, sum of r)``; the residuals ``r`` (d loss / d z) go to ``r``.
    """
    return _line_pass(kind, z0, u, step, y, z, r, _NO_ROWS, _NO_ROWS, False)


def row_line_pointwise(kind, z0, u, step, y, z, losses, r, ru):
    """Per row (reproducible mode): scores ``z = z0 + step * u``, losses, residuals and ``r * u`` into the arrays.

    :func:`line_pointwise`'s pass, keeping each row's values: the exact sums of
    :mod:`mpiml.collectives.reproducible` add them up, so a row's values depend on that row alone.
    """
    _line_pass(kind, z0, u, step, y, z, r, losses, ru, True)


_NO_ROWS = np.zeros(0)


@kernel
def _line_pass(kind, z0, u, step, y, z, r, losses, ru, rows):
    # one loss formula for both: sums always, the per-row losses and r * u only with rows (loop-invariant)
    total = 0.0
    slope = 0.0
    rsum = 0.0
    for i in range(z0.shape[0]):
        si = z0[i] if step == 0.0 else z0[i] + step * u[i]
        z[i] = si
        yi = y[i]
        if kind == LEAST_SQUARES:
            ri = si - yi
            loss = 0.5 * ri * ri
        elif kind == LOGISTIC:
            e = math.exp(-abs(si))
            loss = max(si, 0.0) + math.log1p(e) - yi * si
            ri = (1.0 if si >= 0.0 else e) / (1.0 + e) - yi
        else:
            sign = 2.0 * yi - 1.0
            slack = max(1.0 - sign * si, 0.0)
            if kind == SQUARED_HINGE:
                loss = slack * slack
                ri = -2.0 * sign * slack
            else:
                loss = slack
                ri = -sign if slack > 0.0 else 0.0
        r[i] = ri
        total += loss
        slope += ri * u[i]
        rsum += ri
        if rows:
            losses[i] = loss
            ru[i] = ri * u[i]
    return total, slope, rsum


def pointwise(kind, s, y, r) -> float:
    """Sum over rows of the loss ``kind`` at scores ``s``, labels ``y``; residuals into ``r``."""
    return line_pointwise(kind, s, s, 0.0, y, s, r)[0]


def load() -> None:
    """Compile :func:`line_pointwise` now, or read it from numba's cache (once per process; not in a timed loop)."""
    if compiled():
        pointwise(LOGISTIC, np.zeros(1), np.zeros(1), np.zeros(1))
