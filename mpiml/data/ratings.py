"""Ratings data: readers for MovieLens and generic layouts, id maps and seeded splits.

Every reader is collective: each rank reads its own part (a byte range of a text file,
a slice of the entries of an ``.npz`` or MatrixMarket file) and returns a
:class:`RatingsShard` with raw ids. Errors are decided collectively, so a malformed
line raises the same :class:`~mpiml.errors.DataError`, naming file and line, on
every rank. Raw ids become contiguous indices with :func:`global_ids` and :func:`lookup`,
which give the same map on every rank whatever the number of ranks.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mpiml.data import text
from mpiml.errors import ArgumentError, DataError
from mpiml.runtime import partition
from mpiml.runtime.agree import raise_if_any
from mpiml.runtime.comm import private_comm, resolve_comm

# Ids above this are refused as corrupt (Spark ALS keeps ids in a 32-bit int, too).
MAX_ID = 2**31 - 1
FORMATS = ("auto", "udata", "dat", "csv", "tsv", "whitespace", "mtx", "npz")
_DELIMITERS = {"udata": "\t", "dat": "::", "csv": ",", "tsv": "\t", "whitespace": None}


@dataclass
class RatingsShard:
    """This rank's ratings: raw user and item ids, values, and a global position key.

    ``keys`` is the rating's position in the whole input (its line number for text
    files), the same whatever the number of ranks; seeded splits hash it.
    """

    users: np.ndarray
    items: np.ndarray
    values: np.ndarray
    keys: np.ndarray
    source: str = ""

    def __len__(self) -> int:
        return int(self.values.size)

    def subset(self, mask) -> "RatingsShard":
        """The ratings where ``mask`` is true."""
        return RatingsShard(self.users[mask], self.items[mask], self.values[mask], self.keys[mask], self.source)

    @classmethod
    def from_arrays(cls, users, items, values, keys=None, source="") -> "RatingsShard":
        """A shard from raw-id arrays (``keys`` default to positions 0..n-1)."""
        users = np.asarray(users, dtype=np.int64).reshape(-1)
        items = np.asarray(items, dtype=np.int64).reshape(-1)
        values = np.asarray(values, dtype=np.float64).reshape(-1)
        if not (users.size == items.size == values.size):
            raise ArgumentError(f"users, items and values differ in length: {users.size}, {items.size}, {values.size}")
        keys = np.arange(values.size, dtype=np.int64) if keys is None else np.asarray(keys, dtype=np.int64)
        return cls(users, items, values, keys, source)


def read_ratings(path, fmt: str = "auto", comm=None, max_id: int = MAX_ID) -> RatingsShard:
    """Read this rank's part of a ratings file (collective).

    Parameters
    ----------
    path : str or Path
        ``u.data`` (tab), ``ratings.dat`` (``::``), ``ratings.csv`` (comma, header), any
        ``user,item,rating[,time]`` CSV/TSV/whitespace text, a MatrixMarket ``.mtx``
        file (row = user, column = item, both 1-based as written) or an ``.npz`` with
        ``users``, ``items``, ``ratings`` (or ``row``, ``col``, ``data``) arrays.
    fmt : str
        One of ``FORMATS``; ``"auto"`` decides by suffix, then by the first line
        (``::``, tab, comma or whitespace; a non-numeric first field is a header).
    comm : mpi4py.MPI.Intracomm, optional
    max_id : int
        Ids above this are reported as errors.

    Raises
    ------
    DataError
        On every rank, naming the file and the first bad line: missing or empty file,
        too few fields, non-integer, negative or huge ids, non-numeric or non-finite ratings.
    """
    comm = resolve_comm(comm)
    if fmt not in FORMATS:
        raise ArgumentError(f"unknown ratings format {fmt!r}; expected one of {list(FORMATS)}")
    path = str(path)
    shard, error = None, None
    try:
        if not os.path.isfile(path):
            raise DataError("no such file", path)
        kind = fmt if fmt != "auto" else _format_by_suffix(path)
        if kind == "npz":
            shard = _read_npz(path, comm.Get_rank(), comm.Get_size(), max_id)
        elif kind == "mtx":
            shard = _read_mtx(path, comm.Get_rank(), comm.Get_size(), max_id)
    except DataError as exc:
        error = exc
    except (OSError, ValueError) as exc:
        error = DataError(f"cannot read: {exc}", path)
    raise_if_any(error, comm)
    if shard is None:
        shard = _read_text(path, fmt, comm, max_id)
    total = private_comm(comm).allreduce(len(shard))
    if total == 0:
        raise_if_any(DataError("no ratings in file", path), comm)
    return shard


def _format_by_suffix(path: str) -> str:
    suffix = Path(path).suffix.lower()
    if suffix == ".npz":
        return "npz"
    if suffix in (".mtx", ".mm"):
        return "mtx"
    return "auto"


def _rank_slice(n: int, rank: int, size: int) -> slice:
    return slice(*partition.contiguous_block(n, size, rank))


def _check_columns(path, users, items, values, max_id, first_line=1, what="entry"):
    """Raise DataError at the first entry with a bad id or rating."""
    bad_user = (users < 0) | (users > max_id)
    bad_item = (items < 0) | (items > max_id)
    bad_value = ~np.isfinite(values)
    bad = np.flatnonzero(bad_user | bad_item | bad_value)
    if bad.size == 0:
        return
    j = int(bad[0])
    if bad_user[j] or bad_item[j]:
        name, value = ("user", users[j]) if bad_user[j] else ("item", items[j])
        problem = "negative" if value < 0 else f"above the limit {max_id}"
        raise DataError(f"{what}: {name} id {value} is {problem}", path, first_line + j)
    raise DataError(f"{what}: rating {values[j]} is not a finite number", path, first_line + j)


def _integral_ids(path, name, ids, first_line):
    ids = np.asarray(ids)
    if ids.dtype.kind in "iu":
        return ids.astype(np.int64)
    if ids.dtype.kind == "f":
        bad = np.flatnonzero(~np.isfinite(ids) | (ids != np.round(ids)) | (np.abs(ids) > 2**62))
        if bad.size:
            j = int(bad[0])
            raise DataError(f"entry: {name} id {ids[j]} is not an integer", path, first_line + j)
        return ids.astype(np.int64)
    raise DataError(f"{name} ids have dtype {ids.dtype}; expected integers", path)


def _read_npz(path, rank, size, max_id) -> RatingsShard:
    from mpiml.runtime.files import load_npz

    arrays = load_npz(path)
    for names in (("users", "items", "ratings"), ("row", "col", "data")):
        if all(n in arrays for n in names):
            break
    else:
        raise DataError(f"npz needs arrays users, items, ratings (or row, col, data); has {sorted(arrays)}", path)
    columns = [np.asarray(arrays[n]).reshape(-1) for n in names]
    if len({c.size for c in columns}) != 1:
        raise DataError(f"arrays {names} differ in length: {[c.size for c in columns]}", path)
    part = _rank_slice(columns[0].size, rank, size)
    first = part.start + 1
    users = _integral_ids(path, "user", columns[0][part], first)
    items = _integral_ids(path, "item", columns[1][part], first)
    values = columns[2][part]
    if values.dtype.kind not in "iuf":
        raise DataError(f"ratings have dtype {values.dtype}; expected numbers", path)
    values = values.astype(np.float64)
    _check_columns(path, users, items, values, max_id, first)
    keys = np.arange(part.start, part.stop, dtype=np.int64)
    return RatingsShard(users, items, values, keys, path)


def _read_mtx(path, rank, size, max_id) -> RatingsShard:
    import scipy.io
    import scipy.sparse

    matrix = scipy.io.mmread(path)
    if not scipy.sparse.issparse(matrix):
        raise DataError("MatrixMarket file is dense (array); ratings need coordinate format", path)
    matrix = scipy.sparse.coo_matrix(matrix)
    part = _rank_slice(matrix.nnz, rank, size)
    users = matrix.row[part].astype(np.int64) + 1
    items = matrix.col[part].astype(np.int64) + 1
    values = np.asarray(matrix.data[part], dtype=np.float64)
    _check_columns(path, users, items, values, max_id, part.start + 1)
    return RatingsShard(users, items, values, np.arange(part.start, part.stop, dtype=np.int64), path)


def _byte_range(path: str, rank: int, size: int) -> bytes:
    """The whole lines that start inside this rank's equal share of the file's bytes."""
    start, end = text.byte_range(os.path.getsize(path), rank, size)
    return text.read_line_range(path, start, end)


def _sniff(path: str, fmt: str):
    """(delimiter, header) from the file's first line; every rank decides the same."""
    with open(path, "rb") as handle:
        first = handle.readline(1 << 16).decode("utf-8", errors="replace").strip()
    if fmt in _DELIMITERS:
        delimiter = _DELIMITERS[fmt]
    elif "::" in first:
        delimiter = "::"
    elif "\t" in first:
        delimiter = "\t"
    elif "," in first:
        delimiter = ","
    else:
        delimiter = None
    fields = first.split(delimiter) if first else [""]
    try:
        int(fields[0])
        header = False
    except ValueError:
        header = bool(first)
    return delimiter, header


def _read_text(path: str, fmt: str, comm, max_id: int) -> RatingsShard:
    rank, size = comm.Get_rank(), comm.Get_size()
    error, data = None, b""
    try:
        delimiter, header = _sniff(path, fmt)
        data = _byte_range(path, rank, size)
    except OSError as exc:
        error = DataError(f"cannot read: {exc}", path)
    raise_if_any(error, comm)
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    counts = private_comm(comm).allgather(len(lines))
    first_line = 1 + sum(counts[:rank])
    try:
        shard = _parse_lines(path, lines, first_line, delimiter, header, max_id)
    except DataError as exc:
        error, shard = exc, None
    raise_if_any(error, comm)
    return shard


def _parse_lines(path, lines, first_line, delimiter, header, max_id) -> RatingsShard:
    n = len(lines)
    users = np.empty(n, dtype=np.int64)
    items = np.empty(n, dtype=np.int64)
    values = np.empty(n, dtype=np.float64)
    keys = np.empty(n, dtype=np.int64)
    kept = 0
    for offset, raw in enumerate(lines):
        number = first_line + offset
        try:
            line = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise DataError("line is not UTF-8 text", path, number) from None
        if not line or line.startswith(("#", "%")) or (header and number == 1):
            continue
        fields = line.split(delimiter)
        if len(fields) < 3:
            raise DataError(f"expected user, item, rating[, time]; got {len(fields)} field(s): {line[:80]!r}",
                            path, number)
        user = _parse_id(path, number, "user", fields[0], max_id)
        item = _parse_id(path, number, "item", fields[1], max_id)
        try:
            value = float(fields[2])
        except ValueError:
            raise DataError(f"rating {fields[2].strip()[:40]!r} is not a number", path, number) from None
        if not math.isfinite(value):
            raise DataError(f"rating {fields[2].strip()!r} is not a finite number", path, number)
        users[kept], items[kept], values[kept], keys[kept] = user, item, value, number
        kept += 1
    return RatingsShard(users[:kept], items[:kept], values[:kept], keys[:kept], path)


def _parse_id(path, number, name, text, max_id) -> int:
    try:
        value = int(text)
    except ValueError:
        raise DataError(f"{name} id {text.strip()[:40]!r} is not an integer", path, number) from None
    if value < 0:
        raise DataError(f"{name} id {value} is negative", path, number)
    if value > max_id:
        raise DataError(f"{name} id {value} is above the limit {max_id}", path, number)
    return value


def global_ids(local_ids, comm=None) -> np.ndarray:
    """The sorted distinct ids over all ranks (collective; identical everywhere)."""
    local = np.unique(np.asarray(local_ids, dtype=np.int64))
    # The data layer sits below mpiml.collectives: the MPI library's own Allgatherv.
    comm = private_comm(comm)
    counts = comm.allgather(local.size)
    everything = np.empty(sum(counts), dtype=np.int64)
    comm.Allgatherv(local, [everything, counts])
    return np.unique(everything)


def lookup(sorted_ids: np.ndarray, raw) -> np.ndarray:
    """Indices of ``raw`` in ``sorted_ids``; -1 where an id is not there."""
    raw = np.asarray(raw, dtype=np.int64)
    if sorted_ids.size == 0:
        return np.full(raw.shape, -1, dtype=np.int64)
    index = np.searchsorted(sorted_ids, raw)
    clipped = np.minimum(index, sorted_ids.size - 1)
    return np.where(sorted_ids[clipped] == raw, clipped, -1).astype(np.int64)


def hash_uniform(keys, seed: int) -> np.ndarray:
    """A uniform [0, 1) number per key (splitmix64 of key and seed), independent of ranks."""
    z = np.asarray(keys, dtype=np.int64).astype(np.uint64)
    with np.errstate(over="ignore"):
        z = z + np.uint64(seed & (2**64 - 1)) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53


def split_fraction(shard: RatingsShard, fraction: float, seed: int = 0):
    """``(train, test)``: each rating goes to test with probability ``fraction``.

    The choice hashes the rating's position key with ``seed``, so the split is the same
    whatever the number of ranks and needs no communication.
    """
    if not 0.0 <= fraction < 1.0:
        raise ArgumentError(f"test fraction must be in [0, 1), got {fraction}")
    test = hash_uniform(shard.keys, seed) < fraction
    return shard.subset(~test), shard.subset(test)
