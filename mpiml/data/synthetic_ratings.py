"""Synthetic ratings: a low-rank matrix plus Gaussian noise, power-law popularity.

``rating(u, i) = mean + U[u] . V[i] + noise * N(0, 1)`` with ``U`` and ``V`` entries
drawn from ``N(0, rank**-0.5)``, so the signal has unit variance and the best possible
RMSE on held-out ratings (the noise floor) is ``noise``. How many ratings a user has,
and how often an item is rated, follow power laws (exponent ``skew``) over a random
order of the ids, as in real rating data.

A user's items are drawn by weight without replacement (successive sampling): draws with
replacement from the items' cumulative weights, each item kept at its first draw, until
the user has its count. That costs time and memory in proportion to the ratings, not to
users x items; users who rate more than a quarter of the items (at most
``4 * ratings / items`` of them) take the Gumbel top-k over every item instead, the
reference both methods are tested against.

Each rank generates its own ratings (users are dealt out in groups of :data:`GROUP`, each
group with its own seeded stream), so the data set is the same whatever the number of ranks.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import numpy as np

from mpiml.data.ratings import RatingsShard
from mpiml.errors import ArgumentError

GROUP = 1024


@dataclass(frozen=True)
class SyntheticSpec:
    """Parameters of a synthetic ratings set (see the module docstring)."""

    users: int = 2000
    items: int = 1000
    ratings: int = 50_000
    rank: int = 8
    noise: float = 0.3
    skew: float = 0.8
    mean: float = 3.5
    seed: int = 0

    def __post_init__(self):
        for name in ("users", "items", "ratings", "rank"):
            if getattr(self, name) < 1:
                raise ArgumentError(f"synthetic {name} must be at least 1, got {getattr(self, name)}")
        if not (self.noise >= 0 and self.skew >= 0):  # NaN too: the popularity bisection would never end
            raise ArgumentError("synthetic noise and skew must be non-negative")
        if not math.isfinite(self.mean) or math.isinf(self.noise) or math.isinf(self.skew) or self.seed < 0:
            raise ArgumentError("synthetic mean, noise and skew must be finite and seed >= 0")

    def describe(self) -> str:
        return "synthetic:" + ",".join(f"{k}={v}" for k, v in asdict(self).items())


def parse_spec(text: str) -> SyntheticSpec:
    """``"synthetic:users=1000,items=500,ratings=1e5,rank=8,noise=0.3,seed=1"`` -> spec."""
    body = text.split(":", 1)[1] if text.startswith("synthetic") and ":" in text else ""
    types = {f.name: f.type for f in fields(SyntheticSpec)}
    values = {}
    for part in filter(None, (p.strip() for p in body.split(","))):
        key, _, value = part.partition("=")
        if key not in types:
            raise ArgumentError(f"unknown synthetic parameter {key!r}; expected some of {sorted(types)}")
        try:
            values[key] = float(value) if types[key] in ("float", float) else int(float(value))
        except ValueError:
            raise ArgumentError(f"synthetic {key}={value!r} is not a number") from None
    return SyntheticSpec(**values)


def _power_weights(n: int, skew: float, rng) -> np.ndarray:
    weights = np.arange(1, n + 1, dtype=np.float64) ** -skew
    return rng.permutation(weights) / weights.sum()


def true_factors(spec: SyntheticSpec):
    """``(U, V, user_weights, item_weights)``, identical on every rank."""
    rng = np.random.default_rng(np.random.SeedSequence([spec.seed, 1]))
    scale = spec.rank ** -0.5
    u = rng.normal(0.0, scale, size=(spec.users, spec.rank))
    v = rng.normal(0.0, scale, size=(spec.items, spec.rank))
    return u, v, _power_weights(spec.users, spec.skew, rng), _power_weights(spec.items, spec.skew, rng)


def ratings_per_user(spec: SyntheticSpec, user_weights) -> np.ndarray:
    """How many ratings each user gets: at least one, at most every item, about ``ratings`` in all.

    Proportional to the user's weight, with the scale raised (bisection) to make up for
    the heavy users capped at every item.
    """
    target = min(spec.ratings, spec.users * spec.items)

    def counts(scale):
        return np.clip(np.rint(scale * user_weights), 1, spec.items).astype(np.int64)

    low, high = 0.0, float(target) / user_weights.min() + 1.0
    for _ in range(100):
        mid = 0.5 * (low + high)
        low, high = (mid, high) if counts(mid).sum() < target else (low, mid)
    return counts(high)


def gumbel_top_k(n: int, log_weights, rng) -> np.ndarray:
    """``n`` distinct items drawn by weight without replacement (Gumbel top-k over every item; the reference)."""
    if n >= log_weights.size:
        return np.arange(log_weights.size, dtype=np.int64)
    scores = log_weights + rng.gumbel(size=log_weights.size)
    return np.argpartition(-scores, n - 1)[:n].astype(np.int64)


def sample_items(counts, log_weights, cdf, rng) -> np.ndarray:
    """Sorted keys ``j * items + item`` of ``counts[j]`` distinct items for each user ``j`` of a group.

    Successive sampling, as :func:`gumbel_top_k`, in time proportional to the ratings;
    ``cdf`` is the cumulative item weight (last entry 1).
    """
    items = cdf.size
    counts = np.asarray(counts, dtype=np.int64)
    heavy = counts > items // 4
    parts = [j * items + gumbel_top_k(int(counts[j]), log_weights, rng) for j in np.flatnonzero(heavy)]
    need = np.where(heavy, 0, counts)
    accepted = np.empty(0, dtype=np.int64)
    pending = np.flatnonzero(need)
    missing = need[pending]
    while pending.size:
        who = np.repeat(pending, missing + (missing >> 2) + 2)  # a quarter more draws than still missing
        drawn = np.minimum(np.searchsorted(cdf, rng.random(who.size), side="right"), items - 1)
        keys = np.concatenate([accepted, who * items + drawn])
        _, first = np.unique(keys, return_index=True)
        keys = keys[np.sort(first)]  # each (user, item) once, in the order drawn
        owner = keys // items
        order = np.argsort(owner, kind="stable")
        keys, owner = keys[order], owner[order]
        keep = np.arange(keys.size) - np.searchsorted(owner, owner) < need[owner]  # a user's first draws
        accepted = keys[keep]
        have = np.bincount(owner[keep], minlength=need.size)
        pending = np.flatnonzero(have < need)
        missing = need[pending] - have[pending]
    parts.append(accepted)
    return np.sort(np.concatenate(parts))


def synthetic_ratings(spec: SyntheticSpec, rank: int = 0, size: int = 1, progress=None) -> RatingsShard:
    """The ratings of the user groups that ``rank`` of ``size`` generates (raw ids 0..n-1).

    ``keys`` number the ratings globally, so :func:`mpiml.data.ratings.split_fraction`
    splits the same way at any number of ranks. ``progress(done, total)``, if given, is
    called after each group with this rank's ratings so far and in all.
    """
    u, v, user_weights, item_weights = true_factors(spec)
    counts = ratings_per_user(spec, user_weights)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    log_weights = np.log(item_weights)
    cdf = np.cumsum(item_weights)
    cdf /= cdf[-1]
    groups = range(rank, -(-spec.users // GROUP), size)
    total = int(sum(offsets[min((g + 1) * GROUP, spec.users)] - offsets[g * GROUP] for g in groups))
    users, items, keys, noise = [], [], [], []
    done = 0
    for group in groups:
        rng = np.random.default_rng(np.random.SeedSequence([spec.seed, 2, group]))
        first, last = group * GROUP, min((group + 1) * GROUP, spec.users)
        pairs = sample_items(counts[first:last], log_weights, cdf, rng)
        users.append(first + pairs // spec.items)
        items.append(pairs % spec.items)
        keys.append(np.arange(offsets[first], offsets[last], dtype=np.int64))
        noise.append(rng.standard_normal(pairs.size))
        done += pairs.size
        if progress is not None:
            progress(done, total)
    if not users:
        empty = np.empty(0, dtype=np.int64)
        return RatingsShard(empty, empty.copy(), np.empty(0), empty.copy(), spec.describe())
    users, items, keys = np.concatenate(users), np.concatenate(items), np.concatenate(keys)
    values = spec.mean + np.einsum("ij,ij->i", u[users], v[items]) + spec.noise * np.concatenate(noise)
    return RatingsShard(users, items, values, keys, spec.describe())
