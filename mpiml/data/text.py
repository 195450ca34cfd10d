"""Byte-range sharding of text files: each rank reads only its own lines.

The bytes of one file, or of the sorted files of a directory taken end to end, are
split into ``size`` equal ranges; a line belongs to the rank whose range holds its
first byte. A rank finds the first line that starts in its range, and reads past its
end to finish its last line. No rank reads the whole input.

Lines end at ``\\n``, ``\\r\\n`` or a lone ``\\r`` (so CR-only files read alike at every
rank count); a UTF-8 byte order mark at the start of a file is dropped. What a rank gets
is normalized: its lines joined by ``\\n``. Other control characters (form feed, vertical
tab, NUL, ...) are errors (:func:`control_problem`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mpiml.errors import DataError
from mpiml.runtime import partition

BOM = b"\xef\xbb\xbf"
# Control characters a data file may not hold (tab and the line ends are fine).
CONTROL = re.compile(rb"[\x00-\x08\x0b-\x1f\x7f]")
_ENDS = re.compile(rb"[\r\n]")
_CHUNK = 1 << 16
CONTROL_NAMES = {0x00: "NUL", 0x0b: "vertical tab", 0x0c: "form feed", 0x1a: "Ctrl-Z", 0x1b: "escape", 0x7f: "DEL"}


@dataclass
class TextPart:
    """The whole lines of one file that fall to this rank."""

    path: str
    index: int          # position of the file among the inputs
    data: bytes
    lines: int          # lines in ``data``
    first_line: int = 0  # 0-based number, in the file, of the first line (set by ``number_lines``)

    def holds(self, line: int | None) -> bool:
        """Whether file line ``line`` (0-based) is one of this part's."""
        return line is not None and self.first_line <= line < self.first_line + self.lines


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
    if not path.is_file():
        raise DataError("not a regular file", str(path))
    return [path]


def byte_range(total: int, rank: int, size: int) -> tuple[int, int]:
    """Bytes ``[start, end)`` of ``rank`` among ``size`` equal parts of ``total`` (contiguous blocks)."""
    return partition.contiguous_block(total, size, rank)


def line_start(handle, pos: int, total: int) -> int:
    """The first position ``>= pos`` where a line starts (``total`` if none)."""
    if pos <= 0:
        return 0
    if pos >= total:
        return total
    at = pos - 1  # a line starts at p when byte p-1 ends one: \n, or \r not followed by \n
    while at < total:
        handle.seek(at)
        chunk = handle.read(_CHUNK + 1)  # one byte more: the \n of a \r\n at the chunk's end
        found = _ENDS.search(chunk, 0, _CHUNK)
        if found is None:
            at += _CHUNK
            continue
        i = found.start()
        if chunk[i] == 0x0D and chunk[i + 1:i + 2] == b"\n":
            return at + i + 2
        return at + i + 1
    return total


def normalize(data: bytes, file_start: bool) -> bytes:
    """Lines joined by ``\\n`` (CRLF and CR ends rewritten), without a leading BOM when at the file's start."""
    if file_start and data.startswith(BOM):
        data = data[len(BOM):]
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    return data


def read_line_range(path, start: int, end: int) -> bytes:
    """The whole lines of ``path`` whose first byte is in ``[start, end)``, normalized."""
    if end <= start:
        return b""
    total = os.path.getsize(path)
    with open(path, "rb") as handle:
        first = line_start(handle, start, total)
        if first >= end:
            return b""
        stop = line_start(handle, end, total)
        handle.seek(first)
        return normalize(handle.read(stop - first), first == 0)


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


def is_content(line: bytes, comments: bytes = b"#") -> bool:
    """Whether a (normalized) line holds data: not blank, not a comment."""
    stripped = line.strip(b" \t")
    return bool(stripped) and stripped[:1] not in tuple(bytes([c]) for c in comments)


def first_content_line(path, comments: bytes = b"#") -> tuple[int, bytes] | None:
    """``(0-based line number, line)`` of the first line of ``path`` that is not blank or a comment.

    Every rank reads it itself (from the start of the file), so all decide alike without talking.
    """
    with open(path, "rb") as handle:
        buffer, base, done = b"", 0, False
        while not done:
            chunk = handle.read(_CHUNK)
            done = not chunk
            if base == 0 and not buffer and chunk.startswith(BOM):
                chunk = chunk[len(BOM):]
            buffer += chunk
            if not done and buffer.endswith(b"\r"):
                continue  # the \n of a \r\n may come next
            lines = normalize(buffer, False).split(b"\n")
            complete = lines if done else lines[:-1]
            for number, line in enumerate(complete):
                if is_content(line, comments):
                    return base + number, line
            base += len(complete)
            buffer = b"" if done else lines[-1]
    return None


_NOT_CONTROL = bytes(c for c in range(256) if not CONTROL.fullmatch(bytes([c])))


def control_problem(data: bytes) -> tuple[int, str] | None:
    """``(0-based line, message)`` of the first control character in normalized ``data``, or None."""
    if not data.translate(None, _NOT_CONTROL):  # a C pass deleting every other byte: the usual, clean file
        return None
    at = CONTROL.search(data).start()
    code = data[at]
    name = CONTROL_NAMES.get(code, "control character")
    return data.count(b"\n", 0, at), f"{name} (byte 0x{code:02x}) in a text data file"


HEADER_FIELD = re.compile(rb"[A-Za-z_\"']")
NOT_NAMES = {b"nan", b"inf", b"infinity"}


def is_header(fields: list[bytes]) -> bool:
    """The README's header rule: every field is a name (starts with an ASCII letter, ``_`` or a
    quote, and is not ``nan``/``inf``/``infinity`` in any case)."""
    for field in fields:
        field = field.strip(b" \t")
        if not HEADER_FIELD.match(field) or field.lower() in NOT_NAMES:
            return False
    return bool(fields)


def header_line(path, split, header: str = "auto", comments: bytes = b"#"):
    """``(0-based line, fields)`` of the header of ``path``, or None: by :func:`is_header`
    (``header="auto"``), always the first content line (``"yes"``) or never (``"no"``)."""
    if header == "no":
        return None
    first = first_content_line(path, comments)
    if first is None:
        return None
    fields = split(first[1])
    if header == "yes" or is_header(fields):
        return first[0], fields
    return None


def first_error(errors, comm) -> None:
    """Raise, on every rank, the earliest of every rank's ``DataError`` (order: file index, line).

    ``errors`` are ``(file_index, DataError)`` pairs of this rank (or Nones); file-wide errors
    (no line) count as line 0 of their file.
    """
    from mpiml.runtime.comm import private_comm

    mine = [(index, e.line or 0, e.args[0], e.path, e.line) for index, e in (x for x in errors if x) if e]
    mine = min(mine, default=None, key=lambda m: m[:2])
    everyone = [m for m in private_comm(comm).allgather(mine) if m is not None]
    if everyone:
        _, _, _, path, line = first = min(everyone, key=lambda m: m[:2])
        message = first[2]
        prefix = f"{path}:{line}: " if line is not None else f"{path}: " if path is not None else ""
        raise DataError(message[len(prefix):] if message.startswith(prefix) else message, path, line,
                        collective=True)
