"""A run's checkpoint directory: locked by rank 0 for the run, refused when it would be misused.

:func:`session` is what the estimators (``mpiml sgd``, ``mpiml mf``) wrap their training
in. Collectively, before any training:

- rank 0 takes the directory's lock (:mod:`mpiml.runtime.lock`), so a second job on the
  same directory is refused, naming the host and PID that hold it (a stale lock of a
  killed job on this host is taken over, with a warning);
- temporaries of killed writers are removed;
- a fresh run (no ``resume``) refuses a directory that already holds a checkpoint, unless
  told ``overwrite``, which removes the old checkpoints first.

It yields a :class:`CheckpointDir`: the path (``os.PathLike``, printed as the path) plus
the run's fingerprint (:mod:`mpiml.runtime.fingerprint`), which the checkpoint writers
store and the readers compare. The lock is released when the block ends, however it ends.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from mpiml.errors import CheckpointError
from mpiml.runtime import checkpoint
from mpiml.runtime.lock import DirectoryLock

# When the directory comes from $MPIML_CHECKPOINT_DIR, each command uses its own subdirectory
# of it, so that mpiml sgd and mpiml mf of one job never read each other's checkpoints.
ENVIRONMENT = "MPIML_CHECKPOINT_DIR"


def from_environment(command: str, environ=None) -> str | None:
    """``$MPIML_CHECKPOINT_DIR/COMMAND`` if the variable is set (and not empty), else None."""
    base = (os.environ if environ is None else environ).get(ENVIRONMENT)
    return os.path.join(base, command) if base else None


class CheckpointDir(os.PathLike):
    """A checkpoint directory and the fingerprint of the run that uses it."""

    def __init__(self, path, fingerprint: dict | None = None):
        self.path = Path(path)
        self.fingerprint = dict(fingerprint or {})

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        return f"CheckpointDir({str(self.path)!r})"


def root_verdict(error, comm=None, bcast=None) -> None:
    """Raise rank 0's ``error`` (or nothing) on every rank, the same message everywhere (collective).

    For decisions only rank 0 can make (it alone reads and writes checkpoints); ``bcast``
    (an object broadcast from rank 0) replaces ``comm``'s.
    """
    verdict = None if error is None else (type(error), str(error))
    if bcast is not None:
        verdict = bcast(verdict)
    elif comm is not None:
        from mpiml.runtime.comm import private_comm

        verdict = private_comm(comm).bcast(verdict, root=0)
    if verdict is not None:
        cls, message = verdict
        try:
            raise cls(message, collective=True)
        except TypeError:  # not an mpiml error class
            raise CheckpointError(message, collective=True) from None


def fingerprint_of(directory) -> dict:
    """The fingerprint a :class:`CheckpointDir` carries ({} for a plain path)."""
    return directory.fingerprint if isinstance(directory, CheckpointDir) else {}


def _describe(directory: Path) -> str:
    manifest, _ = checkpoint._read_manifest(directory)
    if manifest is not None and isinstance(manifest.get("step"), int):
        return f" (step {manifest['step']})"
    return ""


def _open(directory: Path, command: str, resume: bool, overwrite: bool) -> DirectoryLock:
    lock = DirectoryLock(directory, f"mpiml {command}").acquire()
    try:
        if lock.took_over:
            checkpoint.warn(f"took over the lock of {directory} left by PID {lock.took_over.get('pid')} "
                            f"(host {lock.took_over.get('host')}), which no longer runs")
        checkpoint.remove_temporaries(directory)
        if not resume and checkpoint.has_checkpoint(directory):
            if not overwrite:
                raise CheckpointError(f"checkpoint directory {directory} already holds a checkpoint"
                                      f"{_describe(directory)}: run with --resume to continue it, or --overwrite to "
                                      "start afresh and replace it")
            checkpoint.clear(directory)
    except BaseException:
        lock.release()
        raise
    return lock


@contextlib.contextmanager
def session(path, command: str, fingerprint: dict, resume: bool = False, overwrite: bool = False, comm=None):
    """``with session(path, "sgd", fp, resume, overwrite, comm) as directory:`` (collective; see the module).

    Yields None when ``path`` is None (no checkpoints). Raises :class:`CheckpointError` on
    every rank when the directory is locked by another run, or holds a checkpoint and
    neither ``resume`` nor ``overwrite`` is given.
    """
    if path is None:
        yield None
        return
    rank = 0 if comm is None else comm.Get_rank()
    directory = Path(path)
    lock = error = None
    if rank == 0:
        try:
            lock = _open(directory, command, resume, overwrite)
        except CheckpointError as exc:
            error = exc
        except OSError as exc:
            error = CheckpointError(f"cannot use checkpoint directory {directory}: {exc}")
    root_verdict(error, comm)
    try:
        yield CheckpointDir(directory, {"command": command, **fingerprint})
    finally:
        if lock is not None:
            lock.release()
