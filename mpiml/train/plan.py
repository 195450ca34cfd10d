"""Which rows each update uses: reproducible from (seed, epoch) alone, for any rank count.

``sync``: one permutation of the *global* rows per epoch, drawn identically on every
rank; update ``s`` uses global positions ``[s B, (s+1) B)`` of it, and each rank
computes on the rows of that batch it holds. The global batches are therefore the same
at every p (and the same as a serial run), which is what makes ``sync`` equal serial.
Cost: an O(N) permutation per epoch on every rank.

``local``/``oneshot``: every rank permutes its own rows with its own stream and walks
through them cyclically, ``ceil(N / (p b))`` updates per epoch on every rank.

Full-batch work (evaluation) goes through row blocks of bounded size: :func:`row_blocks`,
:func:`row_block`.
"""

from __future__ import annotations

import math

import numpy as np

_SYNC_TAG, _LOCAL_TAG = 0x5EED0001, 0x5EED0002


def sync_plan(seed: int, epoch: int, n_total: int, offset: int, n_local: int, update_rows: int):
    """``(local_rows, bounds, positions)`` of this rank's rows in the epoch's global order.

    Update ``s`` uses ``local_rows[bounds[s]:bounds[s+1]]``; ``positions`` (same indexing)
    are their places in the epoch's permutation, which tell the micro-batch of each row.
    """
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), _SYNC_TAG, int(epoch)]))
    perm = rng.permutation(n_total)
    positions = np.flatnonzero((perm >= offset) & (perm < offset + n_local))
    steps = sync_steps(n_total, update_rows)
    bounds = np.searchsorted(positions // update_rows, np.arange(steps + 1))
    return perm[positions] - offset, bounds, positions


def sync_steps(n_total: int, update_rows: int) -> int:
    return math.ceil(n_total / update_rows)


def local_steps(n_total: int, size: int, update_rows: int) -> int:
    return max(math.ceil(n_total / (size * update_rows)), 1)


def local_order(seed: int, epoch: int, rank: int, size: int, n_local: int) -> np.ndarray:
    """This rank's permutation of its own rows for ``epoch``."""
    ss = np.random.SeedSequence([int(seed), _LOCAL_TAG, int(epoch), int(size)]).spawn(size)[rank]
    return np.random.default_rng(ss).permutation(n_local)


def local_rows(order: np.ndarray, step: int, update_rows: int) -> np.ndarray:
    """Rows of update ``step``, wrapping around the shard."""
    return order[(step * update_rows + np.arange(update_rows)) % len(order)]


def row_block(X, lo: int, hi: int):
    """Rows ``lo:hi`` of ``X``: ``X`` itself when that is all of it (slicing a CSR matrix copies it)."""
    if lo <= 0 and hi >= X.shape[0]:
        return X
    return X[lo:hi]


def row_blocks(n: int, rows: int) -> list:
    """``[(lo, hi), ...]`` covering ``n`` rows ``rows`` at a time (one empty block for no rows)."""
    rows = max(int(rows), 1)
    return [(lo, min(lo + rows, n)) for lo in range(0, n, rows)] or [(0, 0)]
