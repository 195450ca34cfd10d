"""Which part of a linear model a grid position owns (pure functions of shapes and position).

The whole parameter vector ``theta`` is the one of :mod:`mpiml.sgd.models`: weights
``W`` of shape ``(d, k)`` in C order, then ``k`` intercepts. A *features* split gives
column ``c`` of the grid the rows ``[lo, hi)`` of ``W`` (a contiguous feature block)
and a replica of every intercept; a *classes* split gives it the columns ``[lo, hi)``
of ``W`` (a block of classes) and their intercepts. ``theta_local = theta[index]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mpiml.parallel.grid import block
from mpiml.errors import ArgumentError

SPLITS = ("features", "classes")


@dataclass(frozen=True)
class Part:
    """The block of ``theta`` one model-group member owns."""

    split: str          # "features" or "classes"
    d: int              # features of the whole model
    k: int              # outputs of the whole model
    lo: int             # first feature (features split) or class (classes split) owned
    hi: int

    @property
    def w_shape(self) -> tuple[int, int]:
        """Shape of the local weight block."""
        return (self.hi - self.lo, self.k) if self.split == "features" else (self.d, self.hi - self.lo)

    @property
    def n_bias(self) -> int:
        return self.k if self.split == "features" else self.hi - self.lo

    @property
    def n_weights(self) -> int:
        return self.w_shape[0] * self.w_shape[1]

    @property
    def n_params(self) -> int:
        return self.n_weights + self.n_bias

    @property
    def index(self) -> np.ndarray:
        """Positions in the whole ``theta`` of the local parameters, in local order."""
        d, k = self.d, self.k
        if self.split == "features":
            weights = np.arange(self.lo * k, self.hi * k)
            bias = d * k + np.arange(k)
        else:
            weights = (np.arange(d)[:, None] * k + np.arange(self.lo, self.hi)[None, :]).ravel()
            bias = d * k + np.arange(self.lo, self.hi)
        return np.concatenate([weights, bias]).astype(np.int64)

    def split_local(self, theta_local):
        """Views ``(W_block, b_block)`` of a local parameter vector."""
        return theta_local[: self.n_weights].reshape(self.w_shape), theta_local[self.n_weights:]


def make_part(split: str, d: int, k: int, cols: int, col: int) -> Part:
    """The part of column ``col`` of ``cols`` for a model with ``d`` features and ``k`` outputs."""
    if split not in SPLITS:
        raise ArgumentError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")
    n = d if split == "features" else k
    if split == "classes" and k < 2:
        raise ArgumentError("a classes split needs a softmax model (one output per class)")
    if cols > n:
        raise ArgumentError(f"cannot split {n} {split} over {cols} grid columns; use a grid with at most {n} columns")
    lo, hi = block(n, cols, col)
    return Part(split, int(d), int(k), lo, hi)
