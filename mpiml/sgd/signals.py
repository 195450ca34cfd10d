"""Stop training cleanly on SIGTERM or SIGUSR1 (what Slurm sends before a time limit).

:func:`stop_on_signals` installs handlers that only set a flag; the trainer carries the
flag as a vote in its next collective exchange, so every rank stops after the same
update, rank 0 writes a checkpoint, and ``mpiml sgd`` exits with status 3
(:data:`mpiml.cli.sgd.EXIT_STOPPED`): "stopped early, resume with ``--resume``".
"""

from __future__ import annotations

import contextlib
import signal

SIGNALS = ("SIGTERM", "SIGUSR1")


class StopFlag:
    """Callable: True once one of the signals arrived."""

    def __init__(self):
        self.signal = None

    def __call__(self) -> bool:
        return self.signal is not None

    def _handler(self, signum, frame):
        self.signal = signal.Signals(signum).name


@contextlib.contextmanager
def stop_on_signals(names=SIGNALS):
    """Within the block, the named signals set the yielded :class:`StopFlag` instead of killing."""
    flag = StopFlag()
    previous = {}
    for name in names:
        number = getattr(signal, name, None)
        if number is not None:
            previous[number] = signal.signal(number, flag._handler)
    try:
        yield flag
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
