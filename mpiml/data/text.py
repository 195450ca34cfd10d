"""Byte-range sharding of text files: each rank reads only its own lines.

The bytes of one file, or of the sorted files of a directory taken end to end, are
split into ``size`` equal ranges; a line belongs to the rank whose range holds its
first byte. A rank seeks to its range, skips the tail of a line that began before it,
and reads past its end to finish its last line. No rank reads the whole input.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mpiml.errors import DataError
from mpiml.runtime import partition


@dataclass
class TextPart:
    """The whole lines of one file that fall to this rank."""

    path: str
    index: int          # position of the file among the inputs
    data: bytes
    lines: int          # lines in ``data``
    first_line: int = 0  # 0-based number, in the file, of the first line (set by ``number_lines``)


def input_files(path) -> list[Path]:
    """``path`` itself, or the sorted visible regular files of a directory."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        if not files:
            raise DataError("directory holds no data files", str(path))
        return files
    if not path.exists():
        raise DataError("no such file or directory", str(path))
    return [path]


def byte_range(total: int, rank: int, size: int) -> tuple[int, int]:
    """Bytes ``[start, end)`` of ``rank`` among ``size`` equal parts of ``total`` (contiguous blocks)."""
    return partition.contiguous_block(total, size, rank)


def read_line_range(path, start: int, end: int) -> bytes:
    """The whole lines of ``path`` whose first byte is in ``[start, end)``."""
    if end <= start:
        return b""
    with open(path, "rb") as handle:
        owns_first = start == 0
        if not owns_first:
            handle.seek(start - 1)
            owns_first = handle.read(1) == b"\n"
        data = handle.read(end - start)
        if not owns_first:
            cut = data.find(b"\n")
            if cut < 0:
                return b""
            data = data[cut + 1:]
        if data and not data.endswith(b"\n"):
            data += handle.readline()
    return data


def count_lines(data: bytes) -> int:
    return data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)


def local_parts(files, rank: int, size: int) -> list[TextPart]:
    """This rank's lines of every file in ``files`` (taken end to end)."""
    sizes = [os.path.getsize(f) for f in files]
    start, end = byte_range(sum(sizes), rank, size)
    parts, base = [], 0
    for index, (f, n) in enumerate(zip(files, sizes)):
        lo, hi = max(start - base, 0), min(end - base, n)
        data = read_line_range(f, lo, hi) if lo < hi else b""
        parts.append(TextPart(str(f), index, data, count_lines(data)))
        base += n
    return parts


def number_lines(parts: list[TextPart], comm) -> None:
    """Set each part's ``first_line`` from the line counts of the lower ranks (one allgather)."""
    from mpiml.runtime.comm import private_comm

    counts = np.asarray(private_comm(comm).allgather([p.lines for p in parts]), dtype=np.int64)
    rank = private_comm(comm).Get_rank()
    before = counts[:rank].sum(axis=0) if rank else np.zeros(len(parts), dtype=np.int64)
    for part, first in zip(parts, before):
        part.first_line = int(first)
