"""Message sizes on the command line: ``8``, ``64K``, ``8:256M`` (powers of two), lists."""

from __future__ import annotations

import re

from mpiml.errors import ArgumentError

_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
_SIZE = re.compile(r"^\s*(\d+)\s*([KMG]?)(?:I?B)?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """Bytes in ``text``: a number with an optional binary unit (``K``, ``M``, ``G``, ``KiB``...)."""
    match = _SIZE.match(str(text))
    if not match:
        raise ArgumentError(f"bad size {text!r}; expected e.g. 8, 64K, 4M, 1G")
    return int(match.group(1)) * _UNITS[match.group(2).upper()]


def parse_sizes(text: str, factor: int = 2) -> list[int]:
    """Sizes in bytes from ``a:b`` (``a`` times powers of ``factor`` up to ``b``),
    ``a:b:f`` (factor ``f``), or a comma list of those; sorted, without repeats."""
    sizes: set[int] = set()
    for part in str(text).split(","):
        fields = part.split(":")
        if len(fields) == 1:
            sizes.add(parse_size(fields[0]))
            continue
        if len(fields) > 3:
            raise ArgumentError(f"bad size range {part!r}; expected FROM:TO or FROM:TO:FACTOR")
        low, high = parse_size(fields[0]), parse_size(fields[1])
        step = int(fields[2]) if len(fields) == 3 and fields[2].strip().isdigit() else factor
        if len(fields) == 3 and not fields[2].strip().isdigit():
            raise ArgumentError(f"bad factor in {part!r}; expected an integer >= 2")
        if low < 1 or high < low or step < 2:
            raise ArgumentError(f"bad size range {part!r}; need 1 <= FROM <= TO and FACTOR >= 2")
        size = low
        while size <= high:
            sizes.add(size)
            size *= step
    return sorted(sizes)


def format_bytes(nbytes: int) -> str:
    """``8``, ``64K``, ``4M``: the shortest exact binary-unit spelling (else plain bytes)."""
    for unit in ("G", "M", "K"):
        scale = _UNITS[unit]
        if nbytes >= scale and nbytes % scale == 0:
            return f"{nbytes // scale}{unit}"
    return str(nbytes)
