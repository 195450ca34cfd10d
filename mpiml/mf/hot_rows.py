"""Hot rows of partitioned ALS: their normal equations are summed at the owner instead of routing factor rows.

With partitioned factors (:mod:`mpiml.mf.partitioned`) the owner of row ``j`` of one side
(a user or an item) solves ``(G_j + lam_j I) w = h_j`` with ``G_j = sum d d^T`` and
``h_j = sum d t`` over the rows ``d`` of the other side that rated it. Routing brings every
such ``d`` to the owner. On power-law data a popular row is rated from every block, and it
drags into the route many other-side rows that nothing else on the owner needs; for such a
row it is cheaper that each rank adds up ``G``, ``h`` (and ``t . t``, for the objective)
over its own raters and sends that partial sum, ``f (f + 1) / 2 + f + 1`` numbers for ``f``
solved columns, to the owner (PowerLyra's differentiated processing of high-degree
vertices, Chen et al. 2015). Rows rated more than a threshold number of times are "hot";
:func:`threshold_costs` prices every candidate threshold from what each rank would receive,
and the cheapest is taken (by the busiest rank, the same on every rank).

Everything here is pure (local arrays); :mod:`mpiml.mf.partitioned` moves the partial sums
with :func:`mpiml.mf.routing.route_back`.
"""

from __future__ import annotations

import numpy as np

from mpiml.runtime.jit import compiled

NEVER = np.iinfo(np.int64).max  # a threshold no row exceeds: every row is routed


def packed_width(free: int) -> int:
    """Numbers in one row's partial sums: ``G``'s upper triangle, ``h`` and ``t . t``."""
    return free * (free + 1) // 2 + free + 1


def candidates(max_count: int) -> np.ndarray:
    """Thresholds worth pricing: :data:`NEVER` and the powers of two below ``max_count``."""
    powers = [1 << k for k in range(max(int(max_count), 1).bit_length())]
    return np.array([NEVER] + powers, dtype=np.int64)


def threshold_costs(counts, row_ids, other_ids, other_owner, rank: int, thresholds, row_bytes: int,
                    partial_bytes: int) -> np.ndarray:
    """Bytes this rank receives in one half-step of its rows at each of ``thresholds``.

    ``counts`` are the global rating counts of this rank's rows, ``row_ids`` (local row of each
    rating) and ``other_ids`` (global row of the other side) its rows' ratings, ``other_owner``
    the owner of each ``other_ids``. A row above the threshold brings one partial sum
    (``partial_bytes``) from every other rank that holds one of its raters; every other-side row
    that some row at or below it references, and another rank owns, comes once (``row_bytes``).
    """
    counts = np.asarray(counts, dtype=np.int64)
    row_ids, other_ids = np.asarray(row_ids, dtype=np.int64), np.asarray(other_ids, dtype=np.int64)
    other_owner, thresholds = np.asarray(other_owner, dtype=np.int64), np.asarray(thresholds, dtype=np.int64)
    remote = other_owner != rank
    # an other-side row is routed iff the least-rated row referencing it is not hot
    ids, first = np.unique(other_ids[remote], return_inverse=True)
    least = np.full(ids.size, NEVER, dtype=np.int64)
    np.minimum.at(least, first, counts[row_ids[remote]])
    least.sort()
    routed = np.searchsorted(least, thresholds, side="right")
    # a hot row receives one partial sum per other rank holding one of its raters
    span = int(other_owner.max(initial=rank)) + 1
    pairs = np.unique(row_ids[remote] * span + other_owner[remote])
    sources = np.bincount(pairs // span, minlength=counts.size)
    order = np.argsort(counts, kind="stable")
    above = np.concatenate([np.cumsum(sources[order][::-1])[::-1], [0]])
    partials = above[np.searchsorted(counts[order], thresholds, side="right")]
    return routed.astype(np.float64) * row_bytes + partials.astype(np.float64) * partial_bytes


def normal_equations(indptr, cols, vals, design: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """Each row's packed partial sums (:func:`packed_width` columns) over its entries.

    Row ``r`` has entries ``cols[indptr[r]:indptr[r+1]]`` (rows of ``design``) with targets
    ``vals - offset[cols]``: ``[upper triangle of d^T d, d^T t, t . t]``. Compiled
    (:func:`mpiml.mf.kernels.partial_normal_equations`: as fast as the reference's BLAS on
    rows of a hundred entries, 2-4x faster on rows of a few, which pay no per-row Python)
    unless ``MPIML_KERNELS=numpy``.
    """
    if compiled():
        from mpiml.mf import kernels

        out = np.empty((len(indptr) - 1, packed_width(design.shape[1])))
        kernels.partial_normal_equations(np.asarray(indptr, dtype=np.int64), np.asarray(cols, dtype=np.int64),
                                         np.asarray(vals, dtype=np.float64), np.ascontiguousarray(design, dtype=np.float64),
                                         np.asarray(offset, dtype=np.float64), out)
        return out
    return normal_equations_reference(indptr, cols, vals, design, offset)


def normal_equations_reference(indptr, cols, vals, design: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """numpy reference of :func:`normal_equations`: one ``d^T d`` (BLAS) per row."""
    f = design.shape[1]
    upper = np.triu_indices(f)
    out = np.zeros((len(indptr) - 1, packed_width(f)))
    for r in range(len(indptr) - 1):
        s, e = indptr[r], indptr[r + 1]
        if s == e:
            continue
        d = design[cols[s:e]]
        t = vals[s:e] - offset[cols[s:e]]
        out[r, :upper[0].size] = (d.T @ d)[upper]
        out[r, upper[0].size:-1] = d.T @ t
        out[r, -1] = t @ t
    return out


def add_up(parts: np.ndarray, slots, rows: int, counts) -> np.ndarray:
    """The partial sums ``parts`` added per slot (``slots[j]`` the row of ``parts[j]``), in order.

    ``counts``: the parts of each source, one after another, no slot twice within a source (as
    a route delivers them), so that a source's parts are added in one vectorized step
    (``numpy.add.at`` is ~10x slower).
    """
    out = np.zeros((rows, parts.shape[1]))
    slots = np.asarray(slots, dtype=np.int64)
    start = 0
    for n in np.asarray(counts, dtype=np.int64).tolist():
        out[slots[start:start + n]] += parts[start:start + n]
        start += n
    return out


def solve(sums: np.ndarray, lam, free: int):
    """``(w, sse)``: each row's ridge solution from its summed partials and its squared error.

    ``w`` solves ``(G + lam I) w = h``; ``sse = t . t - 2 w . h + w^T G w``. Raises
    ``numpy.linalg.LinAlgError`` on a singular system.
    """
    n = sums.shape[0]
    upper = np.triu_indices(free)
    G = np.zeros((n, free, free))
    G[:, upper[0], upper[1]] = sums[:, :upper[0].size]
    G[:, upper[1], upper[0]] = sums[:, :upper[0].size]
    h, tt = sums[:, upper[0].size:-1], sums[:, -1]
    A = G.copy()
    diag = np.arange(free)
    A[:, diag, diag] += np.broadcast_to(np.asarray(lam, dtype=np.float64), (n,))[:, None]
    w = np.linalg.solve(A, h[..., None])[..., 0] if n else np.zeros((0, free))
    sse = tt - 2.0 * np.einsum("ij,ij->i", w, h) + np.einsum("ij,ijk,ik->i", w, G, w)
    return w, sse
