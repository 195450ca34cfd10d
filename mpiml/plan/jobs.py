"""The :class:`~mpiml.plan.spec.Job` of an ``mpiml sgd`` or ``mpiml mf`` command line, with its data's sizes.

Sizes come from what is cheap to read: a synthetic spec, an array file's header, a
MatrixMarket header; a text file (svmlight, csv, ratings) small enough is read whole,
a larger one is sampled in :data:`SAMPLES` chunks spread over the file and the counts
extrapolated by its size (``DataSize.how`` says which). Ratings ids are taken to be
dense (the largest id sampled stands for the count).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace

import numpy as np

from mpiml.errors import ArgumentError, DataError

WHOLE_BYTES = 8 << 20     # text files up to this size are read whole
SAMPLES = 16              # chunks sampled from a larger text file
CHUNK_BYTES = 256 << 10   # bytes per chunk
SKLEARN = {"breast_cancer": (569, 30, 2), "iris": (150, 4, 3), "wine": (178, 13, 3), "digits": (1797, 64, 10),
           "diabetes": (442, 10, 2)}  # rows, features, classes of scikit-learn's bundled sets


@dataclass(frozen=True)
class DataSize:
    """Sizes of a training set: ``rows x features`` with ``nnz`` stored values, or ratings ``users x items``."""

    rows: int = 0
    features: int = 0
    nnz: int = 0
    dense: bool = True
    classes: int | None = None
    users: int = 0
    items: int = 0
    ratings: int = 0
    how: str = "given"   # given, synthetic, header, read whole, sampled


def _chunks(path: str):
    """``(bytes, whole)``: the file's lines, or :data:`SAMPLES` chunks of whole lines spread over it."""
    from mpiml.data import text

    size = os.path.getsize(path)
    if size <= WHOLE_BYTES:
        return [text.read_line_range(path, 0, size)], True
    step = (size - CHUNK_BYTES) / (SAMPLES - 1)
    return [text.read_line_range(path, int(i * step), int(i * step) + CHUNK_BYTES) for i in range(SAMPLES)], False


def _scale(count: float, read: int, total: int, whole: bool) -> int:
    return int(count) if whole or read == 0 else int(round(count * total / read))


def _svmlight_size(path: str) -> DataSize:
    from mpiml.data.parsers import svmlight_rows

    parts, whole = _chunks(path)
    rows = nnz = read = 0
    top, labels = -1, set()
    for data in parts:
        parsed = svmlight_rows(data)
        if parsed.error:
            raise DataError(f"line {parsed.error[0] + 1} of a sample: {parsed.error[1]}", path)
        rows += len(parsed.labels)
        nnz += len(parsed.indices)
        read += len(data)
        if len(parsed.indices):
            top = max(top, int(parsed.indices.max()))
        labels.update(np.unique(parsed.labels).tolist())
    total = os.path.getsize(path)
    return DataSize(_scale(rows, read, total, whole), top + 1, _scale(nnz, read, total, whole), False,
                    _classes(labels), how="read whole" if whole else "sampled")


def _classes(labels) -> int | None:
    values = [v for v in labels if float(v).is_integer() and v >= 0]
    return int(max(values)) + 1 if values and len(values) == len(labels) else None


def _delimited_size(path: str, delimiter: str, header: str) -> DataSize:
    from mpiml.data import text
    from mpiml.data.parsers import delimited_rows

    parts, whole = _chunks(path)
    first = text.first_content_line(path)
    has_header = header == "yes" or (header == "auto" and first is not None
                                     and text.is_header(first[1].split(delimiter.encode())))
    rows = read = width = 0
    for index, data in enumerate(parts):
        parsed = delimited_rows(data, delimiter, header=has_header and index == 0)
        if parsed.error:
            raise DataError(f"line {parsed.error[0] + 1} of a sample: {parsed.error[1]}", path)
        rows += parsed.values.shape[0]
        width = max(width, parsed.values.shape[1])
        read += len(data)
    rows = _scale(rows, read, os.path.getsize(path), whole)
    features = max(width - 1, 1)
    return DataSize(rows, features, rows * features, True, how="read whole" if whole else "sampled")


def _array_size(path, fmt: str, label_column: int) -> DataSize:
    from mpiml.data.shard import _layout  # the reader's own header check: the sizes it would load

    layout = _layout(path, fmt, label_column)
    dense = layout.kind != "sparse"
    if dense:
        nnz = layout.rows * layout.width
    else:
        from mpiml.data import arrays

        nnz = int(arrays.npz_members(path)["indices"].shape[0])
    return DataSize(layout.rows, layout.width, nnz, dense, how="header")


def sgd_data_size(source: str, fmt: str | None = None, n_features: int | None = None, label_column=0,
                  header: str = "auto") -> DataSize:
    """Sizes of ``mpiml sgd --data SOURCE`` (all of it, before any held-out split)."""
    if source.startswith("synthetic:"):
        from mpiml.data.synthetic import parse_spec

        _, options = parse_spec(source)
        n, d, density = options["n"], options["d"], options["density"]
        return DataSize(n, d, int(round(n * d * density)), density >= 1.0, options["classes"], how="synthetic")
    if source.startswith("sklearn:"):
        name = source.split(":", 1)[1]
        if name not in SKLEARN:
            raise ArgumentError(f"unknown sklearn data {name!r}; choose from {', '.join(SKLEARN)}")
        n, d, k = SKLEARN[name]
        return DataSize(n, d, n * d, True, k, how="synthetic")
    from mpiml.data import text
    from mpiml.data.shard import detect_format

    files = [str(f) for f in text.input_files(source)]
    fmt = fmt or detect_format(source)
    sizes = []
    for path in files:
        if fmt == "svmlight":
            sizes.append(_svmlight_size(path))
        elif fmt == "csv":
            sizes.append(_delimited_size(path, "\t" if path.lower().endswith(".tsv") else ",", header))
        else:
            sizes.append(_array_size(path, fmt, label_column if isinstance(label_column, int) else 0))
    classes = [s.classes for s in sizes if s.classes]
    return DataSize(sum(s.rows for s in sizes), n_features or max(s.features for s in sizes),
                    sum(s.nnz for s in sizes), all(s.dense for s in sizes), max(classes) if classes else None,
                    how=sizes[0].how if len({s.how for s in sizes}) == 1 else "sampled")


def _ratings_lines(data: bytes, delimiter):
    """``(users, items)`` id arrays of the rating lines in ``data`` (a header, comment or bad line is skipped)."""
    from mpiml.data.ratings import _split  # the reader's own field split

    users, items = [], []
    for line in data.split(b"\n"):
        fields = _split(line.strip(), delimiter)
        if len(fields) < 2 or line.lstrip().startswith((b"#", b"%")):
            continue
        try:
            users.append(int(float(fields[0])))
            items.append(int(float(fields[1])))
        except ValueError:
            continue
    return np.asarray(users, dtype=np.int64), np.asarray(items, dtype=np.int64)


def ratings_size(source: str, fmt: str = "auto") -> DataSize:
    """Sizes of ``mpiml mf --ratings SOURCE``: users, items and ratings (ids taken as dense when sampled)."""
    if source.startswith("synthetic"):
        from mpiml.data.synthetic_ratings import parse_spec

        spec = parse_spec(source)
        return DataSize(users=spec.users, items=spec.items, ratings=spec.ratings, how="synthetic")
    from mpiml.data.ratings import _format_by_suffix

    if not os.path.isfile(source):
        raise DataError("no such file", source)
    if fmt == "auto":
        fmt = _format_by_suffix(source)
    if fmt == "mtx":
        with open(source, "rb") as handle:
            for line in handle:
                if line.strip() and not line.startswith(b"%"):
                    rows, cols, entries = (int(v) for v in line.split()[:3])
                    return DataSize(users=rows, items=cols, ratings=entries, how="header")
        raise DataError("MatrixMarket file without a size line", source)
    if fmt == "npz":
        from mpiml.data import arrays

        members = arrays.npz_members(source)
        names = ("users", "items") if "users" in members else ("row", "col")
        loaded = arrays.load_arrays(source, names)
        ids = [np.unique(loaded[name]).size for name in names]
        return DataSize(users=ids[0], items=ids[1], ratings=int(loaded[names[0]].size), how="header")
    from mpiml.data.ratings import _sniff  # the reader's own choice of delimiter

    sniffed = _sniff(source, fmt)
    if sniffed is None:
        raise DataError("no ratings in file", source)
    parts, whole = _chunks(source)
    count = read = 0
    users, items = [], []
    for data in parts:
        u, i = _ratings_lines(data, sniffed[0])
        count += u.size
        read += len(data)
        users.append(u)
        items.append(i)
    users, items = np.concatenate(users), np.concatenate(items)
    if not users.size:
        raise DataError("no ratings found in the file (or its sample)", source)
    ratings = _scale(count, read, os.path.getsize(source), whole)
    if whole:
        return DataSize(users=np.unique(users).size, items=np.unique(items).size, ratings=ratings, how="read whole")
    return DataSize(users=int(max(np.unique(users).size, users.max())), items=int(max(np.unique(items).size,
                    items.max())), ratings=ratings, how="sampled")


def with_numbers(size: DataSize, **numbers) -> DataSize:
    """``size`` with the counts given on the command line (None: keep); ``nnz`` alone makes it sparse."""
    given = {k: int(v) for k, v in numbers.items() if v is not None}
    if not given:
        return size
    size = replace(size, **given, how="given" if size.how == "none" else size.how + " and given")
    if "nnz" in given:
        return replace(size, dense=given["nnz"] >= size.rows * size.features)
    if {"rows", "features"} & given.keys() and size.dense:
        return replace(size, nnz=size.rows * size.features)
    return size


NONE = DataSize(how="none")


def sgd_job(args, size: DataSize):
    """The :class:`~mpiml.plan.spec.Job` of parsed and checked ``mpiml sgd`` arguments (strategy resolved)."""
    from mpiml.plan.spec import Job

    fraction = args.test_fraction
    if fraction is None:
        fraction = 0.2 if args.data.startswith(("synthetic:", "sklearn:")) and not args.test else 0.0
    rows = max(1, int(math.floor(size.rows * (1 - fraction))))
    nnz = int(round(size.nnz * rows / size.rows)) if size.rows else size.nnz
    if size.rows < 1 or size.features < 1:
        raise ArgumentError("the data's rows and features are unknown: give --rows and --features (and --nnz "
                            "for sparse data)")
    return Job("sgd", args.strategy, rows=rows, features=size.features, nnz=nnz, dense=size.dense,
               model=args.model, classes=args.classes or size.classes or 2,
               batch_size=args.batch_size * args.accumulate, epochs=args.epochs, max_iter=args.max_iter,
               sync_every=args.sync_every, standardize=args.standardize)


def mf_job(args, size: DataSize):
    """The :class:`~mpiml.plan.spec.Job` of parsed and checked ``mpiml mf`` arguments."""
    from mpiml.mf import params
    from mpiml.plan.spec import Job

    if size.ratings < 1 or size.users < 1 or size.items < 1:
        raise ArgumentError("the ratings' users, items and count are unknown: give --users, --items and --ratings")
    values = params.defaults(args.algorithm)
    values.update({p.name: getattr(args, p.name) for p in params.PARAMS
                   if p.flag and getattr(args, p.name, None) is not None})
    ratings = max(1, int(size.ratings * (1 - args.test_fraction)))
    # nomad does dsgd's work an epoch (its extra visits fill time otherwise spent waiting): dsgd's model
    return Job("mf", "dsgd" if args.algorithm == "nomad" else args.algorithm, users=size.users, items=size.items, ratings=ratings,
               factors=int(values["rank"]), iterations=int(values["iters"]),
               solver=values.get("solver") or "cg", cg_steps=int(values.get("cg_steps") or 3),
               biases=bool(values.get("biases", False)),
               factor_bytes=4 if values.get("dtype") == "float32" else 8 if args.algorithm == "ials" else 0,
               factor_layout=values.get("factors", "auto") if values.get("reg") != "auto" else "replicated")


def job_from_args(kind: str, args):
    """The Job of a command's checked arguments, its data sized by :func:`sgd_data_size` / :func:`ratings_size`."""
    if kind == "sgd":
        label = int(args.label_column) if args.label_column.strip().lstrip("-").isdigit() else args.label_column
        return sgd_job(args, sgd_data_size(args.data, args.format, args.n_features, label, args.header))
    return mf_job(args, ratings_size(args.ratings, args.format))
