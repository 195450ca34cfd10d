"""An exclusive lock on a checkpoint directory, held by one process (rank 0 of a run) for the run.

The lock is a file ``DIR/mpiml.lock`` created with ``O_EXCL`` and holding the owner's host
name, PID and process start time. Another run finds it and is refused, with the owner
named. A lock whose owner is gone (same host, the PID no longer runs, or runs a process
started at another time) is stale: it is taken over, so a job killed with ``kill -9``
does not block its restart. A lock of an earlier run of the same Slurm job (the same
``SLURM_JOB_ID`` and an earlier generation: a lower ``SLURM_RESTART_COUNT`` (the job was
requeued, maybe onto another node, and Slurm runs one instance of a job at a time), or a lower
``MPIML_RUN_ATTEMPT`` (``mpiml run`` restarted the ranks inside the job after a failure,
maybe without the node that held rank 0) is taken over too. Any other lock from another host is never taken over (that host's processes cannot
be seen from here): the message says which host and PID hold it, and to remove the file if
that job is surely gone.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from pathlib import Path

from mpiml.errors import CheckpointError

LOCK = "mpiml.lock"


def _start_time(pid: int) -> str | None:
    """The start time of process ``pid`` (Linux: field 22 of /proc/PID/stat), or None if unknown."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[-1].split()[19]


def _alive(pid: int, start: str | None) -> bool:
    """Whether ``pid`` runs on this host and is the process that was started at ``start``."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        pass
    now = _start_time(pid)
    return start is None or now is None or now == start


def _restart() -> int:
    """``SLURM_RESTART_COUNT`` (0 outside Slurm or on a job's first run)."""
    text = os.environ.get("SLURM_RESTART_COUNT", "")
    return int(text) if text.isdigit() else 0


def _attempt() -> int:
    """``MPIML_RUN_ATTEMPT``: the attempt of ``mpiml run`` that started this process (1 without it)."""
    text = os.environ.get("MPIML_RUN_ATTEMPT", "")
    return int(text) if text.isdigit() else 1


def _generation(owner: dict) -> tuple[int, int]:
    """The lock owner's (restart count, attempt); older locks without them count as this run's."""
    restart, attempt = owner.get("restart"), owner.get("attempt", 1)
    return (restart if isinstance(restart, int) else _restart(), attempt if isinstance(attempt, int) else 1)


def _owner(path: Path) -> dict | None:
    """The lock's content, or None if it vanished; unreadable content counts as a foreign owner."""
    try:
        owner = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {"host": "?", "pid": "?"}
    return owner if isinstance(owner, dict) else {"host": "?", "pid": "?"}


class DirectoryLock:
    """``with DirectoryLock(directory, command): ...``, or :meth:`acquire` / :meth:`release`."""

    def __init__(self, directory, command: str = "mpiml"):
        self.directory = Path(directory)
        self.path = self.directory / LOCK
        self.command = command
        self.held = False
        self.took_over = None  # the stale owner replaced, if any

    def _mine(self) -> dict:
        pid = os.getpid()
        return {"host": socket.gethostname(), "pid": pid, "start": _start_time(pid), "command": self.command,
                "job": os.environ.get("SLURM_JOB_ID") or None, "restart": _restart(), "attempt": _attempt()}

    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as handle:
            json.dump(self._mine(), handle)
            handle.flush()
            os.fsync(handle.fileno())
        return True

    def _refuse(self, owner: dict):
        host, pid = owner.get("host", "?"), owner.get("pid", "?")
        what = owner.get("command") or "a run"
        here = socket.gethostname()
        hint = ("wait for it to end, or use another checkpoint directory" if host == here else
                f"if no job runs there any more, remove {self.path}")
        raise CheckpointError(f"checkpoint directory {self.directory} is in use by {what} (host {host}, PID {pid}; "
                              f"lock {self.path}): {hint}")

    def acquire(self) -> "DirectoryLock":
        """Take the lock; raises :class:`CheckpointError` naming the holder if another live run has it."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            for _ in range(5):  # a few rounds: another process may take over the same stale lock
                if self._create():
                    self.held = True
                    return self
                owner = _owner(self.path)
                if owner is None:
                    continue  # released meanwhile
                same_host = owner.get("host") == socket.gethostname()
                pid = owner.get("pid")
                job = os.environ.get("SLURM_JOB_ID")
                restarted = bool(job) and owner.get("job") == job and _generation(owner) < (_restart(), _attempt())
                if not restarted and (not same_host or not isinstance(pid, int) or _alive(pid, owner.get("start"))):
                    self._refuse(owner)
                self._take_over(owner)
        except OSError as exc:
            raise CheckpointError(f"cannot lock checkpoint directory {self.directory}: {exc}") from exc
        self._refuse(_owner(self.path) or {})

    def _take_over(self, stale: dict) -> None:
        """Move a stale lock aside (atomically), unless another process replaced it meanwhile."""
        aside = self.path.with_name(f"{LOCK}.stale-{os.getpid()}")
        with contextlib.suppress(FileNotFoundError):
            os.replace(self.path, aside)
            if _owner(aside) == stale:
                aside.unlink()
                self.took_over = stale
            else:  # someone else's fresh lock: put it back if the place is still free
                with contextlib.suppress(FileExistsError):
                    os.link(aside, self.path)
                aside.unlink()

    def release(self) -> None:
        """Give the lock up (only if this process holds it)."""
        if not self.held:
            return
        self.held = False
        owner = _owner(self.path)
        if owner is not None and owner.get("pid") == os.getpid() and owner.get("host") == socket.gethostname():
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
