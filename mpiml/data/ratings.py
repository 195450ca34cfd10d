"""Ratings data: readers for MovieLens and generic layouts, id maps and seeded splits.

Every reader is collective: each rank reads its own part (a byte range of a text file,
a slice of the entries of an ``.npz`` or MatrixMarket file) and returns a
:class:`RatingsShard` with raw ids. Errors are decided collectively, so a malformed
line raises the same :class:`~mpiml.errors.DataError`, naming file and line, on
every rank. Raw ids become contiguous indices with :func:`global_ids` and :func:`lookup`,
which give the same map on every rank whatever the number of ranks.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mpiml.data import arrays, parsers, text
from mpiml.errors import ArgumentError, DataError
from mpiml.runtime import partition
from mpiml.runtime.agree import raise_if_any
from mpiml.runtime.comm import private_comm, resolve_comm

# Ids above this are refused as corrupt (Spark ALS keeps ids in a 32-bit int, too).
MAX_ID = 2**31 - 1
FORMATS = ("auto", "udata", "dat", "csv", "tsv", "whitespace", "mtx", "npz")
_DELIMITERS = {"udata": "\t", "dat": "::", "csv": ",", "tsv": "\t", "whitespace": None}
COMMENTS = b"#%"
ID = re.compile(rb"[0-9]+")
NEGATIVE_ID = re.compile(rb"-[0-9]+")


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


def read_ratings(path, fmt: str = "auto", comm=None, max_id: int = MAX_ID, header: str = "auto") -> RatingsShard:
    """Read this rank's part of a ratings file (collective).

    Parameters
    ----------
    path : str or Path
        ``u.data`` (tab), ``ratings.dat`` (``::``), ``ratings.csv`` (comma, header), any
        ``user,item,rating[,time]`` CSV/TSV/whitespace text, a MatrixMarket ``.mtx``
        file (row = user, column = item, both 1-based as written) or an ``.npz`` with
        ``users``, ``items``, ``ratings`` (or ``row``, ``col``, ``data``) arrays.
    fmt : str
        One of ``FORMATS``; ``"auto"`` decides by suffix, then by the first line that is not
        blank or a comment (``::``, tab, comma, else whitespace).
    comm : mpi4py.MPI.Intracomm, optional
    max_id : int
        Ids above this are reported as errors.
    header : {"auto", "yes", "no"}
        Text: whether that first line is a header; ``"auto"``: when every field of it is a
        name (:func:`mpiml.data.text.is_header`).

    Raises
    ------
    DataError
        On every rank, naming the file and the first bad line: missing or empty file,
        a line with another number of fields than the first, ids that are not plain
        decimal integers (``1_0``, ``1.5``, ``+1``), negative or huge ids, non-numeric or
        non-finite ratings, control characters.
    """
    comm = resolve_comm(comm)
    if fmt not in FORMATS:
        raise ArgumentError(f"unknown ratings format {fmt!r}; expected one of {list(FORMATS)}")
    if header not in ("auto", "yes", "no"):
        raise ArgumentError(f"header must be auto, yes or no, not {header!r}")
    path = str(path)
    shard, error = None, None
    kind = fmt if fmt != "auto" else _format_by_suffix(path)
    try:
        if not os.path.isfile(path):
            raise DataError("no such file", path)
        if kind == "npz":
            shard = _read_npz(path, comm.Get_rank(), comm.Get_size(), max_id)
        elif kind == "mtx":
            shard = _read_mtx(path, comm.Get_rank(), comm.Get_size(), max_id)
    except DataError as exc:
        error = exc
    except arrays.READ_ERRORS as exc:
        error = DataError(f"cannot read ({type(exc).__name__}: {exc})", path)
    text.first_error([(0, error)], comm)
    if shard is None:
        shard = _read_text(path, fmt, comm, max_id, header)
    total = private_comm(comm).allreduce(len(shard))
    if total == 0:
        text.first_error([(0, DataError("no ratings in file", path))], comm)
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
        if ids.dtype.kind == "u" and ids.size and int(ids.max()) > 2**62:
            j = int(np.argmax(ids > 2**62))
            raise DataError(f"entry: {name} id {ids[j]} is too large", path, first_line + j)
        return ids.astype(np.int64)
    if ids.dtype.kind == "f":
        bad = np.flatnonzero(~np.isfinite(ids) | (ids != np.round(ids)) | (np.abs(ids) > 2**62))
        if bad.size:
            j = int(bad[0])
            raise DataError(f"entry: {name} id {ids[j]} is not an integer", path, first_line + j)
        return ids.astype(np.int64)
    raise DataError(f"{name} ids have dtype {ids.dtype}; expected integers", path)


def _read_npz(path, rank, size, max_id) -> RatingsShard:
    members = arrays.npz_members(path)
    for names in (("users", "items", "ratings"), ("row", "col", "data")):
        if all(n in members for n in names):
            break
    else:
        raise DataError(f"npz needs arrays users, items, ratings (or row, col, data); has {sorted(members)}", path)
    arrays.used(members, names)
    shapes = [members[n].shape for n in names]
    if any(len(shape) != 1 for shape in shapes) or len(set(shapes)) != 1:
        raise DataError(f"arrays {', '.join(names)} must be 1-D of one length; shapes {shapes}", path)
    for name, kinds in zip(names, ("iuf", "iuf", "biuf")):
        if members[name].dtype.kind not in kinds:
            raise DataError(f"array {name!r} has dtype {members[name].dtype}; expected "
                            f"{'integers' if kinds == 'iuf' else 'real numbers'}", path)
    columns = [arrays.load_arrays(path, names)[n] for n in names]
    part = _rank_slice(columns[0].size, rank, size)
    first = part.start + 1
    users = _integral_ids(path, "user", columns[0][part], first)
    items = _integral_ids(path, "item", columns[1][part], first)
    values = columns[2][part].astype(np.float64)
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
    """The whole lines that start inside this rank's equal share of the file's bytes (normalized)."""
    start, end = text.byte_range(os.path.getsize(path), rank, size)
    return text.read_line_range(path, start, end)


def _split(line: bytes, delimiter: str | None) -> list[bytes]:
    """The fields of a line, each without surrounding blanks (runs of blanks when ``delimiter`` is None)."""
    if delimiter is None:
        return line.split()
    return [f.strip(b" \t") for f in line.split(delimiter.encode())]


def _sniff(path: str, fmt: str, header: str = "auto"):
    """``(delimiter, header line or None, fields per line)`` from the first line that is not blank or a
    comment (read by every rank itself, so all decide alike); None if the file has no such line."""
    first = text.first_content_line(path, COMMENTS)
    if first is None:
        return None
    line = first[1]
    if fmt in _DELIMITERS:
        delimiter = _DELIMITERS[fmt]
    elif b"::" in line:
        delimiter = "::"
    elif b"\t" in line:
        delimiter = "\t"
    elif b"," in line:
        delimiter = ","
    else:
        delimiter = None
    fields = _split(line, delimiter)
    named = header == "yes" or (header == "auto" and text.is_header(fields))
    return delimiter, (first[0] if named else None), len(fields), first[0] + 1


def _read_text(path: str, fmt: str, comm, max_id: int, header: str = "auto") -> RatingsShard:
    rank, size = comm.Get_rank(), comm.Get_size()
    error, data, sniffed = None, b"", None
    try:
        sniffed = _sniff(path, fmt, header)
        data = _byte_range(path, rank, size)
    except OSError as exc:
        error = DataError(f"cannot read: {exc}", path)
    raise_if_any(error, comm)
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    counts = private_comm(comm).allgather(len(lines))
    first_line = 1 + sum(counts[:rank])
    shard = RatingsShard.from_arrays([], [], [], source=path)
    if sniffed is not None:
        delimiter, header_line, width, first = sniffed
        try:
            control = text.control_problem(data)
            shard = _parse_lines(path, lines[:control[0]] if control else lines, first_line, delimiter,
                                 None if header_line is None else header_line + 1, width, max_id, first)
            if control:
                raise DataError(control[1], path, first_line + control[0])
        except DataError as exc:
            error = exc
    text.first_error([(0, error)], comm)
    return shard


def _parse_lines(path, lines, first_line, delimiter, header, width, max_id, first=None) -> RatingsShard:
    """Ratings of ``lines`` (file lines ``first_line``, ...); ``header``: the header's line number, if any."""
    n = len(lines)
    users = np.empty(n, dtype=np.int64)
    items = np.empty(n, dtype=np.int64)
    values = np.empty(n, dtype=np.float64)
    keys = np.empty(n, dtype=np.int64)
    kept = 0
    for offset, raw in enumerate(lines):
        number = first_line + offset
        if not text.is_content(raw, COMMENTS):
            continue
        if number == first and width < 3:
            raise DataError(f"expected user, item, rating[, time]; got {width} field(s) in the first line",
                            path, number)
        fields = _split(raw, delimiter)
        if len(fields) != width:
            raise DataError(f"expected {width} fields (user, item, rating[, time], as in the first line); got "
                            f"{len(fields)} field(s): {raw[:80].decode('utf-8', 'replace')!r}", path, number)
        if number == header:
            continue
        user = _parse_id(path, number, "user", fields[0], max_id)
        item = _parse_id(path, number, "item", fields[1], max_id)
        problem = parsers.number_problem(fields[2], "rating")
        if problem:
            raise DataError(problem.replace("not finite", "not a finite number"), path, number)
        users[kept], items[kept], values[kept], keys[kept] = user, item, parsers.number(fields[2]), number
        kept += 1
    return RatingsShard(users[:kept], items[:kept], values[:kept], keys[:kept], path)


def _parse_id(path, number, name, field: bytes, max_id) -> int:
    """A plain decimal id (digits only: not ``+1``, ``1_0``, ``1.0`` or ``1e3``)."""
    if not ID.fullmatch(field):
        if NEGATIVE_ID.fullmatch(field):
            raise DataError(f"{name} id {field.decode()} is negative", path, number)
        raise DataError(f"{name} id {parsers.show(field[:40])} is not an integer", path, number)
    value = int(field)
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
