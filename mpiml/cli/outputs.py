"""Output files of the commands: checked before any work, and never lost at the end.

:func:`check_output` refuses, before a command starts (one ``mpiml: error:`` line, exit
status 2), an output path that cannot be written: a directory where a file is wanted, a
device or other non-regular file (outputs are replaced atomically: renaming over
``/dev/null`` would replace the device), a missing or read-only folder, a full disk.

:func:`write_result` writes a finished result (a trained model) on rank 0; if the write
still fails (the disk filled up, the folder went away), it writes the result to a fallback
file, next to the target or else in the temporary folder (``$TMPDIR``), and raises one
collective error that says where the result is (exit status 2: rerunning would not help).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from mpiml.errors import ArgumentError, MpimlError

# Below this many free bytes a disk counts as full (a model or a table needs more).
MIN_FREE_BYTES = 64 * 1024


def _usage(message: str):
    from mpiml.cli.parser import UsageError

    return UsageError(message)


def check_output(path, flag: str, *, folder: bool = False) -> None:
    """Raise :class:`~mpiml.cli.parser.UsageError` unless ``path`` can be written.

    ``folder``: ``path`` is a directory the command writes files into (created if missing:
    its nearest existing parent must then be a writable directory). Pure of MPI: every
    rank reaches the same verdict on a shared file system.
    """
    if path is None:
        return
    target = Path(path).expanduser()
    if folder:
        if target.exists() and not target.is_dir():
            raise _usage(f"{flag} {path} is a file, not a folder")
        existing = target
        while not existing.exists():  # created on use: its nearest existing parent must take it
            if existing.parent == existing:
                break
            existing = existing.parent
        where = existing.resolve()
        if not where.is_dir():
            raise _usage(f"{flag} {path}: {where} is not a folder")
    else:
        if target.is_dir():
            raise _usage(f"{flag} {path} is a folder: give a file name in it")
        if target.exists() and not target.is_file():
            raise _usage(f"{flag} {path} is not a regular file (outputs are replaced atomically; give a file name)")
        where = target.resolve().parent
        if where.exists() and not where.is_dir():
            raise _usage(f"{flag} {path}: {where} is not a folder")
        if not where.is_dir():
            raise _usage(f"{flag} {path}: folder {where} does not exist")
    if not os.access(where, os.W_OK | os.X_OK):
        raise _usage(f"{flag} {path}: folder {where} is not writable")
    free = free_bytes(where)
    if free is not None and free < MIN_FREE_BYTES:
        raise _usage(f"{flag} {path}: the disk holding {where} is full ({free} bytes free)")


def free_bytes(folder) -> int | None:
    """Bytes this user may still write on ``folder``'s file system (None where unknown)."""
    try:
        stats = os.statvfs(folder)
    except (OSError, AttributeError):
        return None
    return stats.f_bavail * stats.f_frsize


def fallback_paths(path, tmpdir=None) -> list[Path]:
    """Where a result that could not be written to ``path`` goes instead, in order of preference."""
    target = Path(path).expanduser()
    stamp = time.strftime("%Y%m%dT%H%M%S")
    name = f"{target.stem or 'result'}.rescued-{stamp}-{os.getpid()}{target.suffix}"
    folder = Path(tmpdir or tempfile.gettempdir())
    return [target.parent / name, folder / f"mpiml-{name}"]


def rescue(write, path, flag: str, what: str, *, checkpoint_dir=None, tmpdir=None) -> MpimlError | None:
    """Call ``write(path)``; if it fails, ``write`` a fallback file; the error to report, or None.

    ``write(p)`` writes the result to ``p`` and raises :class:`OSError` (or an
    :class:`MpimlError`) when it cannot. The error message names where the result is:
    the fallback file, else the checkpoint folder, else that it is lost.
    """
    try:
        write(path)
        return None
    except (OSError, MpimlError) as exc:
        failure = getattr(exc, "strerror", None) or str(exc)
    for candidate in fallback_paths(path, tmpdir):
        if candidate.parent.is_dir() and not candidate.exists():
            try:
                write(candidate)
                return ArgumentError(f"cannot write {flag} {path} ({failure}); the {what} is in {candidate} instead")
            except (OSError, MpimlError):
                continue
    if checkpoint_dir:
        return ArgumentError(f"cannot write {flag} {path} ({failure}), nor a fallback file; the {what} is in the "
                             f"checkpoint in {checkpoint_dir}: rerun with --resume and another {flag}")
    return ArgumentError(f"cannot write {flag} {path} ({failure}), nor a fallback file next to it or in "
                         f"{tmpdir or tempfile.gettempdir()}: the {what} is lost")


def write_result(write, path, flag: str, what: str, comm=None, *, checkpoint_dir=None) -> None:
    """Rank 0 writes a result with ``write(path)`` (see :func:`rescue`); collective.

    Raises one agreed error on every rank when ``path`` could not be written, naming
    where the result went instead.
    """
    from mpiml.runtime.agree import raise_if_any
    from mpiml.runtime.comm import resolve_comm

    comm = resolve_comm(comm)
    error = None
    if comm.Get_rank() == 0:
        error = rescue(write, path, flag, what, checkpoint_dir=checkpoint_dir)
    raise_if_any(error, comm)
