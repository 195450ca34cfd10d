"""Pure parsers of text lines: svmlight/libsvm and delimited (CSV) rows.

Each returns the rows it parsed, the 0-based line number (within the text given) of
every row, and the first problem found as ``(line, message)`` or None; the caller turns
that into a :class:`~mpiml.errors.DataError` naming the file and global line.

The text is bytes, read as ASCII: lines end at ``\\n`` (a ``\\r`` before it is
whitespace, so CRLF files read alike), whitespace is space, tab, ``\\r``, ``\\v`` and
``\\f``, and a number is ``[+-]digits[.digits][(e|E)[+-]digits]`` (digits on at least
one side of the point). Python's ``float`` also takes ``1_000``, ``inf``, ``nan`` and
non-ASCII digits: none of those is a number in a data file here (``inf``/``nan`` are
reported as not finite). Its value is the correctly rounded double, exactly as
``float(token)`` gives it.

:func:`parse_svmlight` and :func:`parse_delimited` are the slow, obviously-correct
references; :func:`svmlight_rows` and :func:`delimited_rows` pick the compiled kernels of
:mod:`mpiml.data.fastparse` when :func:`mpiml.runtime.jit.compiled` says so (same output,
bit for bit, errors included: the tests compare the two).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

NUMBER = re.compile(rb"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
NON_FINITE = re.compile(rb"[+-]?(?:inf|infinity|nan)", re.IGNORECASE)
INDEX = re.compile(rb"[0-9]+")
NEGATIVE = re.compile(rb"-[0-9]+")
MAX_INDEX = 10 ** 18  # indices must fit int64 with room to spare; more digits is a broken file
SVMLIGHT = "malformed svmlight line: "
ROW = "malformed row: "


def show(token: bytes) -> str:
    """A token as error messages quote it."""
    return repr(token.decode("utf-8", errors="replace"))


def number(token: bytes) -> float | None:
    """The value of a number token, None if not a number; ``inf``/``nan``/overflow give ``inf``."""
    if NUMBER.fullmatch(token):
        return float(token)
    return math.inf if NON_FINITE.fullmatch(token) else None


def number_problem(token: bytes, what: str, where: str = "") -> str | None:
    """Why ``token`` is no finite number (``what`` and ``where`` name it), or None if it is one."""
    value = number(token)
    if value is None:
        return f"{what} {show(token)}{where} is not a number"
    if not math.isfinite(value):
        return f"{what} {show(token)}{where} is not finite"
    return None


@dataclass
class SparseRows:
    labels: np.ndarray
    indptr: np.ndarray
    indices: np.ndarray
    values: np.ndarray
    lines: np.ndarray
    error: tuple | None = None


def parse_svmlight(data: bytes) -> SparseRows:
    """Parse ``label idx:value idx:value ... [# comment]`` lines (``qid:`` tokens are ignored).

    Indices are returned as written (0- or 1-based is decided by the caller).
    """
    labels, indptr, indices, values, lines = [], [0], [], [], []
    error = None
    for line_number, raw in enumerate(bytes(data).split(b"\n")):
        tokens = raw.split(b"#", 1)[0].split()
        if not tokens:
            continue
        problem = number_problem(tokens[0], "label")
        row_idx, row_val = [], []
        for token in tokens[1:]:
            if problem:
                break
            key, sep, value = token.partition(b":")
            if not sep:
                problem = f"token {show(token)} is not index:value"
            elif key == b"qid":
                continue
            elif NEGATIVE.fullmatch(key):
                problem = f"negative feature index {key.decode()}"
            elif not INDEX.fullmatch(key):
                problem = f"feature index {show(key)} is not an integer"
            elif int(key) >= MAX_INDEX:
                problem = f"feature index {show(key)} is too large"
            else:
                problem = number_problem(value, "value", f" of feature {int(key)}")
                row_idx.append(int(key))
                row_val.append(number(value))
        if problem:
            error = (line_number, SVMLIGHT + problem)
            break
        labels.append(number(tokens[0]))
        indices.extend(row_idx)
        values.extend(row_val)
        indptr.append(len(indices))
        lines.append(line_number)
    return SparseRows(np.asarray(labels, dtype=np.float64), np.asarray(indptr, dtype=np.int64),
                      np.asarray(indices, dtype=np.int64), np.asarray(values, dtype=np.float64),
                      np.asarray(lines, dtype=np.int64), error)


@dataclass
class DenseRows:
    values: np.ndarray   # (rows, columns)
    lines: np.ndarray
    header: list | None = None
    error: tuple | None = None


def parse_delimited(data: bytes, delimiter: str = ",", header: bool = False) -> DenseRows:
    """Parse rows of numbers separated by ``delimiter``; every row must have as many columns.

    Lines whose first non-blank character is ``#`` are comments. With ``header``, the first
    line that is neither blank nor a comment is the header (its fields are kept as names; it
    counts for the width).
    """
    sep = delimiter.encode()
    rows, lines, width, error = [], [], None, None
    header = True if header else None
    for line_number, raw in enumerate(bytes(data).split(b"\n")):
        line = raw.strip()
        if not line or line.startswith(b"#"):
            continue
        fields = [f.strip() for f in line.split(sep)]
        problem = next((p for p in (number_problem(f, "value") for f in fields) if p), None)
        if header is True:
            header = [f.decode("utf-8", errors="replace") for f in fields]
            width = len(fields)
            continue
        if problem:
            error = (line_number, ROW + problem)
            break
        if width is not None and len(fields) != width:
            error = (line_number, f"row has {len(fields)} columns, expected {width}")
            break
        width = len(fields) if width is None else width
        rows.append([number(f) for f in fields])
        lines.append(line_number)
    values = np.asarray(rows, dtype=np.float64).reshape(len(rows), width or 0)
    return DenseRows(values, np.asarray(lines, dtype=np.int64), None if header is True else header, error)


def svmlight_rows(data: bytes) -> SparseRows:
    """:func:`parse_svmlight` by the compiled kernel when kernels are on (same result)."""
    from mpiml.runtime.jit import compiled

    if compiled():
        from mpiml.data import fastparse

        return fastparse.parse_svmlight(data)
    return parse_svmlight(data)


def delimited_rows(data: bytes, delimiter: str = ",", header: bool = False) -> DenseRows:
    """:func:`parse_delimited` by the compiled kernel when kernels are on (same result)."""
    from mpiml.runtime.jit import compiled

    if compiled() and len(delimiter.encode()) == 1:
        from mpiml.data import fastparse

        return fastparse.parse_delimited(data, delimiter, header)
    return parse_delimited(data, delimiter, header)
