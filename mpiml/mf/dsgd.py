"""DSGD (Gemulla et al., KDD 2011): p x p blocks, one stratum per sub-epoch (pure parts).

Rank ``r`` owns user block ``r`` and starts an epoch holding item block ``r``. In
sub-epoch ``s`` it updates its users against item block ``(r + s) mod p`` (the ``p``
blocks of a stratum share no user and no item, so no two ranks touch the same factor),
then passes the item block to rank ``r - 1`` and receives the next one from ``r + 1``
(one ``Sendrecv`` around the ring). After ``p`` sub-epochs every block is home again.

Inside a block the ratings are visited in a fresh random order in mini-batches; a
mini-batch applies the summed gradients of its ratings (``numpy.add.at``), which keeps
the Python overhead per rating small. Loss per epoch:
``sum (r - mu - x.y)**2 + reg * sum_u n_u ||x_u||**2 + reg * sum_i n_i ||y_i||**2``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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
              rng: np.random.Generator, batch: int = 256) -> None:
    """One pass of mini-batch SGD over a block; updates ``x`` and ``y`` in place."""
    order = rng.permutation(ratings.vals.size)
    for lo in range(0, order.size, batch):
        idx = order[lo:lo + batch]
        u, i = ratings.users[idx], ratings.items[idx]
        xu, yi = x[u], y[i]
        err = ratings.vals[idx] - mu - np.einsum("ij,ij->i", xu, yi)
        np.add.at(x, u, lr * (err[:, None] * yi - reg * xu))
        np.add.at(y, i, lr * (err[:, None] * xu - reg * yi))


def block_sse(ratings: BlockRatings, x, y, mu: float) -> float:
    err = ratings.vals - mu - np.einsum("ij,ij->i", x[ratings.users], y[ratings.items])
    return float(err @ err)


def next_rate(step: str, lr0: float, lr: float, epoch: int, loss: float, previous, decay: float) -> float:
    """Step size for the next epoch: bold driver (x1.05 on progress, x0.5 otherwise) or decay."""
    if step == "bold":
        if previous is None or loss < previous:
            return lr * 1.05
        return lr * 0.5
    return lr0 / (1.0 + decay * (epoch + 1))
