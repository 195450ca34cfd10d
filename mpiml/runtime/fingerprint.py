"""Fingerprints of a run: what decides its trajectory, so that a checkpoint resumes only the run that wrote it.

A fingerprint is a JSON-able dict ``{"command": ..., "settings": {name: value}, "data": {...}}``.
The data part is a content hash computed in parallel: every rank hashes its own rows (each
row with its global position, for training rows whose order matters) or its own ratings
(a sum over the set, whose order does not matter), and the 64-bit partial sums are added
up, so the hash is the same at every rank count and costs one pass over the data in
memory, no second read of the files. It is a check against mistakes (another file,
another ``--test-fraction``, another label column), not against an adversary.

:func:`differences` compares two fingerprints and :func:`check` turns the differences
into one :class:`~mpiml.errors.CheckpointError` naming every setting that differs.
"""

from __future__ import annotations

import numpy as np

from mpiml.errors import CheckpointError

_C1, _C2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31 = np.uint64(30), np.uint64(27), np.uint64(31)
_MASK = (1 << 64) - 1
_ROWS_PER_BLOCK = 1 << 16


def mix(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finalizer, elementwise on ``uint64`` (wrapping arithmetic)."""
    x = np.asarray(x, dtype=np.uint64)
    with np.errstate(over="ignore"):
        x = x ^ (x >> _S30)
        x = x * _C1
        x = x ^ (x >> _S27)
        x = x * _C2
        return x ^ (x >> _S31)


def _key(seed: int, index) -> np.ndarray:
    return mix(np.asarray(index, dtype=np.uint64) + np.uint64(seed))


def _bits(values) -> np.ndarray:
    """The float64 bit patterns of ``values`` (ints and floats alike; -0.0 taken as 0.0)."""
    values = np.asarray(values, dtype=np.float64) + 0.0
    return np.ascontiguousarray(values).view(np.uint64)


def _cells(bits: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """One hash per stored value and its column key; zeros hash to 0, so dense and sparse rows agree."""
    with np.errstate(over="ignore"):
        return mix(bits ^ keys) * (bits != 0)


def _row_sums(X) -> np.ndarray:
    """Per row, the wrapping sum of its cells' hashes (dense array or scipy sparse matrix)."""
    if hasattr(X, "tocsr"):
        X = X.tocsr()
        cells = _cells(_bits(X.data), _key(11, X.indices))
        with np.errstate(over="ignore"):
            running = np.concatenate([[np.uint64(0)], np.cumsum(cells, dtype=np.uint64)])
            return running[X.indptr[1:]] - running[X.indptr[:-1]]
    X = np.asarray(X)
    if X.ndim == 1:
        X = X[:, None]
    keys = _key(11, np.arange(X.shape[1]))
    out = np.empty(X.shape[0], dtype=np.uint64)
    step = max(1, _ROWS_PER_BLOCK // max(X.shape[1], 1))
    for lo in range(0, X.shape[0], step):
        with np.errstate(over="ignore"):
            out[lo:lo + step] = _cells(_bits(X[lo:lo + step]), keys[None, :]).sum(axis=1, dtype=np.uint64)
    return out


def _allgather(comm, value):
    if comm is None:
        return [value]
    from mpiml.runtime.comm import private_comm

    return private_comm(comm).allgather(value)


def rows_digest(X, y, comm=None) -> dict:
    """``{"rows", "features", "hash"}`` of the training rows of every rank (collective).

    Rank ``r`` holds the ``r``-th block of the global rows; each row is hashed with its
    global position, so the hash depends on the rows and their order, not on the split.
    """
    n = int(X.shape[0])
    counts = _allgather(comm, n)
    rank = 0 if comm is None else comm.Get_rank()
    offset = sum(counts[:rank])
    with np.errstate(over="ignore"):
        rows = _row_sums(X) + mix(_bits(y) ^ _key(13, 0)) + _key(17, np.arange(offset, offset + n))
        partial = int(mix(rows).sum(dtype=np.uint64))
    total = sum(_allgather(comm, partial)) & _MASK
    return {"rows": int(sum(counts)), "features": int(X.shape[1]), "hash": f"{total:016x}"}


def ratings_digest(users, items, values, comm=None) -> dict:
    """``{"ratings", "hash"}`` of the set of (user, item, value) triples of every rank (collective)."""
    with np.errstate(over="ignore"):
        terms = mix(mix(_bits(users) ^ _key(23, 0)) + mix(_bits(items) ^ _key(29, 0))
                    + mix(_bits(values) ^ _key(31, 0)))
        partial = int(terms.sum(dtype=np.uint64))
    gathered = _allgather(comm, (int(np.size(values)), partial))
    return {"ratings": sum(c for c, _ in gathered), "hash": f"{sum(h for _, h in gathered) & _MASK:016x}"}


_ORDER = ("rows", "ratings", "features", "users", "items", "hash")


def _text(value) -> str:
    if isinstance(value, dict):
        keys = sorted((k for k in value if k != "source"), key=lambda k: (_ORDER + (k,)).index(k))
        return "(" + ", ".join(f"{k} {_text(value[k])}" for k in keys) + ")"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def differences(saved: dict, mine: dict) -> list:
    """``[(name, saved value, this run's value)]`` of every setting (and the data) that differs."""
    out = []
    if saved.get("command") != mine.get("command"):
        out.append(("command", saved.get("command"), mine.get("command")))
    a, b = saved.get("settings") or {}, mine.get("settings") or {}
    for name in sorted(set(a) | set(b), key=lambda n: (list(b).index(n) if n in b else len(b), n)):
        if a.get(name, "(unset)") != b.get(name, "(unset)"):
            out.append((name, a.get(name, "(unset)"), b.get(name, "(unset)")))
    da, db = saved.get("data"), mine.get("data")
    if da is not None and db is not None:
        plain = {k: v for k, v in da.items() if k != "source"}, {k: v for k, v in db.items() if k != "source"}
        if plain[0] != plain[1]:
            out.append(("data", da, db))
    return out


def check(saved: dict | None, mine: dict, directory) -> None:
    """Raise :class:`CheckpointError` naming every difference between the checkpoint's fingerprint and this run's."""
    if not isinstance(saved, dict):
        raise CheckpointError(f"checkpoint in {directory} has no fingerprint of the run that wrote it (written by "
                              "an earlier mpiml?); start afresh with --overwrite or use another checkpoint directory")
    found = differences(saved, mine)
    if not found:
        return
    theirs = ", ".join(f"{name}={_describe(name, old)}" for name, old, _ in found)
    ours = ", ".join(f"{name}={_describe(name, new)}" for name, _, new in found)
    raise CheckpointError(f"checkpoint in {directory} was written with {theirs}, this run has {ours}; resume with "
                          "the same settings and data, or start afresh with --overwrite (or another checkpoint "
                          "directory)")


def _describe(name, value) -> str:
    if name == "data" and isinstance(value, dict):
        source = f"{value['source']} " if value.get("source") else ""
        return source + _text(value)
    return _text(value) if not isinstance(value, str) else repr(value) if value == "" else value
