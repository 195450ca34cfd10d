"""Each rank loads only its own shard of a data set; problems are agreed on collectively.

Formats (by extension, or ``fmt=``): ``svmlight`` (``.svm``, ``.svmlight``, ``.libsvm``,
``.txt``), ``csv`` (``.csv``, ``.tsv``), ``npy`` (a 2-D array, label in a column,
memory-mapped so a rank reads only its rows) and ``npz`` (``X`` and ``y``, or a
``scipy.sparse.save_npz`` matrix plus ``y``). A directory of such files counts as their
concatenation in name order. Text is split by bytes (see :mod:`mpiml.data.text`),
arrays by rows; either way rank r holds a consecutive block of the global rows.

Every error is a :class:`~mpiml.errors.DataError` naming the file and line (for
``.npy``/``.npz``, the 1-based row), raised identically on every rank.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from mpiml.data import parsers, text
from mpiml.errors import DataError
from mpiml.runtime import partition
from mpiml.runtime.agree import raise_if_any
from mpiml.runtime.comm import private_comm

FORMATS = {".svm": "svmlight", ".svmlight": "svmlight", ".libsvm": "svmlight", ".txt": "svmlight",
           ".csv": "csv", ".tsv": "csv", ".npy": "npy", ".npz": "npz"}


@dataclass
class Shard:
    """This rank's rows: ``X`` (dense or CSR), raw labels ``y``, and where each row came from."""

    X: object
    y: np.ndarray
    files: list = field(default_factory=list)
    row_file: np.ndarray | None = None   # index into ``files`` of each row
    row_line: np.ndarray | None = None   # 1-based line (or row) of each row in its file
    zero_based: bool | None = None       # svmlight: the index base read (None: not svmlight)

    @property
    def n_rows(self) -> int:
        return self.X.shape[0]

    def where(self, row: int) -> tuple[str | None, int | None]:
        """``(file, line)`` of local row ``row``."""
        if self.row_file is None:
            return None, None
        return self.files[self.row_file[row]], int(self.row_line[row])

    def subset(self, rows) -> "Shard":
        rf = None if self.row_file is None else self.row_file[rows]
        rl = None if self.row_line is None else self.row_line[rows]
        return Shard(self.X[rows], self.y[rows], self.files, rf, rl, self.zero_based)


def detect_format(path) -> str:
    files = text.input_files(path)
    kinds = {FORMATS.get(f.suffix.lower()) for f in files}
    if len(kinds) != 1 or None in kinds:
        raise DataError(f"cannot tell the format from the file names ({', '.join(sorted(f.suffix for f in files))}); "
                        f"pass a format ({', '.join(sorted(set(FORMATS.values())))})", str(path))
    return kinds.pop()


def read_shard(path, fmt: str | None = None, comm=None, n_features: int | None = None,
               label_column: int | str = 0, delimiter: str | None = None, allow_empty: bool = False,
               zero_based: bool | str = "auto") -> Shard:
    """Read this rank's shard of ``path`` (a file or a directory of files).

    Parameters
    ----------
    path : str or Path
    fmt : str, optional
        ``svmlight``, ``csv``, ``npy`` or ``npz``; default from the file extension.
    comm : mpi4py.MPI.Intracomm, optional
        The ranks sharing the data (default COMM_WORLD).
    n_features : int, optional
        svmlight: the feature count (default: the largest index seen on any rank).
    label_column : int or str
        csv/npy: the column holding the label (the others are features); csv: also the
        column's name in the header line.
    delimiter : str, optional
        csv: the field separator (default ``,``; tab for ``.tsv``).
    allow_empty : bool
        Accept ranks with no rows (e.g. a small held-out set); else that is an error.
    zero_based : bool or "auto"
        svmlight: whether feature indices start at 0; ``"auto"`` (as scikit-learn's
        loader): zero-based if any index 0 appears on any rank. Read a held-out file with
        the training file's ``Shard.zero_based`` so both agree.

    Returns
    -------
    Shard
        The same feature count on every rank.
    """
    comm_ = private_comm(comm)
    error, shard = None, None
    try:
        fmt = fmt or detect_format(path)
        files = text.input_files(path)
    except DataError as exc:
        error = exc
    raise_if_any(error, comm)
    if fmt == "csv" and delimiter is None:
        delimiter = "\t" if files[0].suffix.lower() == ".tsv" else ","
    if not isinstance(label_column, (int, np.integer)) and fmt != "svmlight":
        error = None
        try:
            label_column = _column_index(files[0], fmt, delimiter, str(label_column))
        except DataError as exc:
            error = exc
        raise_if_any(error, comm)
    if fmt == "svmlight":
        shard = _read_svmlight(files, comm, n_features, zero_based)
    elif fmt == "csv":
        shard = _read_delimited(files, comm, delimiter, label_column)
    elif fmt in ("npy", "npz"):
        shard = _read_arrays(files, comm, fmt, label_column)
    else:
        raise_if_any(DataError(f"unknown format {fmt!r}", str(path)), comm)
    counts = comm_.allgather(shard.n_rows)
    empty = [r for r, c in enumerate(counts) if c == 0]
    if empty and not allow_empty:
        raise_if_any(DataError(f"{sum(counts)} rows cannot fill {len(counts)} ranks: rank {empty[0]} got no "
                               f"rows; use fewer ranks or more data", str(path)), comm)
    return shard


def _parse_parts(files, comm, parse):
    """This rank's lines of ``files``, each part parsed by ``parse(part)``; the first problem of
    the lowest rank becomes a DataError (file, global line) on every rank."""
    comm_ = private_comm(comm)
    parts = text.local_parts(files, comm_.Get_rank(), comm_.Get_size())
    text.number_lines(parts, comm)
    parsed = [parse(p) for p in parts]
    error = next((DataError(rows.error[1], part.path, part.first_line + rows.error[0] + 1)
                  for part, rows in zip(parts, parsed) if rows.error is not None), None)
    raise_if_any(error, comm)
    return parts, parsed


def _column_index(path: Path, fmt: str, delimiter: str, name: str) -> int:
    """The position of column ``name`` in the header line of CSV file ``path``."""
    if name.strip().lstrip("-").isdigit():
        return int(name)
    if fmt != "csv":
        raise DataError(f"a label column name ({name!r}) needs a CSV file with a header line", str(path))
    with open(path, "rb") as handle:
        header = handle.readline().decode("utf-8", "replace").rstrip("\r\n")
    names = [field.strip().strip('"').strip("'") for field in header.split(delimiter)]
    if name not in names:
        raise DataError(f"no column {name!r} in the header line (columns: {', '.join(names)})", str(path), 1)
    return names.index(name)


def _read_svmlight(files, comm, n_features, zero_based="auto"):
    comm_ = private_comm(comm)
    parts, parsed = _parse_parts(files, comm, lambda p: parsers.svmlight_rows(p.data))
    low = min((int(r.indices.min()) for r in parsed if r.indices.size), default=None)
    high = max((int(r.indices.max()) for r in parsed if r.indices.size), default=-1)
    lows = [v for v in comm_.allgather(low) if v is not None]
    if zero_based == "auto":
        zero_based = bool(lows) and min(lows) == 0
    shift = 0 if zero_based else 1
    width = max(comm_.allgather(high)) + 1 - shift
    error = None
    if not zero_based and low == 0:
        for part, rows in zip(parts, parsed):
            zeros = np.flatnonzero(rows.indices == 0)
            if zeros.size:
                row = int(np.searchsorted(rows.indptr, zeros[0], "right")) - 1
                error = DataError("feature index 0 in one-based data (set by --zero-based, or by the training "
                                  "file, which has no index 0): pass --zero-based true if indices start at 0",
                                  part.path, part.first_line + int(rows.lines[row]) + 1)
                break
    raise_if_any(error, comm)
    if n_features is not None:
        for part, rows in zip(parts, parsed):
            over = np.flatnonzero(rows.indices - shift >= n_features)
            if over.size:
                row = int(np.searchsorted(rows.indptr, over[0], "right")) - 1
                error = DataError(f"feature index {int(rows.indices[over[0]])} is beyond n_features={n_features}",
                                  part.path, part.first_line + int(rows.lines[row]) + 1)
                break
        width = n_features
    raise_if_any(error, comm)
    blocks, row_file, row_line = [], [], []
    for part, rows in zip(parts, parsed):
        n = len(rows.labels)
        if shift:
            rows.indices -= shift  # the parser's own array
        blocks.append(sp.csr_matrix((rows.values, rows.indices, rows.indptr), shape=(n, max(width, 0))))
        row_file.append(np.full(n, part.index))
        row_line.append(part.first_line + rows.lines + 1)
    blocks = [b for b in blocks if b.shape[0]] or blocks[:1]
    X = (blocks[0] if len(blocks) == 1 else sp.vstack(blocks, format="csr")) if blocks else sp.csr_matrix((0, width))
    X.sum_duplicates()  # a linear check when indices already rise in every row (the usual file)
    y = np.concatenate([r.labels for r in parsed]) if parsed else np.zeros(0)
    return Shard(X, y, [str(f) for f in files], np.concatenate(row_file), np.concatenate(row_line), bool(zero_based))


def _read_delimited(files, comm, delimiter, label_column):
    comm_ = private_comm(comm)
    parts, parsed = _parse_parts(
        files, comm, lambda p: parsers.delimited_rows(p.data, delimiter, first_may_be_header=p.first_line == 0))
    # Every file, on every rank, must have the same number of columns.
    widths = [(rows.values.shape[1], part.path, part.first_line + int(rows.lines[0]) + 1)
              for part, rows in zip(parts, parsed) if len(rows.lines)]
    everyone = [w for ws in comm_.allgather(widths) for w in ws]
    error = None
    if everyone:
        expected = everyone[0][0]
        bad = next((w for w in everyone if w[0] != expected), None)
        if bad is not None:
            error = DataError(f"row has {bad[0]} columns, expected {expected} (as in {everyone[0][1]} "
                              f"line {everyone[0][2]})", bad[1], bad[2])
        elif not 0 <= label_column < expected or expected < 2:
            error = DataError(f"label column {label_column} needs at least 2 columns and lies outside the "
                              f"{expected} there are", everyone[0][1])
    raise_if_any(error, comm)
    width = everyone[0][0] if everyone else 0
    values = np.concatenate([r.values for r in parsed if len(r.lines)] or [np.zeros((0, width))])
    row_file = np.concatenate([np.full(len(r.lines), p.index) for p, r in zip(parts, parsed)])
    row_line = np.concatenate([p.first_line + r.lines + 1 for p, r in zip(parts, parsed)])
    y = values[:, label_column].copy()
    X = np.ascontiguousarray(np.delete(values, label_column, axis=1))
    return Shard(X, y, [str(f) for f in files], row_file, row_line)


def _array_shape(path: Path, fmt: str, label_column: int) -> tuple[int, int]:
    """``(rows, features)`` of one array file, read from its header (npy) or small arrays (npz)."""
    if fmt == "npy":
        shape = np.load(path, mmap_mode="r", allow_pickle=False).shape
        if len(shape) != 2 or not 0 <= label_column < shape[1] or shape[1] < 2:
            raise DataError(f"npy needs a 2-D array with the label in column {label_column}, got shape {shape}",
                            str(path))
        return int(shape[0]), int(shape[1]) - 1
    with np.load(path, allow_pickle=False) as archive:
        if "y" not in archive.files:
            raise DataError("npz needs an array 'y' of labels (and 'X', or a scipy.sparse matrix)", str(path))
        if "X" in archive.files:
            width = archive["X"].shape[1]
        elif "shape" in archive.files:
            width = int(archive["shape"][1])
        else:
            raise DataError("npz needs 'X' and 'y', or a scipy.sparse matrix and 'y'", str(path))
        return int(archive["y"].shape[0]), int(width)


def _array_block(path: Path, fmt: str, lo: int, hi: int, label_column: int):
    if fmt == "npy":
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
        block = np.asarray(arr[lo:hi], dtype=np.float64)
        return np.delete(block, label_column, axis=1), block[:, label_column].copy()
    with np.load(path, allow_pickle=False) as archive:
        y = np.asarray(archive["y"][lo:hi], dtype=np.float64)
        if "X" in archive.files:
            return np.asarray(archive["X"][lo:hi], dtype=np.float64), y
        if {"data", "indices", "indptr", "shape"} <= set(archive.files):
            matrix = sp.load_npz(path).tocsr()
            return matrix[lo:hi].astype(np.float64), y
    raise DataError("npz needs 'X' and 'y', or a scipy.sparse matrix and 'y'", str(path))


def _read_arrays(files, comm, fmt, label_column):
    comm_ = private_comm(comm)
    error, sizes = None, []
    try:
        shapes = [_array_shape(f, fmt, label_column) for f in files]
        sizes = [rows for rows, _ in shapes]
        bad = next((f for f, (_, w) in zip(files, shapes) if w != shapes[0][1]), None)
        if bad is not None:
            error = DataError(f"files disagree on the feature count: {bad.name} has {shapes[files.index(bad)][1]} "
                              f"features, {files[0].name} has {shapes[0][1]}", str(bad))
    except DataError as exc:
        error = exc
    except (OSError, ValueError) as exc:
        error = DataError(f"cannot read: {exc}", str(files[0]))
    raise_if_any(error, comm)
    total, rank, size = sum(sizes), comm_.Get_rank(), comm_.Get_size()
    start, end = partition.contiguous_block(total, size, rank)
    blocks, row_file, row_line, base, error = [], [], [], 0, None
    try:
        for index, (f, n) in enumerate(zip(files, sizes)):
            lo, hi = max(start - base, 0), min(end - base, n)
            if lo < hi or (not blocks and index == len(files) - 1):
                X, y = _array_block(f, fmt, lo, max(hi, lo), label_column)
                blocks.append((X, y))
                row_file.append(np.full(len(y), index))
                row_line.append(np.arange(lo, lo + len(y)) + 1)
            base += n
    except (OSError, ValueError) as exc:
        error = DataError(f"cannot read: {exc}", str(files[0]))
    except DataError as exc:
        error = exc
    raise_if_any(error, comm)
    Xs = [b[0] for b in blocks]
    X = sp.vstack(Xs, format="csr") if any(sp.issparse(x) for x in Xs) else np.concatenate(Xs)
    y = np.concatenate([b[1] for b in blocks])
    shard = Shard(X, y, [str(f) for f in files], np.concatenate(row_file), np.concatenate(row_line))
    _check_finite(shard, comm)
    return shard


def _check_finite(shard: Shard, comm) -> None:
    """Binary arrays were not parsed line by line: check their values here."""
    X = shard.X
    data = X.data if sp.issparse(X) else X
    bad_rows = np.flatnonzero(~np.isfinite(shard.y))
    if data.size and not np.isfinite(data).all():
        if sp.issparse(X):
            rows = np.repeat(np.arange(X.shape[0]), np.diff(X.indptr))[~np.isfinite(X.data)]
        else:
            rows = np.flatnonzero(~np.isfinite(X).all(axis=1))
        bad_rows = np.union1d(bad_rows, rows)
    error = None
    if bad_rows.size:
        error = DataError("row holds NaN or inf", *shard.where(int(bad_rows[0])))
    raise_if_any(error, comm)
