"""Serving a factorization whose factors are split over the ranks: no rank ever holds them all.

A fitted model with partitioned factors (:class:`PartitionedFactors`) keeps on rank ``r`` the
rows ``user_bounds[r]:user_bounds[r + 1]`` of the user factors P and ``item_bounds[r]:
item_bounds[r + 1]`` of the item factors Q, the training items its own users rated, and the
(replicated) sorted raw ids and global mean. The functions here answer what
:class:`~mpiml.mf.estimator.FactorModel` answers from replicated factors, moving only the rows
a request needs:

- :func:`predict_pairs`: each (user, item) pair travels to the owner of one of its rows, which
  fetches the other row from its owner (each distinct row once per rank), scores it and sends
  the score back. Which side the pairs travel to is decided for the whole call from an
  estimate every rank agrees on (one small sum): the number of rows that would have to be
  fetched from another rank either way. Pairs and scores cost the same both ways, so the
  side whose owners already hold more of what the pairs need wins (many test ratings per
  user: route to the user owners and fetch each item row once).
- :func:`evaluate`: the predictions of :func:`predict_pairs`, then the same sums as the
  replicated ``FactorModel.evaluate`` (RMSE/MAE; precision/recall/nDCG/MAP@k from
  :func:`top_k_users`), with the same rank grouping, batches and reductions, so that the
  result is the replicated one at the same rank count (bitwise where the scores are: always
  in reproducible mode, which scores row by row in a fixed order).
- :func:`recommend_batch` / :func:`top_k_users`: each requested user's row goes from its owner
  to every item-block owner (with the user's rated items of that block, to exclude), each
  scores its block and keeps its own top k, and the asking rank merges the ``p`` lists. The
  order is strict on ``(-score, item index)`` (:func:`mpiml.mf.metrics.top_k`), so the merge
  of the blocks' top k is the top k of the whole row: the same items as the replicated
  ``recommend``, ties broken the same way. Traffic per user: ``p`` rows of ``width`` floats
  plus ``p * k`` candidates back, against the whole of Q (``items x width``) to gather it.
- :func:`fold_in`: the rows of the items the new user rated are fetched from their owners and
  handed, with the ratings, to an injected ``solve(rows, item_rows)``: :func:`als_solver`
  (the ALS half-step of :mod:`mpiml.mf.als`) or :func:`ials_solver` (with the Gram matrix of
  all item rows, an allreduce of the blocks' Grams: :func:`item_gram`).

Every function taking ``comm`` is collective: every rank of ``comm`` calls it (a rank with
nothing to ask passes empty arrays) and gets the answers to its own requests. The
communication goes through a transport (``transport=``, default :class:`MPITransport` on
``comm``): an all-to-all of arrays, sums, and the agreement on errors; the rest is pure.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mpiml.data.ratings import lookup
from mpiml.errors import ArgumentError
from mpiml.mf import als, ials
from mpiml.mf.metrics import error_sums, ranking_means, ranking_rows, ranking_sums, rmse_mae, top_k
from mpiml.mf.params import COLD_START
from mpiml.mf.partition import Rows, build_rows, pair_dots
from mpiml.runtime import partition
from mpiml.runtime.agree import raise_if_any
from mpiml.runtime.comm import private_comm, resolve_comm

__all__ = ["PartitionedFactors", "from_model", "MPITransport", "predict_pairs", "evaluate", "top_k_users", "recommend_batch",
           "fold_in", "als_solver", "ials_solver", "solver_for", "item_gram", "gather_full", "merge_top_k",
           "route_costs", "add_users"]

BATCH = 512  # users scored together by evaluate's ranking (the replicated path's batch)
SCORES = 1 << 22  # scores one item block computes at a time (32 MiB)


@dataclass(frozen=True, eq=False)
class PartitionedFactors:
    """One rank's share of a factorization (see the module docstring).

    ``user_block`` holds the rows ``user_bounds[rank]:user_bounds[rank + 1]`` of P,
    ``item_block`` those ``item_bounds[rank]:item_bounds[rank + 1]`` of Q (a score is
    ``mu + P[u] . Q[i]``; bias columns, if any, are inside the width). ``rated_indptr`` /
    ``rated_indices`` are the CSR of the training items (global indices) of this rank's users.
    ``user_ids`` / ``item_ids`` are the sorted raw ids (global index = position), the same on
    every rank.
    """

    user_bounds: np.ndarray
    item_bounds: np.ndarray
    user_block: np.ndarray
    item_block: np.ndarray
    user_ids: np.ndarray
    item_ids: np.ndarray
    mu: float
    rated_indptr: np.ndarray
    rated_indices: np.ndarray
    rank: int
    size: int

    def __post_init__(self):
        ub, ib = np.asarray(self.user_bounds), np.asarray(self.item_bounds)
        r, p = int(self.rank), int(self.size)
        problems = []
        if not (0 <= r < p) or ub.shape != (p + 1,) or ib.shape != (p + 1,):
            problems.append(f"rank {r} of {p} with bounds of lengths {ub.size} and {ib.size} (need {p + 1})")
        else:
            if np.any(np.diff(ub) < 0) or np.any(np.diff(ib) < 0) or ub[0] != 0 or ib[0] != 0:
                problems.append("bounds must start at 0 and not decrease")
            if ub[-1] != np.size(self.user_ids) or ib[-1] != np.size(self.item_ids):
                problems.append(f"bounds end at {ub[-1]} users and {ib[-1]} items, the ids number "
                                f"{np.size(self.user_ids)} and {np.size(self.item_ids)}")
            nu, ni = ub[r + 1] - ub[r], ib[r + 1] - ib[r]
            if np.ndim(self.user_block) != 2 or np.ndim(self.item_block) != 2 or \
                    self.user_block.shape[0] != nu or self.item_block.shape[0] != ni or \
                    self.user_block.shape[1] != self.item_block.shape[1]:
                problems.append(f"blocks of shapes {np.shape(self.user_block)} and {np.shape(self.item_block)}, "
                                f"expected ({nu}, width) and ({ni}, width)")
            if np.size(self.rated_indptr) != nu + 1 or \
                    int(self.rated_indptr[-1]) != np.size(self.rated_indices):
                problems.append("rated_indptr must have one entry per block user + 1, ending at len(rated_indices)")
        if problems:
            raise ArgumentError("invalid partitioned factors: " + "; ".join(problems))

    @property
    def width(self) -> int:
        return int(self.user_block.shape[1])

    @property
    def n_users(self) -> int:
        return int(self.user_bounds[-1])

    @property
    def n_items(self) -> int:
        return int(self.item_bounds[-1])

    @property
    def user_range(self) -> tuple[int, int]:
        return partition.block(self.user_bounds, self.rank)

    @property
    def item_range(self) -> tuple[int, int]:
        return partition.block(self.item_bounds, self.rank)

    def rated(self, user: int) -> np.ndarray:
        """Training items (global indices) of ``user``, a global index in this rank's block."""
        local = int(user) - int(self.user_bounds[self.rank])
        return self.rated_indices[self.rated_indptr[local]:self.rated_indptr[local + 1]]

    @classmethod
    def from_full(cls, P, Q, mu, user_ids, item_ids, rated_indptr, rated_indices, user_bounds, item_bounds,
                  rank: int) -> "PartitionedFactors":
        """Rank ``rank``'s share of full (replicated) arrays, on the given block bounds."""
        ub, ib = np.asarray(user_bounds, np.int64), np.asarray(item_bounds, np.int64)
        (ulo, uhi), (ilo, ihi) = partition.block(ub, rank), partition.block(ib, rank)
        indptr = np.asarray(rated_indptr, np.int64)
        return cls(ub, ib, np.ascontiguousarray(P[ulo:uhi]), np.ascontiguousarray(Q[ilo:ihi]),
                   np.asarray(user_ids), np.asarray(item_ids), float(mu), indptr[ulo:uhi + 1] - indptr[ulo],
                   np.asarray(rated_indices, np.int64)[indptr[ulo]:indptr[uhi]], int(rank), ub.size - 1)


def from_model(model, comm=None) -> PartitionedFactors:
    """This rank's :class:`PartitionedFactors` of a fitted ``FactorModel`` (local; ``comm`` gives rank and size).

    A model fitted with partitioned factors hands over its blocks (``user_block_``,
    ``item_block_``, ``user_bounds_``, ``item_bounds_``, ``local_rated_indptr_``,
    ``local_rated_indices_``); one with replicated factors is cut into contiguous blocks, so
    that it can be served, or saved with :func:`mpiml.mf.block_store.save_blocks`, the same way.
    """
    comm = resolve_comm(comm)
    rank, size = comm.Get_rank(), comm.Get_size()
    if hasattr(model, "user_block_"):
        return PartitionedFactors(model.user_bounds_, model.item_bounds_, model.user_block_, model.item_block_,
                                  model.user_ids_, model.item_ids_, float(model.global_mean_),
                                  model.local_rated_indptr_, model.local_rated_indices_, rank, size)
    if not hasattr(model, "item_factors_"):
        raise ArgumentError(f"this {type(model).__name__} is not fitted yet: call fit (or load a saved model)")
    return PartitionedFactors.from_full(model.user_factors_, model.item_factors_, model.global_mean_, model.user_ids_,
                                        model.item_ids_, model.rated_indptr_, model.rated_indices_,
                                        partition.contiguous(model.user_ids_.size, size),
                                        partition.contiguous(model.item_ids_.size, size), rank)


class MPITransport:
    """The communication of the serving functions, on ``comm``: all-to-all of arrays, sums, error agreement.

    Sums go through :class:`mpiml.mf.transport.Exchange` (the replicated estimator's), so that
    they reduce in the same order as there; arrays travel with ``MPI_Alltoallv`` on mpiml's
    private duplicate of ``comm`` (never mixed with the caller's messages). ``bytes`` counts
    what this rank sent.
    """

    def __init__(self, comm=None, exchange: str = "auto"):
        from mpiml.mf.transport import Exchange

        self.comm = resolve_comm(comm)
        self.ex = Exchange(self.comm, exchange)
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.bytes = 0

    def alltoallv(self, parts: list) -> list:
        """``parts[d]`` goes to rank ``d``; returns what each rank sent here (list by source).

        Every part has the same dtype and the same shape past the first axis on every rank.
        """
        parts = [np.ascontiguousarray(part) for part in parts]
        if self.size == 1:
            return parts
        comm = private_comm(self.comm)
        dtype, tail = parts[0].dtype, parts[0].shape[1:]
        per = int(np.prod(tail, dtype=np.int64))
        sent = np.array([part.shape[0] for part in parts], dtype=np.int64)
        got = np.empty(self.size, dtype=np.int64)
        comm.Alltoall(sent, got)
        out = np.empty((int(got.sum()), *tail), dtype=dtype)
        comm.Alltoallv([np.concatenate([part.reshape(-1) for part in parts]), sent * per], [out.reshape(-1), got * per])
        self.bytes += int((sent.sum() - sent[self.rank]) * per * dtype.itemsize)
        return np.split(out, np.cumsum(got)[:-1])

    def sum(self, values) -> np.ndarray:
        """Elementwise sum over ranks (the replicated estimator's reduction)."""
        return self.ex.sum(values)

    def exact(self, terms) -> np.ndarray:
        """Exact sums over ranks of a :class:`mpiml.collectives.reproducible.Sum`."""
        return self.ex.exact(terms)

    def allgather(self, values: np.ndarray) -> np.ndarray:
        """Every rank's 1-D ``values``, concatenated in rank order."""
        if self.size == 1:
            return np.asarray(values)
        return np.concatenate(private_comm(self.comm).allgather(np.asarray(values)))

    def agree(self, error) -> None:
        """Raise ``error`` of any rank on every rank (:func:`mpiml.runtime.agree.raise_if_any`)."""
        raise_if_any(error, self.comm)


def _csr_take(starts, counts, order, values) -> np.ndarray:
    """The entries of CSR rows ``order`` (each at ``starts[j]``, ``counts[j]`` long) of ``values``, concatenated."""
    c, s = np.asarray(counts)[order], np.asarray(starts)[order]
    return values[np.repeat(s - (np.cumsum(c) - c), c) + np.arange(int(c.sum()))]


def _transport(comm, transport):
    return transport if transport is not None else MPITransport(comm)


def _groups(owner: np.ndarray, size: int):
    """``(order, cuts)``: positions grouped by owner rank (stable), group ``d`` = ``order[cuts[d]:cuts[d+1]]``."""
    order = np.argsort(owner, kind="stable")
    return order, np.searchsorted(owner[order], np.arange(size + 1))


def request(t, owner: np.ndarray, queries: np.ndarray, answer):
    """Send query rows to rank ``owner[j]``, answer them there, return the answers in query order (collective).

    ``answer(received)`` runs once on every rank (also with no queries, so it may be collective
    itself) and returns one answer row per received query row.
    """
    order, cuts = _groups(np.asarray(owner, dtype=np.int64), t.size)
    queries = np.asarray(queries)
    received = t.alltoallv([queries[order[cuts[d]:cuts[d + 1]]] for d in range(t.size)])
    counts = np.cumsum([part.shape[0] for part in received])[:-1]
    replies = np.asarray(answer(np.concatenate(received)))
    back = np.concatenate(t.alltoallv(np.split(replies, counts)))
    out = np.empty_like(back)
    out[order] = back
    return out


def fetch_rows(t, bounds, block: np.ndarray, wanted) -> tuple[np.ndarray, np.ndarray]:
    """``(rows, inverse)``: the rows of the distinct ``wanted`` global indices, from their owners, and
    where each wanted index is among them (``rows[inverse]`` are the wanted rows; collective)."""
    unique, inverse = np.unique(np.asarray(wanted, dtype=np.int64), return_inverse=True)
    lo = int(bounds[t.rank])
    rows = request(t, partition.owner(bounds, unique), unique[:, None], lambda q: block[q[:, 0] - lo])
    return rows.reshape(unique.size, block.shape[1]), inverse.reshape(-1)


def route_costs(user_bounds, item_bounds, users, items) -> np.ndarray:
    """``[rows fetched routing to user owners, ... to item owners]`` for this rank's pairs (pure).

    Routed to the user owner, a pair needs its item row there unless that rank owns it too;
    each distinct (destination, row) once. Summed over ranks, an upper bound of the rows
    fetched (two ranks may ask the same owner for the same row).
    """
    users, items = np.asarray(users, dtype=np.int64), np.asarray(items, dtype=np.int64)
    uo, io = partition.owner(user_bounds, users), partition.owner(item_bounds, items)
    remote = uo != io
    return np.array([np.unique(np.stack([uo[remote], items[remote]]), axis=1).shape[1],
                     np.unique(np.stack([io[remote], users[remote]]), axis=1).shape[1]], dtype=np.float64)


def _check_indices(pf, users, items, t, unknown: int = -1) -> None:
    """Agree on an error if any rank passed an index outside the model (``-1`` means unknown: allowed
    when ``unknown`` is -1)."""
    error = None
    if users.size != items.size:
        error = ArgumentError(f"users and items differ in length: {users.size} and {items.size}")
    elif np.any((users < unknown) | (users >= pf.n_users)) or np.any((items < unknown) | (items >= pf.n_items)):
        error = ArgumentError(f"user or item index out of range (the model has {pf.n_users} users and "
                              f"{pf.n_items} items)")
    t.agree(error)


def predict_pairs(pf: PartitionedFactors, users, items, comm=None, transport=None,
                  route: str = "auto") -> np.ndarray:
    """Scores ``mu + P[u] . Q[i]`` of global index pairs held on this rank, in order (collective).

    Parameters
    ----------
    pf : PartitionedFactors
    users, items : array of int
        Global indices (positions in ``pf.user_ids`` / ``pf.item_ids``); -1 (unknown) gives NaN.
    comm : mpi4py.MPI.Intracomm, optional
        Every rank calls, with its own pairs (possibly none).
    transport : optional
        Default :class:`MPITransport` on ``comm``.
    route : {"auto", "users", "items"}
        Which owners the pairs travel to; ``"auto"``: the side with fewer rows to fetch
        (:func:`route_costs` summed over ranks). The same on every rank.

    Returns
    -------
    numpy.ndarray
        One score per pair, as ``FactorModel.predict`` computes it from replicated factors.

    Raises
    ------
    ArgumentError
        On every rank, if any rank passed an index outside the model.
    """
    t = _transport(comm, transport)
    t.agree(None if route in ("auto", "users", "items") else
            ArgumentError(f"route must be auto, users or items, not {route!r}"))
    u, i = np.asarray(users, dtype=np.int64).reshape(-1), np.asarray(items, dtype=np.int64).reshape(-1)
    _check_indices(pf, u, i, t)
    known = (u >= 0) & (i >= 0)
    out = np.full(u.size, np.nan)
    u, i = u[known], i[known]
    by_users = route != "items"
    if t.size > 1 and route == "auto":
        costs = t.sum(route_costs(pf.user_bounds, pf.item_bounds, u, i))
        by_users = bool(costs[0] <= costs[1])
    # Routed to the owners of one side, the pair's other row is fetched; the dot product is the same
    # either way (each product is commutative, the sum runs over the columns in order).
    if by_users:
        own, other, owner_bounds, lo = pf.item_bounds, pf.item_block, pf.user_bounds, pf.user_bounds[pf.rank]
        block, pairs = pf.user_block, np.stack([u, i], axis=1)
    else:
        own, other, owner_bounds, lo = pf.user_bounds, pf.user_block, pf.item_bounds, pf.item_bounds[pf.rank]
        block, pairs = pf.item_block, np.stack([i, u], axis=1)

    def score(q):
        rows, inverse = fetch_rows(t, own, other, q[:, 1])
        return pf.mu + pair_dots(block, q[:, 0] - lo, rows, inverse)

    out[known] = request(t, partition.owner(owner_bounds, pairs[:, 0]), pairs, score)
    return out


def merge_top_k(candidates: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best of each row's candidates ``(item index, score)``, best first (pure).

    The order of :func:`mpiml.mf.metrics.top_k` (score down, then index up; NaN as -inf): a
    strict total order, so merging the top ``k`` of each block of a row gives the top ``k``
    of the whole row.
    """
    scores = np.where(np.isnan(scores), -np.inf, scores)
    order = np.lexsort((candidates, -scores), axis=1)[:, :k]
    return np.take_along_axis(candidates, order, axis=1), np.take_along_axis(scores, order, axis=1)


def block_top_k(rows: np.ndarray, item_block: np.ndarray, start: int, offset: float, k: int, excluded=None,
                exact: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``(global item indices, scores)`` of the ``k`` best items of one item block for each user row (pure).

    ``excluded`` is ``(row numbers, ascending; global item indices)`` scored -inf (rated items).
    ``exact``: scores row by row in a fixed order (:func:`mpiml.train.reproducible.scores`).
    Scores about :data:`SCORES` at a time (rows of ``rows`` in chunks).
    """
    from mpiml.train.reproducible import scores as row_scores

    n = rows.shape[0]
    best, values = np.zeros((n, k), dtype=np.int64), np.zeros((n, k))
    step = max(1, SCORES // max(item_block.shape[0], 1))
    bounds = np.searchsorted(excluded[0], np.arange(0, n + step, step)) if excluded is not None else None
    for j, lo in enumerate(range(0, n, step)):
        hi = min(lo + step, n)
        if exact:
            scores = row_scores(item_block.T, np.zeros(item_block.shape[0]), rows[lo:hi])
        else:
            scores = rows[lo:hi] @ item_block.T
        scores = offset + scores
        if bounds is not None:
            cut = slice(bounds[j], bounds[j + 1])
            scores[excluded[0][cut] - lo, excluded[1][cut] - start] = -np.inf
        best[lo:hi] = top_k(scores, k)
        values[lo:hi] = np.take_along_axis(scores, best[lo:hi], axis=1)
    return best + start, values


def top_k_users(pf: PartitionedFactors, users, k: int, exclude_rated: bool = True, offset: float = 0.0,
                exact: bool = False, comm=None, transport=None) -> tuple[np.ndarray, np.ndarray]:
    """``(items, scores)``, each ``(len(users), min(k, n_items))``: every user's best items (collective).

    The top ``k`` of ``offset + P[u] . Q[i]`` over all items, best first, as
    :func:`mpiml.mf.metrics.top_k` orders the full score row (rated items scored -inf when
    ``exclude_rated``, and still listed if fewer than ``k`` others remain). ``users`` are
    global indices held on this rank. Five all-to-alls: the users to their owners; each
    owner's rows, and the rated items of each block, to every rank that holds items; each
    block's top ``k`` (indices, scores) back to the asking rank.
    """
    t = _transport(comm, transport)
    users = np.asarray(users, dtype=np.int64).reshape(-1)
    _check_indices(pf, users, np.zeros_like(users), t, unknown=0)
    sizes = partition.sizes(pf.item_bounds)
    kk = np.minimum(k, sizes)                      # candidates each item block returns per user
    # 1. the users to their owners, with their position here
    order, cuts = _groups(partition.owner(pf.user_bounds, users), t.size)
    asked = np.stack([users, np.arange(users.size)], axis=1)
    got = t.alltoallv([asked[order[cuts[d]:cuts[d + 1]]] for d in range(t.size)])
    source = np.repeat(np.arange(t.size), [part.shape[0] for part in got])
    got = np.concatenate(got)
    local = got[:, 0] - pf.user_bounds[pf.rank]
    # 2. their rows, and the rated items in each item block, to every item-block owner
    rows = pf.user_block[local]
    if exclude_rated:
        counts = np.diff(pf.rated_indptr)[local]
        which = np.repeat(np.arange(local.size), counts)
        rated = _csr_take(pf.rated_indptr[:-1], np.diff(pf.rated_indptr), local, pf.rated_indices)
        dest = partition.owner(pf.item_bounds, rated)
    else:
        which, rated, dest = (np.zeros(0, np.int64),) * 3
    ints, sent_rows = [], []
    for d in range(t.size):   # a rank without items gets nothing
        mask = dest == d
        ints.append(np.concatenate([source, got[:, 1], np.bincount(which[mask], minlength=local.size), rated[mask]])
                    if kk[d] else np.zeros(0, np.int64))
        sent_rows.append(rows if kk[d] else rows[:0])
    arrived_rows = t.alltoallv(sent_rows)
    arrived_ints = t.alltoallv(ints)
    # 3. each item block's top k of every arrived row, back to the asking ranks
    m = [part.shape[0] for part in arrived_rows]
    heads = [part[:3 * n].reshape(3, n) for part, n in zip(arrived_ints, m)]
    meta = np.concatenate(heads, axis=1) if heads else np.zeros((3, 0), np.int64)
    excluded_items = np.concatenate([part[3 * n:] for part, n in zip(arrived_ints, m)])
    excluded_rows = np.repeat(np.arange(meta.shape[1]), meta[2])
    lo = int(pf.item_bounds[pf.rank])
    mine = int(kk[pf.rank])
    if mine > 0:
        best, scores = block_top_k(np.concatenate(arrived_rows), pf.item_block, lo, offset, mine,
                                   (excluded_rows, excluded_items), exact)
    else:
        best, scores = np.zeros((meta.shape[1], 0), np.int64), np.zeros((meta.shape[1], 0))
    order, cuts = _groups(meta[0], t.size)
    back_ints = [np.concatenate([meta[1, order[cuts[d]:cuts[d + 1]], None], best[order[cuts[d]:cuts[d + 1]]]],
                                axis=1).reshape(-1) for d in range(t.size)]
    back_scores = [scores[order[cuts[d]:cuts[d + 1]]].reshape(-1) for d in range(t.size)]
    answers_ints, answers_scores = t.alltoallv(back_ints), t.alltoallv(back_scores)
    # 4. merge the blocks' candidates of each user
    columns = np.concatenate([[0], np.cumsum(kk)])
    candidates = np.zeros((users.size, int(columns[-1])), dtype=np.int64)
    values = np.zeros((users.size, int(columns[-1])))
    for d in range(t.size):
        if kk[d] == 0:
            continue
        block_ints = answers_ints[d].reshape(-1, 1 + int(kk[d]))
        at = block_ints[:, 0]
        candidates[at, columns[d]:columns[d + 1]] = block_ints[:, 1:]
        values[at, columns[d]:columns[d + 1]] = answers_scores[d].reshape(-1, int(kk[d]))
    return merge_top_k(candidates, values, min(k, pf.n_items))


def recommend_batch(pf: PartitionedFactors, users, k: int = 10, exclude_rated: bool = True, comm=None,
                    transport=None) -> list:
    """``[(item_ids, scores), ...]``: the ``k`` best items of each raw user id held here, best first (collective).

    What ``FactorModel.recommend`` returns for each user (items rated in training left out
    when ``exclude_rated``; fewer than ``k`` if fewer remain).

    Raises
    ------
    ArgumentError
        On every rank, if any rank asked for an unknown user (fold their ratings in first).
    """
    t = _transport(comm, transport)
    raw = np.asarray(users, dtype=np.int64).reshape(-1)
    u = lookup(pf.user_ids, raw)
    error = None
    if np.any(u < 0):
        error = ArgumentError(f"unknown user {raw[u < 0][0]}: fold_in their ratings first")
    t.agree(error)
    best, scores = top_k_users(pf, u, k, exclude_rated, pf.mu, transport=t)
    scores = scores.astype(np.result_type(pf.user_block, pf.item_block), copy=False)   # as replicated factors give
    return [(pf.item_ids[b[np.isfinite(s)]], s[np.isfinite(s)]) for b, s in zip(best, scores)]


def evaluate(pf: PartitionedFactors, users, items, values, comm=None, *, k: int = 10, ranking=None,
             cold_start: str = "drop", implicit: bool = False, reproducible: bool = False, transport=None) -> dict:
    """Held-out RMSE/MAE and/or precision/recall/nDCG/MAP@k of test ratings held on this rank (collective).

    ``users``, ``items`` (raw ids) and ``values`` are this rank's test ratings; the result is
    what ``FactorModel.evaluate`` reports for the same factors and shards: ``rmse``, ``mae``,
    ``count`` (not for ``implicit`` models), ``cold_start_dropped`` and, with ``ranking``
    (default: ``implicit``), ``precision_at_k``, ``recall_at_k``, ``ndcg_at_k``, ``map_at_k`` and
    ``ranked_users``. ``cold_start`` is the model's policy (``drop``, ``nan``, ``mean``);
    ``reproducible`` (or ``MPIML_REPRODUCIBLE``) sums exactly and scores in a fixed order.
    """
    from mpiml.collectives.reproducible import Sum
    from mpiml.train.reproducible import requested

    t = _transport(comm, transport)
    error = None if cold_start in COLD_START else ArgumentError(
        f"cold_start must be one of {list(COLD_START)}, got {cold_start!r}")
    t.agree(error)
    ranking = implicit if ranking is None else ranking
    exact = requested(reproducible)
    users, items = np.asarray(users, dtype=np.int64).reshape(-1), np.asarray(items, dtype=np.int64).reshape(-1)
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    u, i = lookup(pf.user_ids, users), lookup(pf.item_ids, items)
    pred = predict_pairs(pf, u, i, transport=t)
    if cold_start == "mean":
        pred[(u < 0) | (i < 0)] = pf.mu
    cold = ~np.isfinite(pred) if cold_start == "drop" else np.zeros(pred.size, bool)
    pred, truth = pred[~cold], values[~cold]
    if not exact:
        sums = t.sum(np.concatenate([error_sums(pred, truth), [cold.sum()]]))
    else:
        err = pred - truth
        counts = t.sum([err.size, cold.sum()])
        terms = Sum(2, max(int(counts[0]), 1)).add_rows(np.stack([err * err, np.abs(err)], axis=1))
        sums = np.concatenate([t.exact(terms), counts])
    result = {} if implicit else rmse_mae(sums[:3])
    result["cold_start_dropped"] = int(sums[3]) if cold_start == "drop" else 0
    if ranking:
        result.update(_ranking(pf, u, i, values, k, exact, t))
    return result


def _ranking(pf, u, i, values, k, exact, t) -> dict:
    """The ranking metrics of ``FactorModel._ranking``: users grouped on rank ``u % p``, batches of 512."""
    from mpiml.collectives.reproducible import Sum

    keep = (u >= 0) & (i >= 0) & (values > 0)
    u, i = u[keep], i[keep]
    order, cuts = _groups(u % t.size, t.size)
    pairs = np.concatenate(t.alltoallv([np.stack([u, i], axis=1)[order[cuts[d]:cuts[d + 1]]]
                                        for d in range(t.size)]))
    u, i = pairs[:, 0], pairs[:, 1]
    order = np.lexsort((i, u))
    u, i = u[order], i[order]
    users, starts = np.unique(u, return_index=True)
    relevant = np.split(i, starts[1:]) if users.size else []
    recommended, _ = top_k_users(pf, users, k, True, 0.0, exact, transport=t)
    total = np.zeros(5)
    terms = Sum(5, max(pf.n_users, 1)) if exact else None
    for lo in range(0, users.size, BATCH):
        liked = [set(r.tolist()) for r in relevant[lo:lo + BATCH]]
        if terms is None:
            total += ranking_sums(recommended[lo:lo + BATCH], liked, k)
        else:
            terms.add_rows(ranking_rows(recommended[lo:lo + BATCH], liked, k))
    return ranking_means(t.sum(total) if terms is None else t.exact(terms), k)


def item_gram(pf: PartitionedFactors, comm=None, transport=None) -> np.ndarray:
    """``Q.T @ Q`` of all item rows: the sum over ranks of each block's Gram matrix (collective)."""
    t = _transport(comm, transport)
    block = pf.item_block.astype(np.float64)
    return t.sum((block.T @ block).reshape(-1)).reshape(pf.width, pf.width)


def als_solver(mu: float, reg: float, layout: als.Layout, weighted: bool = True):
    """``solve(rows, item_rows)`` of an explicit ALS fold-in: the users' half-step of :mod:`mpiml.mf.als`.

    ``FactorModel.fold_in`` of ALS/DSGD: the user row starts at 0 (its constant column at 1
    with biases) and is solved against the item rows (``weighted`` as there: always True).
    """
    def solve(rows: Rows, item_rows: np.ndarray) -> np.ndarray:
        own = np.zeros((1, layout.width))
        if layout.biases:
            own[0, layout.fixed("users")] = 1.0
        return als.half_step(rows, own, item_rows, mu, reg, layout, "users", weighted)[0]

    return solve


def ials_solver(gram: np.ndarray, reg: float, alpha: float):
    """``solve(rows, item_rows)`` of an implicit-ALS fold-in (Cholesky), given :func:`item_gram`."""
    def solve(rows: Rows, item_rows: np.ndarray) -> np.ndarray:
        return ials.ials_rows(rows, item_rows, gram, reg, alpha, "cholesky")[0]

    return solve


def solver_for(model, pf: PartitionedFactors, comm=None, transport=None):
    """The ``solve`` of :func:`fold_in` that ``model`` (a fitted ``FactorModel``'s class and parameters) uses.

    ALS and DSGD: :func:`als_solver`; implicit ALS: :func:`ials_solver` with :func:`item_gram`
    (collective then: every rank calls).
    """
    if model.implicit:
        return ials_solver(item_gram(pf, comm, transport), model.reg_, model._params.alpha)
    return als_solver(pf.mu, model.reg_, model._layout)


def fold_in(pf: PartitionedFactors, items, ratings, solve, comm=None, transport=None) -> np.ndarray:
    """Factors of a new user from their ratings, the item factors held fixed (collective).

    Each rank passes its own new user's raw item ids and ratings (possibly none); unknown
    items are ignored. The rated items' rows are fetched from their owners and ``solve(rows,
    item_rows)`` (:func:`als_solver`, :func:`ials_solver`) gets the user's ratings as one CSR
    row whose columns index ``item_rows`` (ascending, as the global indices they stand for,
    so the arithmetic is that of ``FactorModel.fold_in``).
    """
    t = _transport(comm, transport)
    i = lookup(pf.item_ids, np.asarray(items, dtype=np.int64).reshape(-1))
    values = np.asarray(ratings, dtype=np.float64).reshape(-1)
    error = None if values.size == i.size else ArgumentError(
        f"items and ratings differ in length: {i.size} and {values.size}")
    t.agree(error)
    values, i = values[i >= 0], i[i >= 0]
    item_rows, inverse = fetch_rows(t, pf.item_bounds, pf.item_block, i)
    return solve(build_rows(0, 1, np.zeros(values.size, np.int64), inverse, values), item_rows)


def gather_full(pf: PartitionedFactors, comm=None) -> dict:
    """The replicated arrays of ``FactorModel`` (``P``, ``Q``, ``rated_indptr``, ``rated_indices``) on every rank.

    Collective; for converting to a replicated model when the whole model fits in one rank.
    """
    comm = private_comm(resolve_comm(comm))
    parts = comm.allgather((pf.user_block, pf.item_block, np.diff(pf.rated_indptr), pf.rated_indices))
    counts = np.concatenate([part[2] for part in parts])
    return {"P": np.concatenate([part[0] for part in parts]), "Q": np.concatenate([part[1] for part in parts]),
            "rated_indptr": np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
            "rated_indices": np.concatenate([part[3] for part in parts]).astype(np.int64)}


def add_users(pf: PartitionedFactors, users, rows, rated=None, comm=None, transport=None) -> PartitionedFactors:
    """``pf`` with new users added, as ``FactorModel.fold_in(..., user=...)`` adds one (collective).

    Each rank passes its own new raw ``users`` (possibly none), their factor ``rows`` (from
    :func:`fold_in`) and, per user, the raw ids of the items they rated (unknown ones are left
    out, as there). The ids stay sorted: a new user takes its sorted place, so the global
    indices of the users after it grow; the users already there stay on their ranks, and a new
    one goes to the rank whose block its place falls in (at a block boundary, the later block).

    Raises
    ------
    ArgumentError
        On every rank, if any new id is already in the model or given twice.
    """
    t = _transport(comm, transport)
    users = np.asarray(users, dtype=np.int64).reshape(-1)
    rows = np.asarray(rows, dtype=pf.user_block.dtype).reshape(users.size, pf.width)
    rated = [np.zeros(0, np.int64)] * users.size if rated is None else list(rated)
    error = None
    if len(rated) != users.size:
        error = ArgumentError(f"{users.size} users but {len(rated)} lists of rated items")
    t.agree(error)
    new = np.sort(t.allgather(users))
    clash = (lookup(pf.user_ids, new) >= 0) | np.r_[np.diff(new) == 0, False]
    # the same on every rank (from gathered ids): no agreement needed
    if clash.any():
        raise ArgumentError(f"user {new[clash][0]} is already in the model (or added twice)", collective=True)
    places = np.searchsorted(pf.user_ids, new)   # where each goes among the old ids
    inner = pf.user_bounds[1:-1]
    bounds = np.concatenate([[0], inner + np.searchsorted(places, inner, side="left"), [pf.n_users + new.size]])
    at = lookup(new, users)
    index = at + places[at]                      # the new global index of this rank's new users
    lists = [np.sort(found[found >= 0]) for found in (lookup(pf.item_ids, r) for r in rated)]
    counts = np.array([r.size for r in lists], dtype=np.int64)
    order, cuts = _groups(partition.owner(bounds, index), t.size)
    flat = np.concatenate([np.zeros(0, np.int64)] + [lists[j] for j in order])
    starts = np.concatenate([[0], np.cumsum(counts[order])]).astype(np.int64)
    got_rows = t.alltoallv([rows[order[cuts[d]:cuts[d + 1]]] for d in range(t.size)])
    got_ints = t.alltoallv([np.concatenate([index[order[cuts[d]:cuts[d + 1]]], counts[order[cuts[d]:cuts[d + 1]]],
                                            flat[starts[cuts[d]]:starts[cuts[d + 1]]]]) for d in range(t.size)])
    # this rank's block: its users (shifted past the new ones before them) and the new users that land in it
    ulo, uhi = pf.user_range
    old_index = np.arange(ulo, uhi) + np.searchsorted(places, np.arange(ulo, uhi), side="right")
    sizes = [part.shape[0] for part in got_rows]
    new_index = np.concatenate([np.zeros(0, np.int64)] + [part[:n] for part, n in zip(got_ints, sizes)])
    new_counts = np.concatenate([np.zeros(0, np.int64)] + [part[n:2 * n] for part, n in zip(got_ints, sizes)])
    new_rated = np.concatenate([np.zeros(0, np.int64)] + [part[2 * n:] for part, n in zip(got_ints, sizes)])
    every = np.concatenate([old_index, new_index])
    place = np.argsort(every, kind="stable")
    block = np.concatenate([pf.user_block, *got_rows])[place]
    all_counts = np.concatenate([np.diff(pf.rated_indptr), new_counts])[place]
    starts = np.concatenate([pf.rated_indptr[:-1], pf.rated_indices.size + np.cumsum(new_counts) - new_counts])
    indices = _csr_take(starts, np.concatenate([np.diff(pf.rated_indptr), new_counts]), place,
                        np.concatenate([pf.rated_indices, new_rated]).astype(np.int64))
    return PartitionedFactors(bounds, pf.item_bounds, block, pf.item_block, np.union1d(pf.user_ids, new),
                              pf.item_ids, pf.mu, np.concatenate([[0], np.cumsum(all_counts)]).astype(np.int64),
                              indices, pf.rank, pf.size)
