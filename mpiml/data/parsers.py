"""Pure parsers of text lines: svmlight/libsvm and delimited (CSV) rows.

Each returns the rows it parsed, the 0-based line number (within the text given) of
every row, and the first problem found as ``(line, message)`` or None; the caller turns
that into a :class:`~mpiml.runtime.errors.DataError` naming the file and global line.
Blank lines and lines starting with ``#`` are skipped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass
class SparseRows:
    labels: np.ndarray
    indptr: np.ndarray
    indices: np.ndarray
    values: np.ndarray
    lines: np.ndarray
    error: tuple | None = None


def _finite(text: str, what: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{what} {text!r} is not finite")
    return value


def parse_svmlight(data: bytes) -> SparseRows:
    """Parse ``label idx:value idx:value ... [# comment]`` lines (``qid:`` tokens are ignored).

    Indices are returned as written (0- or 1-based is decided by the caller).
    """
    labels, indptr, indices, values, lines = [], [0], [], [], []
    error = None
    for number, raw in enumerate(data.decode("utf-8", errors="replace").splitlines()):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        tokens = line.split()
        try:
            label = _finite(tokens[0], "label")
            row_idx, row_val = [], []
            for token in tokens[1:]:
                key, sep, value = token.partition(":")
                if not sep:
                    raise ValueError(f"token {token!r} is not index:value")
                if key == "qid":
                    continue
                index = int(key)
                if index < 0:
                    raise ValueError(f"negative feature index {index}")
                row_idx.append(index)
                row_val.append(_finite(value, f"value of feature {index}"))
        except ValueError as exc:
            error = (number, f"malformed svmlight line: {exc}")
            break
        labels.append(label)
        indices.extend(row_idx)
        values.extend(row_val)
        indptr.append(len(indices))
        lines.append(number)
    return SparseRows(np.asarray(labels, dtype=np.float64), np.asarray(indptr, dtype=np.int64),
                      np.asarray(indices, dtype=np.int64), np.asarray(values, dtype=np.float64),
                      np.asarray(lines, dtype=np.int64), error)


@dataclass
class DenseRows:
    values: np.ndarray   # (rows, columns)
    lines: np.ndarray
    header: list | None = None
    error: tuple | None = None


def parse_delimited(data: bytes, delimiter: str = ",", first_may_be_header: bool = False) -> DenseRows:
    """Parse rows of numbers separated by ``delimiter``; every row must have as many columns.

    With ``first_may_be_header``, a first non-blank line that is not all numbers is
    taken as the header.
    """
    rows, lines, header, width, error = [], [], None, None, None
    for number, raw in enumerate(data.decode("utf-8", errors="replace").splitlines()):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = [f.strip() for f in line.split(delimiter)]
        try:
            row = [_finite(f, "value") for f in fields]
        except ValueError as exc:
            if first_may_be_header and not rows and header is None:
                header = fields
                width = len(fields)
                continue
            error = (number, f"malformed row: {exc}")
            break
        if width is None:
            width = len(row)
        elif len(row) != width:
            error = (number, f"row has {len(row)} columns, expected {width}")
            break
        rows.append(row)
        lines.append(number)
    values = np.asarray(rows, dtype=np.float64).reshape(len(rows), width or 0)
    return DenseRows(values, np.asarray(lines, dtype=np.int64), header, error)
