"""Each rank loads only its own shard of a data set; problems are agreed on collectively.

Formats (by extension, or ``fmt=``): ``svmlight`` (``.svm``, ``.svmlight``, ``.libsvm``,
``.txt``), ``csv`` (``.csv``, ``.tsv``), ``npy`` (a 2-D array, label in a column,
memory-mapped so a rank reads only its rows) and ``npz`` (``X`` and ``y``, or a
``scipy.sparse.save_npz`` matrix plus ``y``). A directory of such files counts as their
concatenation in name order. Text is split by bytes (see :mod:`mpiml.data.text`),
arrays by rows; either way rank r holds a consecutive block of the global rows.

Every error is a :class:`~mpiml.errors.DataError` naming the file and line (for
``.npy``/``.npz``, the 1-based row), raised identically on every rank: the earliest
problem in the input (by file, then line), whatever the number of ranks. Nothing is
guessed: a CSV header is recognised only by :func:`mpiml.data.text.is_header` (or
``header="yes"``); a repeated svmlight index, a sparse index beyond the declared shape,
arrays that disagree in length, complex values, control characters and feature counts
that would not fit in memory (:mod:`mpiml.data.memory`) are errors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from mpiml.data import arrays, memory, parsers, text
from mpiml.errors import ArgumentError, DataError
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
               zero_based: bool | str = "auto", header: str = "auto") -> Shard:
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
        Accept ranks with no rows (e.g. a small held-out set); else rows are moved so that
        every rank has some, and fewer rows than ranks is an error.
    zero_based : bool or "auto"
        svmlight: whether feature indices start at 0; ``"auto"`` (as scikit-learn's
        loader): zero-based if any index 0 appears on any rank. Read a held-out file with
        the training file's ``Shard.zero_based`` so both agree.
    header : {"auto", "yes", "no"}
        csv: whether each file's first line that is not blank or a comment is a header:
        ``"auto"`` by the rule of :func:`mpiml.data.text.is_header` (every field a name).

    Returns
    -------
    Shard
        The same feature count on every rank; together the ranks hold the rows in file order.

    Raises
    ------
    DataError
        On every rank alike, naming the file and line of the first problem.
    """
    comm_ = private_comm(comm)
    error, shard = None, None
    if header not in ("auto", "yes", "no"):
        raise_if_any(ArgumentError(f"header must be auto, yes or no, not {header!r}"), comm)
    try:
        fmt = fmt or detect_format(path)
        files = text.input_files(path)
        if fmt not in ("svmlight", "csv", "npy", "npz"):
            raise DataError(f"unknown format {fmt!r}", str(path))
    except DataError as exc:
        error = exc
    raise_if_any(error, comm)
    if fmt == "csv" and delimiter is None:
        delimiter = "\t" if files[0].suffix.lower() == ".tsv" else ","
    if fmt == "svmlight":
        shard = _read_svmlight(files, comm, n_features, zero_based)
    elif fmt == "csv":
        shard = _read_delimited(files, comm, delimiter, label_column, header)
    else:
        shard = _read_arrays(files, comm, fmt, label_column)
    counts = comm_.allgather(shard.n_rows)
    if sum(counts) == 0:
        text.first_error([(0, DataError("no rows of data", str(path)))], comm)
    empty = [r for r, c in enumerate(counts) if c == 0]
    if empty and not allow_empty:
        if sum(counts) < len(counts):
            text.first_error([(0, DataError(f"{sum(counts)} rows cannot fill {len(counts)} ranks: rank {empty[0]} "
                                            f"got no rows; use fewer ranks or more data", str(path)))], comm)
        shard = rebalance(shard, counts, comm_)
    return shard


def rebalance(shard: Shard, counts, comm) -> Shard:
    """The same rows in the same order, moved so that rank r holds block r of an even split.

    Only needed when a few very long lines put every line into some ranks' byte ranges."""
    bounds = partition.contiguous(sum(counts), len(counts))
    offset = sum(counts[:comm.Get_rank()])
    pieces = []
    for dest in range(len(counts)):
        lo, hi = max(bounds[dest] - offset, 0), min(bounds[dest + 1] - offset, shard.n_rows)
        pieces.append(shard.subset(np.arange(lo, max(hi, lo))))
    got = [p for p in comm.alltoall(pieces)]
    X = sp.vstack([p.X for p in got], format="csr") if sp.issparse(shard.X) else np.concatenate([p.X for p in got])
    return Shard(X, np.concatenate([p.y for p in got]), shard.files, np.concatenate([p.row_file for p in got]),
                 np.concatenate([p.row_line for p in got]), shard.zero_based)


def _text_parts(files, comm):
    """This rank's lines of ``files``, numbered."""
    comm_ = private_comm(comm)
    parts = text.local_parts(files, comm_.Get_rank(), comm_.Get_size())
    text.number_lines(parts, comm)
    return parts


def _earliest(part, *problems) -> DataError | None:
    """The earliest of ``(0-based line in part, message)`` problems as a DataError (file line)."""
    problems = [p for p in problems if p is not None]
    if not problems:
        return None
    line, message = min(problems, key=lambda p: p[0])
    return DataError(message, part.path, part.first_line + int(line) + 1)


def _row_problem(rows, row, message):
    return None if row is None else (int(rows.lines[row]), message)


def _read_svmlight(files, comm, n_features, zero_based="auto"):
    comm_ = private_comm(comm)
    parts = _text_parts(files, comm)
    parsed = [parsers.svmlight_rows(p.data) for p in parts]
    errors = []
    for part, rows in zip(parts, parsed):
        dup = arrays.first_duplicate_row(rows.indptr, rows.indices)
        zero = None
        if zero_based is False and rows.indices.size and int(rows.indices.min()) == 0:
            zero = int(np.searchsorted(rows.indptr, np.flatnonzero(rows.indices == 0)[0], "right")) - 1
        errors.append((part.index, _earliest(
            part, text.control_problem(part.data), rows.error,
            _row_problem(rows, dup, parsers.SVMLIGHT + "a feature index appears twice in the row"),
            _row_problem(rows, zero, "feature index 0 in one-based data (--zero-based false): pass --zero-based "
                                     "true if indices start at 0"))))
    text.first_error(errors, comm)
    low = min((int(r.indices.min()) for r in parsed if r.indices.size), default=None)
    high = max((int(r.indices.max()) for r in parsed if r.indices.size), default=-1)
    everyone = comm_.allgather((low, high))
    lows = [v for v, _ in everyone if v is not None]
    if zero_based == "auto":
        zero_based = bool(lows) and min(lows) == 0
    elif zero_based is not True and zero_based is not False:
        raise_if_any(ArgumentError(f"zero_based must be True, False or 'auto', not {zero_based!r}"), comm)
    shift = 0 if zero_based else 1
    top = max(v for _, v in everyone)
    if n_features is not None:
        errors = []
        for part, rows in zip(parts, parsed):
            over = np.flatnonzero(rows.indices - shift >= n_features)
            if over.size:
                row = int(np.searchsorted(rows.indptr, over[0], "right")) - 1
                errors.append((part.index, DataError(
                    f"feature index {int(rows.indices[over[0]])} is beyond n_features={n_features}",
                    part.path, part.first_line + int(rows.lines[row]) + 1)))
                break
        text.first_error(errors, comm)
    width = n_features if n_features is not None else max(top + 1 - shift, 0)
    problem = memory.features_problem(width, memory.rank_budget(comm))
    if problem:
        errors = []
        for part, rows in zip(parts, parsed):  # name the line of the largest index
            at = np.flatnonzero(rows.indices == top) if n_features is None else []
            if len(at):
                row = int(np.searchsorted(rows.indptr, at[0], "right")) - 1
                errors.append((part.index, DataError(f"feature index {top}: {problem}", part.path,
                                                     part.first_line + int(rows.lines[row]) + 1)))
                break
        if n_features is not None:
            errors.append((0, DataError(f"n_features={n_features}: {problem}", parts[0].path)))
        text.first_error(errors, comm)
    blocks, row_file, row_line = [], [], []
    for part, rows in zip(parts, parsed):
        n = len(rows.labels)
        if shift:
            rows.indices -= shift  # the parser's own array
        blocks.append(sp.csr_matrix((rows.values, rows.indices, rows.indptr), shape=(n, width)))
        row_file.append(np.full(n, part.index))
        row_line.append(part.first_line + rows.lines + 1)
    blocks = [b for b in blocks if b.shape[0]] or blocks[:1]
    X = (blocks[0] if len(blocks) == 1 else sp.vstack(blocks, format="csr")) if blocks else sp.csr_matrix((0, width))
    X.has_sorted_indices = False
    X.sort_indices()  # no duplicates (refused above); a linear check when indices already rise
    y = np.concatenate([r.labels for r in parsed]) if parsed else np.zeros(0)
    return Shard(X, y, [str(f) for f in files], np.concatenate(row_file), np.concatenate(row_line), bool(zero_based))


def _fields(line: bytes, delimiter: str) -> list[bytes]:
    return [f.strip(b" \t") for f in line.split(delimiter.encode())]


def _read_delimited(files, comm, delimiter, label_column, header="auto"):
    error = None
    try:  # every rank reads each file's first line itself: the same header verdict everywhere
        firsts = [text.first_content_line(f) for f in files]
        headers = [None if first is None or header == "no" or
                   (header == "auto" and not text.is_header(_fields(first[1], delimiter))) else first[0]
                   for first in firsts]
        if not isinstance(label_column, (int, np.integer)):
            label_column = _column_index(files, firsts, headers, delimiter, str(label_column))
    except DataError as exc:
        error = exc
    except OSError as exc:
        error = DataError(f"cannot read: {exc}", str(files[0]))
    raise_if_any(error, comm)
    # The first line holding data or names, in the first file that has one, sets the width.
    width = next((len(_fields(first[1], delimiter)) for first in firsts if first is not None), 0)
    parts = _text_parts(files, comm)
    parsed = [parsers.delimited_rows(p.data, delimiter, header=p.holds(headers[p.index])) for p in parts]
    errors = []
    for part, rows in zip(parts, parsed):
        first_row = headers[part.index] - part.first_line if part.holds(headers[part.index]) else \
            (int(rows.lines[0]) if len(rows.lines) else None)
        count = rows.values.shape[1] if (len(rows.lines) or rows.header is not None) else None
        wrong = None
        if first_row is not None and count is not None and count != width:
            wrong = (first_row, f"row has {count} columns, expected {width} (as in the first line)")
        errors.append((part.index, _earliest(part, text.control_problem(part.data), rows.error, wrong)))
    text.first_error(errors, comm)
    if width and not (0 <= label_column < width and width >= 2):
        text.first_error([(0, DataError(f"label column {label_column} needs at least 2 columns and lies outside "
                                        f"the {width} there are", str(files[0])))], comm)
    values = np.concatenate([r.values for r in parsed if len(r.lines)] or [np.zeros((0, width))])
    row_file = np.concatenate([np.full(len(r.lines), p.index) for p, r in zip(parts, parsed)])
    row_line = np.concatenate([p.first_line + r.lines + 1 for p, r in zip(parts, parsed)])
    y = values[:, label_column].copy() if width else np.zeros(0)
    X = np.ascontiguousarray(np.delete(values, label_column, axis=1)) if width else np.zeros((0, 0))
    return Shard(X, y, [str(f) for f in files], row_file, row_line)


def _column_index(files, firsts, headers, delimiter: str, name: str) -> int:
    """The position of column ``name`` in the header line of the first CSV file."""
    if name.strip().lstrip("-").isdigit():
        return int(name)
    if headers[0] is None:
        raise DataError(f"a label column name ({name!r}) needs a header line, and the first line is no header "
                        f"(a header's fields all start with a letter, _ or a quote; or pass --header yes)",
                        str(files[0]))
    names = [f.decode("utf-8", "replace").strip('"').strip("'") for f in _fields(firsts[0][1], delimiter)]
    if name not in names:
        raise DataError(f"no column {name!r} in the header line (columns: {', '.join(names)})", str(files[0]),
                        firsts[0][0] + 1)
    return names.index(name)


SPARSE = ("data", "indices", "indptr", "shape")


@dataclass
class _Layout:
    """One array file as its headers declare it."""

    rows: int
    width: int
    kind: str          # "npy", "dense" or "sparse" (CSR or CSC)
    nbytes: int        # what loading it takes
    compressed: str = "csr"


def _layout(path: Path, fmt: str, label_column: int) -> _Layout:
    """Shapes and dtypes of one array file, checked from its headers (nothing large is read)."""
    where = str(path)
    if fmt == "npy":
        member = arrays.npy_member(path)
        arrays.real(member, "the array", path)
        if len(member.shape) != 2 or not 0 <= label_column < member.shape[1] or member.shape[1] < 2:
            raise DataError(f"npy needs a 2-D array with the label in column {label_column}, got shape "
                            f"{member.shape}", where)
        return _Layout(member.shape[0], member.shape[1] - 1, "npy", 0)
    members = arrays.npz_members(path)
    if "y" not in members:
        raise DataError(f"npz needs an array 'y' of labels (and 'X', or a scipy.sparse matrix); it has "
                        f"{sorted(members)}", where)
    arrays.used(members, ["y", "X"] if "X" in members else ["y", *SPARSE, "format"])
    y = members["y"]
    arrays.real(y, "y", path)
    if len(y.shape) != 1:
        raise DataError(f"'y' must be 1-D, has shape {y.shape}", where)
    if "X" in members:
        if any(name in members for name in SPARSE):
            raise DataError("npz holds both a dense 'X' and sparse matrix arrays; keep one", where)
        X = members["X"]
        arrays.real(X, "X", path)
        if len(X.shape) != 2 or X.shape[1] < 1:
            raise DataError(f"'X' must be 2-D with at least one column, has shape {X.shape}", where)
        if X.shape[0] != y.shape[0]:
            raise DataError(f"'X' has {X.shape[0]} rows but 'y' has {y.shape[0]} labels", where)
        return _Layout(X.shape[0], X.shape[1], "dense", X.nbytes + y.nbytes)
    if not all(name in members for name in SPARSE):
        raise DataError(f"npz needs 'X' and 'y', or a scipy.sparse matrix (data, indices, indptr, shape) and 'y'; "
                        f"it has {sorted(members)}", where)
    small = arrays.load_arrays(path, ["shape"] + (["format"] if "format" in members else []))
    compressed = str(small["format"]) if "format" in small else "csr"
    if compressed not in ("csr", "csc") or small.get("format", np.zeros(())).shape != ():
        raise DataError(f"sparse format {compressed!r} is not supported; save a CSR (or CSC) matrix", where)
    shape = small["shape"]
    if shape.dtype.kind not in "iu" or shape.shape != (2,) or (shape < 0).any():
        raise DataError(f"'shape' must hold two non-negative integers, holds {shape!r}", where)
    rows, width = (int(v) for v in shape)
    major = rows if compressed == "csr" else width
    for name in ("indices", "indptr"):
        if members[name].dtype.kind not in "iu" or len(members[name].shape) != 1:
            raise DataError(f"'{name}' must be a 1-D integer array, is {members[name].dtype} {members[name].shape}",
                            where)
    arrays.real(members["data"], "data", path)
    if len(members["data"].shape) != 1 or members["data"].shape != members["indices"].shape:
        raise DataError(f"'data' {members['data'].shape} and 'indices' {members['indices'].shape} must be 1-D of "
                        f"one length", where)
    if members["indptr"].shape[0] != major + 1:
        raise DataError(f"'indptr' has {members['indptr'].shape[0]} entries; a {compressed.upper()} matrix of "
                        f"shape {(rows, width)} needs {major + 1}", where)
    if rows != y.shape[0]:
        raise DataError(f"the matrix has {rows} rows but 'y' has {y.shape[0]} labels", where)
    nbytes = sum(members[name].nbytes for name in ("data", "indices", "indptr", "y"))
    return _Layout(rows, width, "sparse", nbytes, compressed)


def _sparse_matrix(path: Path, layout: _Layout):
    """The whole CSR matrix of a sparse npz, its structure checked; and its labels."""
    loaded = arrays.load_arrays(path, ["data", "indices", "indptr", "y"])
    indptr, indices = loaded["indptr"].astype(np.int64), loaded["indices"].astype(np.int64)
    where = str(path)
    if indptr[0] != 0 or (np.diff(indptr) < 0).any() or indptr[-1] != indices.size:
        raise DataError(f"'indptr' must rise from 0 to {indices.size} (the entries); it does not", where)
    minor = layout.width if layout.compressed == "csr" else layout.rows
    bad = np.flatnonzero((indices < 0) | (indices >= minor))
    major = lambda entry: int(np.searchsorted(indptr, entry, "right")) - 1  # noqa: E731
    dup = arrays.first_duplicate_row(indptr, indices)
    shape = (layout.rows, layout.width)
    if layout.compressed == "csc" and (bad.size or dup is not None):
        raise DataError(f"row index {int(indices[bad[0]])} lies outside the declared shape {shape}" if bad.size
                        else f"a row index appears twice in column {dup}", where)
    # Row by row (CSR), the first problem of the file: the one a line-by-line reading meets first.
    problems = []
    if bad.size:
        problems.append((major(bad[0]), f"column index {int(indices[bad[0]])} lies outside the declared shape "
                                        f"{shape}"))
    if dup is not None:
        problems.append((dup, "a column index appears twice in the row"))
    values = loaded["data"]
    if values.size and not np.isfinite(values).all():
        problems.append((major(np.flatnonzero(~np.isfinite(values))[0]), "row holds NaN or inf"))
    if not np.isfinite(loaded["y"]).all():
        problems.append((int(np.flatnonzero(~np.isfinite(loaded["y"]))[0]), "row holds NaN or inf"))
    if problems:
        row, message = min(problems)
        raise DataError(message, where, row + 1)
    cls = sp.csr_matrix if layout.compressed == "csr" else sp.csc_matrix
    matrix = cls((loaded["data"].astype(np.float64), indices, indptr), shape=shape).tocsr()
    return matrix, loaded["y"]


def _array_block(path: Path, layout: _Layout, lo: int, hi: int, label_column: int):
    if layout.kind == "npy":
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
        block = np.asarray(arr[lo:hi], dtype=np.float64)
        return np.delete(block, label_column, axis=1), block[:, label_column].copy()
    if layout.kind == "dense":
        loaded = arrays.load_arrays(path, ["X", "y"])
        return np.asarray(loaded["X"][lo:hi], dtype=np.float64), np.asarray(loaded["y"][lo:hi], dtype=np.float64)
    matrix, y = _sparse_matrix(path, layout)
    return matrix[lo:hi], np.asarray(y[lo:hi], dtype=np.float64)


def _read_arrays(files, comm, fmt, label_column):
    comm_ = private_comm(comm)
    errors, layouts = [], []
    try:
        if not isinstance(label_column, (int, np.integer)):
            raise DataError(f"a label column name ({label_column!r}) needs a CSV file with a header line",
                            str(files[0]))
        for f in files:
            layouts.append(_layout(f, fmt, label_column))
        bad = next((f for f, lay in zip(files, layouts) if lay.width != layouts[0].width), None)
        if bad is not None:
            raise DataError(f"files disagree on the feature count: {bad.name} has {layouts[files.index(bad)].width} "
                            f"features, {files[0].name} has {layouts[0].width}", str(bad))
    except DataError as exc:
        errors.append((len(layouts), exc))
    except OSError as exc:
        errors.append((len(layouts), DataError(f"cannot read: {exc}", str(files[len(layouts)]))))
    text.first_error(errors, comm)
    budget = memory.rank_budget(comm)
    problem = memory.features_problem(layouts[0].width, budget) if layouts[0].kind == "sparse" else None
    biggest = max(range(len(files)), key=lambda i: layouts[i].nbytes)
    if problem is None and layouts[biggest].nbytes > budget[0]:
        problem = (f"loading it needs {memory.show(layouts[biggest].nbytes)}, more than the "
                   f"{memory.show(budget[0])} a rank has ({budget[1]})")
    if problem:
        text.first_error([(0, DataError(problem, str(files[biggest if 'loading' in problem else 0])))], comm)
    sizes = [lay.rows for lay in layouts]
    total, rank, size = sum(sizes), comm_.Get_rank(), comm_.Get_size()
    start, end = partition.contiguous_block(total, size, rank)
    blocks, row_file, row_line, base, errors = [], [], [], 0, []
    for index, (f, n) in enumerate(zip(files, sizes)):
        lo, hi = max(start - base, 0), min(end - base, n)
        if lo < hi or (not blocks and index == len(files) - 1):
            try:
                X, y = _array_block(f, layouts[index], lo, max(hi, lo), label_column)
            except DataError as exc:
                errors.append((index, exc))
                break
            except arrays.READ_ERRORS as exc:
                errors.append((index, DataError(f"cannot read ({type(exc).__name__}: {exc})", str(f))))
                break
            blocks.append((X, y))
            row_file.append(np.full(len(y), index))
            row_line.append(np.arange(lo, lo + len(y)) + 1)
        base += n
    if not errors:
        Xs = [b[0] for b in blocks]
        X = sp.vstack(Xs, format="csr") if any(sp.issparse(x) for x in Xs) else np.concatenate(Xs)
        y = np.concatenate([b[1] for b in blocks])
        shard = Shard(X, y, [str(f) for f in files], np.concatenate(row_file), np.concatenate(row_line))
        bad = _first_not_finite(shard)
        if bad is not None:
            errors.append((int(shard.row_file[bad]), DataError("row holds NaN or inf", *shard.where(bad))))
    text.first_error(errors, comm)
    return shard


def _first_not_finite(shard: Shard) -> int | None:
    """Binary arrays were not parsed line by line: the first local row holding NaN or inf, or None."""
    X = shard.X
    data = X.data if sp.issparse(X) else X
    bad_rows = np.flatnonzero(~np.isfinite(shard.y))
    if data.size and not np.isfinite(data).all():
        if sp.issparse(X):
            rows = np.repeat(np.arange(X.shape[0]), np.diff(X.indptr))[~np.isfinite(X.data)]
        else:
            rows = np.flatnonzero(~np.isfinite(X).all(axis=1))
        bad_rows = np.union1d(bad_rows, rows)
    return int(bad_rows[0]) if bad_rows.size else None
