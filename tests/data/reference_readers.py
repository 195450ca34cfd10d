"""Slow, obviously-correct reference readers for the fuzz test: written from the README's rules,
sharing no code with mpiml. Each returns ``("ok", rows)`` or ``("error", line)`` (1-based line, or
None for a problem of the whole file)."""

from __future__ import annotations

import math
import re
import zipfile

import numpy as np

NUMBER = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?")
DIGITS = re.compile(r"[0-9]+")
CONTROL = re.compile(rb"[\x00-\x08\x0b-\x1f\x7f]")  # every byte below 32 but tab and newline, and DEL
BYTES_PER_FEATURE = 32
MAX_ID = 2**31 - 1


class Bad(Exception):
    def __init__(self, line=None):
        super().__init__(line)
        self.line = line


def lines_of(raw: bytes) -> list[bytes]:
    """Lines: a leading UTF-8 BOM dropped; \\r\\n, \\r and \\n all end a line."""
    if raw[:3] == b"\xef\xbb\xbf":
        raw = raw[3:]
    out = re.split(rb"\r\n|\r|\n", raw)
    if out and out[-1] == b"":
        out.pop()  # the end of the last line, not a line
    return out


def has_control(line: bytes) -> bool:
    return CONTROL.search(line) is not None


def strip(field: bytes) -> bytes:
    return field.strip(b" \t")


def number(token: bytes):
    """A finite float, or None."""
    text = token.decode("latin-1")
    if not NUMBER.fullmatch(text):
        return None
    value = float(text)
    return value if math.isfinite(value) else None


def content(line: bytes, comments=b"#") -> bool:
    s = strip(line)
    return len(s) > 0 and s[0] not in comments


def is_header(fields: list[bytes]) -> bool:
    if not fields:
        return False
    for f in fields:
        f = strip(f)
        if not f or not (chr(f[0]).isascii() and (chr(f[0]).isalpha() or f[0] in b"_\"'")):
            return False
        if f.lower() in (b"nan", b"inf", b"infinity"):
            return False
    return True


def _run(body):
    try:
        return "ok", body()
    except Bad as exc:
        return "error", exc.line


def csv(raw: bytes, header="auto", delimiter=b",", label=0):
    """Rows ``(line, label, features)``."""
    def body():
        rows, width, header_at = [], None, None
        lines = lines_of(raw)
        first = next((i for i, line in enumerate(lines) if content(line)), None)
        if first is not None and header != "no":
            fields = lines[first].split(delimiter)
            if header == "yes" or is_header(fields):
                header_at = first
        for i, line in enumerate(lines):
            if has_control(line):
                raise Bad(i + 1)
            if not content(line):
                continue
            fields = [strip(f) for f in line.split(delimiter)]
            if width is None:
                width = len(fields)
            if i == header_at:
                continue
            values = [number(f) for f in fields]
            if None in values or len(fields) != width:
                raise Bad(i + 1)
            rows.append((i + 1, values[label], values[:label] + values[label + 1:]))
        if width is not None and (width < 2 or label >= width):
            raise Bad(None)
        if not rows:
            raise Bad(None)
        return rows
    return _run(body)


def svmlight(raw: bytes, zero_based="auto", memory=2**30):
    """``(rows (line, label, {column: value}), width)``."""
    def body():
        rows = []
        for i, line in enumerate(lines_of(raw)):
            if has_control(line):
                raise Bad(i + 1)
            tokens = [t for t in re.split(rb"[ \t]+", line.split(b"#", 1)[0]) if t]
            if not tokens:
                continue
            label = number(tokens[0])
            if label is None:
                raise Bad(i + 1)
            pairs = {}
            for token in tokens[1:]:
                if b":" not in token:
                    raise Bad(i + 1)
                key, value = token.split(b":", 1)
                if key == b"qid":
                    continue
                if not DIGITS.fullmatch(key.decode("latin-1")) or len(key.lstrip(b"0")) > 18:
                    raise Bad(i + 1)
                index, v = int(key), number(value)
                if v is None or index in pairs or (zero_based is False and index == 0):
                    raise Bad(i + 1)
                pairs[index] = v
            rows.append((i + 1, label, pairs))
        if not rows:
            raise Bad(None)
        indices = [k for _, _, p in rows for k in p]
        zero = zero_based if zero_based != "auto" else (0 in indices)
        shift = 0 if zero else 1
        width = max(max(indices) + 1 - shift, 0) if indices else 0
        if width * BYTES_PER_FEATURE > memory:
            raise Bad(next(line for line, _, p in rows if max(indices) in p))
        return [(line, label, {k - shift: v for k, v in p.items()}) for line, label, p in rows], width
    return _run(body)


def ratings(raw: bytes, header="auto"):
    """Ratings ``(line, user, item, rating)``."""
    def body():
        lines = lines_of(raw)
        first = next((i for i, line in enumerate(lines) if content(line, b"#%")), None)
        if first is None:
            raise Bad(None)
        line = lines[first]
        if b"::" in line:
            split = lambda s: [strip(f) for f in s.split(b"::")]  # noqa: E731
        elif b"\t" in line:
            split = lambda s: [strip(f) for f in s.split(b"\t")]  # noqa: E731
        elif b"," in line:
            split = lambda s: [strip(f) for f in s.split(b",")]  # noqa: E731
        else:
            split = lambda s: [t for t in re.split(rb"[ \t]+", strip(s)) if t]  # noqa: E731
        width = len(split(line))
        header_at = first if header == "yes" or (header == "auto" and is_header(split(line))) else None
        out = []
        for i, line in enumerate(lines):
            if i == first and width < 3:
                raise Bad(i + 1)
            if has_control(line):
                raise Bad(i + 1)
            if not content(line, b"#%"):
                continue
            fields = split(line)
            if len(fields) != width:
                raise Bad(i + 1)
            if i == header_at:
                continue
            ids = [f.decode("latin-1") for f in fields[:2]]
            if not all(DIGITS.fullmatch(x) and int(x) <= MAX_ID for x in ids):
                raise Bad(i + 1)
            value = number(fields[2])
            if value is None:
                raise Bad(i + 1)
            out.append((i + 1, int(ids[0]), int(ids[1]), value))
        if not out:
            raise Bad(None)
        return out
    return _run(body)


def npz(path, memory=2**30):
    """``(X as a dense array, y)`` of a features archive."""
    def body():
        try:
            with np.load(path, allow_pickle=False) as archive:
                names = set(archive.files)
                dense = ("X", "y") if "X" in names else ("y", "data", "indices", "indptr", "shape", "format")
                wanted = [n for n in dense if n in names]
                arrays = {n: archive[n] for n in wanted}
        except (Exception, zipfile.BadZipFile):
            raise Bad(None) from None
        real = lambda a: a.dtype.kind in "biuf"  # noqa: E731
        if "y" not in arrays or arrays["y"].ndim != 1 or not real(arrays["y"]):
            raise Bad(None)
        y = arrays["y"]
        sparse = {"data", "indices", "indptr", "shape"}
        if not len(y):
            raise Bad(None)
        if "X" in arrays:
            X = arrays["X"]
            if sparse & names or X.ndim != 2 or not real(X) or X.shape[1] < 1 or X.shape[0] != len(y):
                raise Bad(None)
            bad = [r for r in range(len(y)) if not (np.isfinite(X[r]).all() and np.isfinite(y[r]))]
            if bad:
                raise Bad(bad[0] + 1)
            return X.astype(np.float64), y.astype(np.float64)
        if not sparse <= set(arrays):
            raise Bad(None)
        if "format" in arrays and (arrays["format"].shape != () or str(arrays["format"]) != "csr"):
            raise Bad(None)
        shape, data, indices, indptr = arrays["shape"], arrays["data"], arrays["indices"], arrays["indptr"]
        if shape.dtype.kind not in "iu" or shape.shape != (2,) or (shape < 0).any():
            raise Bad(None)
        n, d = int(shape[0]), int(shape[1])
        if indices.dtype.kind not in "iu" or indptr.dtype.kind not in "iu" or indices.ndim != 1 or indptr.ndim != 1:
            raise Bad(None)
        if not real(data) or data.ndim != 1 or len(data) != len(indices) or len(indptr) != n + 1 or len(y) != n:
            raise Bad(None)
        if d * BYTES_PER_FEATURE > memory:
            raise Bad(None)
        ptr = [int(v) for v in indptr]
        if ptr[0] != 0 or ptr[-1] != len(indices) or any(b < a for a, b in zip(ptr, ptr[1:])):
            raise Bad(None)
        X = np.zeros((n, d))
        for r in range(n):
            seen = set()
            for k in range(ptr[r], ptr[r + 1]):
                c = int(indices[k])
                if not 0 <= c < d or c in seen or not np.isfinite(data[k]):
                    raise Bad(r + 1)
                seen.add(c)
                X[r, c] = data[k]
            if not np.isfinite(y[r]):
                raise Bad(r + 1)
        return X, y.astype(np.float64)
    return _run(body)
