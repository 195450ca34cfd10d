"""DSGD (Gemulla et al., KDD 2011): p x p blocks, one stratum per sub-epoch (pure parts).

Rank ``r`` owns user block ``r`` and starts an epoch holding item block ``r``. In
sub-epoch ``s`` it updates its users against item block ``(r + s) mod p`` (the ``p``
blocks of a stratum share no user and no item, so no two ranks touch the same factor),
then passes the item block to rank ``r - 1`` and receives the next one from ``r + 1``
(one ``Sendrecv`` around the ring). After ``p`` sub-epochs every block is home again.

Inside a block the ratings are visited one at a time in a fresh random order (plain SGD,
as Surprise's SVD does), by a compiled loop (:func:`mpiml.mf.kernels.sgd_ratings`) or its
per-rating numpy reference. With biases the rows are laid out as in :mod:`mpiml.mf.als`
(user ``[x, b_u, 1]``, item ``[y, 1, c_i]``): ``mu + P[u] . Q[i]`` then includes both
biases, and the constant columns (``x_fixed``, ``y_fixed``) are never updated. Loss per
epoch: ``sum (r - mu - x.y)**2 + reg * sum_u n_u ||x_u||**2 + reg * sum_i n_i ||y_i||**2``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mpiml.mf.partition import pair_dots
from mpiml.runtime.jit import compiled

STEPS = ("bold", "decay")


@dataclass
class BlockRatings:
    """The ratings of one (user block, item block) pair, with block-local indices."""

    users: np.ndarray
    items: np.ndarray
    vals: np.ndarray


def split_by_item_block(users_local, items, vals, item_bounds) -> list[BlockRatings]:
    """This rank's ratings bucketed by item block; item indices made block-local."""
    block = np.searchsorted(item_bounds, items, side="right") - 1
    out = []
    for b in range(len(item_bounds) - 1):
        mask = block == b
        out.append(BlockRatings(users_local[mask], items[mask] - item_bounds[b], vals[mask]))
    return out


def sgd_block(ratings: BlockRatings, x: np.ndarray, y: np.ndarray, mu: float, lr: float, reg: float,
              rng: np.random.Generator, x_fixed: int = -1, y_fixed: int = -1) -> None:
    """One pass of per-rating SGD over a block, in an order drawn from ``rng``; updates ``x`` and ``y`` in place.

    For each rating ``(u, i, r)``: ``e = r - mu - x[u] . y[i]``, then every column ``f``
    but the constant ones (``x_fixed`` of ``x``, ``y_fixed`` of ``y``; -1 for none)
    moves: ``x[u, f] += lr * (e * y[i, f] - reg * x[u, f])`` and
    ``y[i, f] += lr * (e * x_old[u, f] - reg * y[i, f])``. The order is the same on the
    compiled and the reference path, so both give the same factors up to rounding.
    """
    order = rng.permutation(ratings.vals.size)
    if not compiled():
        sgd_block_reference(ratings, x, y, mu, lr, reg, order, x_fixed, y_fixed)
        return
    from mpiml.mf import kernels

    kernels.sgd_ratings(order, ratings.users, ratings.items, ratings.vals, x, y, float(mu), float(lr), float(reg),
                        int(x_fixed), int(y_fixed))


def sgd_block_reference(ratings: BlockRatings, x, y, mu: float, lr: float, reg: float, order,
                        x_fixed: int = -1, y_fixed: int = -1) -> None:
    """Reference of :func:`sgd_block` for a given ``order``: a Python loop over the ratings."""
    for j in order:
        u, i = ratings.users[j], ratings.items[j]
        xu, yi = x[u].copy(), y[i].copy()
        e = ratings.vals[j] - mu - float(xu @ yi)
        x[u] = xu + lr * (e * yi - reg * xu)
        y[i] = yi + lr * (e * xu - reg * yi)
        if x_fixed >= 0:
            x[u, x_fixed] = xu[x_fixed]
        if y_fixed >= 0:
            y[i, y_fixed] = yi[y_fixed]


def block_sse(ratings: BlockRatings, x, y, mu: float) -> float:
    """``sum (r - mu - x[u] . y[i])**2`` over the block."""
    if compiled():
        from mpiml.mf import kernels

        return float(kernels.residual_sse(x, ratings.users, y, ratings.items, ratings.vals, float(mu)))
    err = ratings.vals - mu - pair_dots(x, ratings.users, y, ratings.items)
    return float(err @ err)


def next_rate(step: str, lr0: float, lr: float, epoch: int, loss: float, previous, decay: float) -> float:
    """Step size for the next epoch: bold driver (x1.05 on progress, x0.5 otherwise) or decay."""
    if step == "bold":
        if previous is None or loss < previous:
            return lr * 1.05
        return lr * 0.5
    return lr0 / (1.0 + decay * (epoch + 1))
