"""Independent oracles: numpy on the gathered inputs (collectives), serial sync SGD (training)."""

from __future__ import annotations

import functools
import math

import numpy as np

DTYPES = ("float16", "float32", "float64", "int32", "int64", "uint8", "complex64", "complex128")
OPS = ("sum", "prod", "min", "max")
_NUMPY_OPS = {"sum": np.add, "prod": np.multiply, "min": np.minimum, "max": np.maximum}


def ops_for(dtype) -> tuple[str, ...]:
    return ("sum", "prod") if np.dtype(dtype).kind == "c" else OPS


def make_input(n: int, dtype, op: str, seed: int) -> np.ndarray:
    """Values whose reduction over up to ~8 ranks cannot overflow or underflow."""
    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)
    if dtype.kind in "iu":
        low, high = ((1, 3) if op == "prod" else (0, 30)) if dtype.kind == "u" else ((-3, 4) if op == "prod" else (-50, 51))
        return rng.integers(low, high, size=n).astype(dtype)
    real_dtype = np.empty(0, dtype).real.dtype

    def part():
        if op == "prod":  # magnitudes in [0.5, 2]: no overflow, no subnormals
            return rng.choice([-1.0, 1.0], size=n) * rng.uniform(0.5, 2.0, size=n)
        return rng.uniform(-1.0, 1.0, size=n)

    values = part().astype(real_dtype)
    if dtype.kind == "c":
        values = values + 1j * part().astype(real_dtype)
    return values.astype(dtype)


def reference(gathered, op: str) -> np.ndarray:
    """The reduction in rank order, in float64/complex128 for floating types."""
    dtype = gathered[0].dtype
    wide = np.complex128 if dtype.kind == "c" else (np.float64 if dtype.kind == "f" else dtype)
    result = functools.reduce(lambda a, b: _NUMPY_OPS[op](a, b), [g.astype(wide) for g in gathered])
    return result


def within_bound(result: np.ndarray, gathered, op: str) -> tuple[bool, str]:
    """Exact for integers and min/max; for floating sum/prod, the documented bound.

    Any order of p - 1 roundings of a sum is within (p - 1) * eps * sum|x_i| of the
    exact sum, and a product within about (p - 1) * eps * |product|; we allow twice that
    (complex: four times) plus the smallest normal number for the float16 edge cases.
    """
    dtype = result.dtype
    expected = reference(gathered, op)
    if dtype.kind in "iu" or op in ("min", "max"):
        ok = np.array_equal(result, expected.astype(dtype))
        return ok, "" if ok else f"exact mismatch: got {result[:8]} expected {expected[:8]}"
    p = len(gathered)
    info = np.finfo(dtype)
    factor = 4 if dtype.kind == "c" else 2
    if op == "sum":
        scale = functools.reduce(np.add, [np.abs(g.astype(expected.dtype)) for g in gathered])
    else:
        scale = np.abs(expected)
    bound = factor * max(p - 1, 1) * float(info.eps) * scale + float(info.tiny)
    err = np.abs(result.astype(expected.dtype) - expected)
    ok = bool(np.all(err <= bound))
    return ok, "" if ok else f"error {err.max()} above bound at {int(np.argmax(err - bound))}"


def sync_logistic_sgd(X, y, epochs: int, batch: int, lr: float, alpha: float, seed: int) -> np.ndarray:
    """``[w, b]`` after sync SGD on penalized logistic regression in one process, over the global
    batches every rank count and layout draws (:func:`mpiml.train.plan.sync_plan`)."""
    from scipy.special import expit

    from mpiml.train import plan

    n = X.shape[0]
    theta = np.zeros(X.shape[1] + 1)
    for epoch in range(epochs):
        order, _, _ = plan.sync_plan(seed, epoch, n, 0, n, batch)  # one rank holding every row
        for s in range(math.ceil(n / batch)):
            rows = order[s * batch:(s + 1) * batch]
            w, b = theta[:-1], theta[-1]
            r = expit(X[rows] @ w + b) - y[rows]
            theta -= lr * np.r_[X[rows].T @ r / len(rows) + alpha * w, r.mean()]
    return theta
