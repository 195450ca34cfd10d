"""Progress of long phases, and one-line notes, on rank 0's stderr.

A :class:`Phase` says nothing for its first ``delay`` seconds (2 by default), so short
phases stay silent; after that it shows, on a terminal, a bar with the share done and the
time left (redrawn in place), and otherwise (a pipe, a log file, under ``mpiexec``) one
line every ``every`` seconds (10 by default). It never writes to stdout, so ``--json``
output stays one object. A daemon thread keeps time, so a phase with no way to report
its share (a library call) still says that it is running and for how long.

``MPIML_PROGRESS=never`` silences phases, ``always`` shows them from the start (and lets
tests see them); ``MPIML_PROGRESS_EVERY`` sets the seconds between lines.
"""

from __future__ import annotations

import os
import sys
import threading
import time


# Variables launchers set to the process's rank in the job (MPICH/Hydra, Open MPI, PMIx, Slurm).
RANK_VARIABLES = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "SLURM_PROCID")


def job_rank() -> int:
    """This process's rank in the job: from MPI once initialized, else from the launcher (no MPI start-up)."""
    if "mpi4py.MPI" in sys.modules:
        from mpi4py import MPI

        if MPI.Is_initialized() and not MPI.Is_finalized():
            return MPI.COMM_WORLD.Get_rank()
    for name in RANK_VARIABLES:
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return 0


def note(message: str, stream=None) -> None:
    """One line ``mpiml: MESSAGE`` on rank 0's stderr (``wrote FILE``, ``resumed from ...``)."""
    if job_rank() == 0:
        print(f"mpiml: {message}", file=stream or sys.stderr, flush=True)


def _seconds(value: float) -> str:
    value = max(value, 0.0)
    if value < 60:
        return f"{value:.0f} s"
    minutes, seconds = divmod(int(round(value)), 60)
    return f"{minutes} min {seconds:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


class Phase:
    """One long phase (``with Phase("generating ratings", total=n) as p: ... p.update(done)``).

    Parameters
    ----------
    label : str
        What is being done, e.g. ``"measuring"``.
    total : float, optional
        The amount of work; with it, lines show the share done and the time left.
    unit : str
        The unit of ``total`` in lines (``"ratings"``); empty for none.
    stream : file, optional
        Default ``sys.stderr``.
    delay, every : float, optional
        Seconds of silence at the start; seconds between lines when ``stream`` is not a
        terminal. Default from ``MPIML_PROGRESS`` / ``MPIML_PROGRESS_EVERY``, else 2 and 10.
    enabled : bool, optional
        Default: on rank 0 unless ``MPIML_PROGRESS=never``.
    """

    def __init__(self, label: str, total: float | None = None, unit: str = "", *, stream=None,
                 delay: float | None = None, every: float | None = None, enabled: bool | None = None):
        mode = os.environ.get("MPIML_PROGRESS", "auto")
        self.label, self.total, self.unit = label, total, unit
        self.stream = stream or sys.stderr
        self.enabled = (job_rank() == 0 and mode != "never") if enabled is None else enabled
        self.delay = (0.0 if mode == "always" else 2.0) if delay is None else delay
        self.every = float(os.environ.get("MPIML_PROGRESS_EVERY", "10")) if every is None else every
        try:
            self.tty = self.stream.isatty()
        except (AttributeError, ValueError):
            self.tty = False
        self.done, self.extra = 0.0, ""
        self.shown = False
        self._started = self._last = time.monotonic()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = None
        self._width = 0

    def __enter__(self):
        self._started = self._last = time.monotonic()
        if self.enabled:
            self._thread = threading.Thread(target=self._tick, name="mpiml-progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, kind, value, traceback):
        self.finish(failed=kind is not None)

    def update(self, done: float, extra: str = "") -> None:
        """``done`` of ``total`` so far; ``extra`` is shown after it (a loss, a count)."""
        self.done, self.extra = float(done), extra
        if self.enabled and not self.tty and self.every == 0:
            self._show(time.monotonic())  # every update is a line (tests, MPIML_PROGRESS_EVERY=0)

    def advance(self, done: float, total: float) -> None:
        """``update`` with the total learnt on the way (a progress callback's ``(done, total)``)."""
        self.total = total
        self.update(done)

    def line(self, now: float) -> str:
        """The status text at time ``now`` (no newline)."""
        elapsed = now - self._started
        parts = [self.label]
        if self.total:
            share = min(self.done / self.total, 1.0)
            count = f"{self.done:,.0f}/{self.total:,.0f}{' ' + self.unit if self.unit else ''}"
            if self.tty:
                filled = int(20 * share)
                parts.append(f"[{'#' * filled}{'.' * (20 - filled)}] {share:4.0%} {count}")
            else:
                parts.append(f"{share:.0%} ({count})")
            parts.append(_seconds(elapsed))
            if 0 < share < 1:
                parts.append(f"about {_seconds(elapsed * (1 - share) / share)} left")
        else:
            parts.append(f"running for {_seconds(elapsed)}")
        if self.extra:
            parts.append(self.extra)
        return ", ".join(parts[:1]) + ": " + ", ".join(parts[1:])

    def _show(self, now: float) -> None:
        with self._lock:
            text = self.line(now)
            if self.tty:
                self._width = max(self._width, len(text))
                self.stream.write("\r" + text.ljust(self._width))
            else:
                self.stream.write(f"mpiml: {text}\n")
            self.stream.flush()
            self.shown, self._last = True, now

    def _tick(self) -> None:
        period = 0.2 if self.tty else min(max(self.every, 0.05), 1.0)
        while not self._stop.wait(period):
            now = time.monotonic()
            if now - self._started < self.delay:
                continue
            if self.tty or (self.every > 0 and (now - self._last >= self.every or not self.shown)):
                self._show(now)

    def finish(self, failed: bool = False) -> None:
        """Stop; a phase that showed anything ends with one ``done in`` line."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._thread = None
        if not self.shown:
            return
        with self._lock:
            elapsed = _seconds(time.monotonic() - self._started)
            text = f"{self.label}: {'stopped' if failed else 'done'} after {elapsed}"
            if self.tty:
                self.stream.write("\r" + " " * self._width + "\r" + text + "\n")
            else:
                self.stream.write(f"mpiml: {text}\n")
            self.stream.flush()


def announce_resume(directory, count_key: str, what: str) -> None:
    """``mpiml: resuming from WHAT N of checkpoint FILE`` from the checkpoint's manifest (rank 0), if any.

    ``count_key`` is the manifest's counter (``updates``, ``step``); nothing when there is
    no checkpoint yet (a first run with ``--resume``) or it cannot be read (the trainer
    then says why).
    """
    import json
    from pathlib import Path

    if job_rank() != 0 or not directory:
        return
    try:
        manifest = json.loads((Path(directory) / "manifest.json").read_text())
        note(f"resuming from {what} {int(manifest[count_key])} of checkpoint {Path(directory) / manifest['latest']}")
    except (OSError, ValueError, KeyError, TypeError):
        note(f"no checkpoint in {directory} yet: starting from the beginning")
