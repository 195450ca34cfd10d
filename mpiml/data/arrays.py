"""Array files (``.npy``, ``.npz``) checked before anything is allocated.

Every array's header (shape, dtype) is read and checked against the bytes the file holds
before the array is: a header that declares more than the file has, a dtype that is not a
real number, an object array, or arrays that disagree in shape are :class:`DataError` s
naming the file. Nothing here talks to other ranks.
"""

from __future__ import annotations

import math
import struct
import zipfile
import zlib
from dataclasses import dataclass

import numpy as np

from mpiml.errors import DataError

# What a broken archive or array file may raise while being read (turned into DataError).
READ_ERRORS = (OSError, ValueError, EOFError, KeyError, IndexError, TypeError, zipfile.BadZipFile, zlib.error,
               NotImplementedError, RuntimeError, struct.error, OverflowError, SyntaxError)
REAL_KINDS = "biuf"  # bool, integers, floats: the values a model can take


@dataclass
class Member:
    """One array of an archive, as its header declares it."""

    shape: tuple
    dtype: np.dtype
    nbytes: int


def _read_header(handle, size: int, where: str) -> Member:
    """The header of one ``.npy`` stream of ``size`` bytes, checked against that size."""
    from numpy.lib import format as npformat

    version = npformat.read_magic(handle)
    try:
        from numpy.lib._format_impl import _read_array_header
        shape, _, dtype = _read_array_header(handle, version)
    except ImportError:  # older numpy: the public readers of versions 1 and 2
        reader = npformat.read_array_header_1_0 if version == (1, 0) else npformat.read_array_header_2_0
        shape, _, dtype = reader(handle)
    if dtype.hasobject:
        raise DataError(f"{where} holds Python objects (not loaded: that would need unpickling)")
    if any(not isinstance(n, int) or n < 0 for n in shape):
        raise DataError(f"{where} declares a bad shape {shape}")
    nbytes = math.prod(shape) * dtype.itemsize
    if handle.tell() + nbytes != size:
        raise DataError(f"{where} declares shape {shape} of {dtype} ({nbytes} bytes) but holds "
                        f"{size - handle.tell()} bytes")
    return Member(tuple(shape), dtype, nbytes)


def npz_members(path) -> dict[str, Member | DataError]:
    """Every array of the archive ``path``, by name, from the headers alone; a broken one as the
    DataError it is (raised by :func:`used` only if the array is needed)."""
    path = str(path)
    try:
        with zipfile.ZipFile(path) as archive:
            members = {}
            for info in archive.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                name = info.filename[:-4]
                try:
                    with archive.open(info) as handle:
                        members[name] = _read_header(handle, info.file_size, f"array {name!r}")
                except DataError as exc:
                    members[name] = DataError(exc.args[0], path)
                except READ_ERRORS as exc:
                    members[name] = DataError(f"array {name!r} is unreadable ({type(exc).__name__}: {exc})", path)
            return members
    except READ_ERRORS as exc:
        raise DataError(f"not a readable .npz archive ({type(exc).__name__}: {exc})", path) from None


def used(members: dict, names) -> None:
    """Raise the error of the first broken array among ``names``."""
    for name in names:
        if isinstance(members.get(name), DataError):
            raise members[name]


def npy_member(path) -> Member:
    """The array of the ``.npy`` file ``path``, from its header."""
    import os

    path = str(path)
    try:
        with open(path, "rb") as handle:
            return _read_header(handle, os.path.getsize(path), "the array")
    except DataError as exc:
        raise DataError(exc.args[0], path) from None
    except READ_ERRORS as exc:
        raise DataError(f"not a readable .npy file ({type(exc).__name__}: {exc})", path) from None


def load_arrays(path, names) -> dict[str, np.ndarray]:
    """Arrays ``names`` of the archive ``path`` (headers checked by :func:`npz_members` first)."""
    try:
        with np.load(str(path), allow_pickle=False) as archive:
            return {name: archive[name] for name in names}
    except READ_ERRORS as exc:
        raise DataError(f"cannot read ({type(exc).__name__}: {exc})", str(path)) from None


def real(member: Member, name: str, path) -> None:
    """Refuse an array that does not hold real numbers."""
    if member.dtype.kind not in REAL_KINDS:
        what = "complex numbers" if member.dtype.kind == "c" else f"dtype {member.dtype}"
        raise DataError(f"array {name!r} holds {what}; expected real numbers (bool, integer or float)", str(path))


def first_duplicate_row(indptr: np.ndarray, indices: np.ndarray) -> int | None:
    """The first row of a CSR structure in which a column index appears twice, or None."""
    n = len(indptr) - 1
    if indices.size < 2 or n < 1:
        return None
    starts = np.zeros(indices.size, dtype=bool)
    starts[indptr[:-1][indptr[:-1] < indices.size]] = True
    rising = np.diff(indices) > 0
    if np.all(rising | starts[1:]):  # the usual file: indices rise within every row
        return None
    row = np.repeat(np.arange(n), np.diff(indptr))
    order = np.lexsort((indices, row))
    r, c = row[order], indices[order]
    same = (r[1:] == r[:-1]) & (c[1:] == c[:-1])
    return int(r[1:][same].min()) if same.any() else None
