"""Preemption: a signal asks a job to stop at the next safe point, checkpoint and exit.

The contract between trainers and the Slurm templates:

- ``SIGUSR1`` or ``SIGTERM`` (Slurm's ``--signal=B:USR1@secs`` forwarded by the batch script,
  or ``scancel --signal``) only sets a flag; the trainer polls it between steps. In a program
  run by :func:`mpiml.runtime.abort.run_or_abort` (the ``mpiml`` commands) ``SIGINT``
  (Ctrl-C, which ``mpiexec`` forwards to every rank) does the same: the job checkpoints
  first; a second Ctrl-C makes ``mpiexec`` kill it.
- The poll is collective (:meth:`PreemptionWatch.should_stop`), so every rank stops at the
  same step even if the signal reached only some of them.
- The trainer then writes a checkpoint and raises :class:`Preempted`; the ``mpiml`` command
  exits with :data:`EXIT_PREEMPTED`, which tells the batch script to requeue the job. On
  restart the trainer resumes from the checkpoint.
"""

from __future__ import annotations

import signal

from mpiml.errors import Preempted  # noqa: F401  (older import path, used by examples/; import it from mpiml.errors)

EXIT_PREEMPTED = 3
SIGNALS = ("SIGUSR1", "SIGTERM")
# Whether SIGINT is one of them (set by run_or_abort): elsewhere Ctrl-C keeps raising
# KeyboardInterrupt, which mpiml.runtime.watchdog turns into the end of every rank.
INTERRUPT = {"stops": False}


class PreemptionWatch:
    """Installs handlers for :data:`SIGNALS` (and SIGINT, see above) that record a stop request.

    Use as a context manager around a training loop; the previous handlers come back on
    exit.
    """

    def __init__(self, comm=None):
        self._comm = comm
        self.requested = False
        self.signal_name = None
        self._previous = {}

    def _handle(self, signum, frame):
        self.requested = True
        self.signal_name = signal.Signals(signum).name

    def __enter__(self):
        for name in SIGNALS + (("SIGINT",) if INTERRUPT["stops"] else ()):
            signum = getattr(signal, name)
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
        return False

    def should_stop(self) -> bool:
        """Collective: True on every rank if any rank has received a stop signal."""
        from mpi4py import MPI

        from mpiml.runtime.comm import private_comm

        return bool(private_comm(self._comm).allreduce(int(self.requested), op=MPI.MAX))
