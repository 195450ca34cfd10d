"""Abort the whole job when one rank fails, so no other rank waits forever."""

from __future__ import annotations

import os
import sys
import time
import traceback

# Hydra's proxy forwards a rank's stderr through a pipe; when MPI_Abort kills the job at once,
# the proxy can be torn down before it reads what this rank just wrote (3 of 60 runs lost the
# whole traceback here). A short pause on this failure path lets the message reach the user.
STDERR_DRAIN_SECONDS = 0.5

from mpiml.errors import MpimlError, Preempted


def run_or_abort(main, *args, **kwargs):
    """Call ``main(*args, **kwargs)``; on an uncaught exception end the whole MPI job.

    A collective :class:`MpimlError` (raised identically on every rank) ends each rank
    with exit status 2 (3 for :class:`~mpiml.errors.Preempted`) and a one-line
    message from rank 0. Ctrl-C (SIGINT) stops a job at its next safe point with a
    checkpoint where it watches for preemption (:mod:`mpiml.runtime.preempt`), else ends
    it at once (exit status 130). Any other exception prints a
    rank-tagged traceback and calls ``MPI_Abort`` on COMM_WORLD, which brings every rank
    down within seconds instead of leaving the others blocked in a collective.
    """
    from mpiml.runtime import preempt

    preempt.INTERRUPT["stops"] = True  # Ctrl-C checkpoints first where a PreemptionWatch is on
    try:
        return main(*args, **kwargs)
    except SystemExit:
        raise
    except KeyboardInterrupt:
        _abort(130, None)
    except MpimlError as exc:
        if exc.collective:
            from mpiml.runtime.preempt import EXIT_PREEMPTED

            preempted = isinstance(exc, Preempted)
            if _world_rank() in (0, None):
                label = "preempted" if preempted else "error"
                print(f"mpiml: {label}: {exc}", file=sys.stderr, flush=True)
            sys.exit(EXIT_PREEMPTED if preempted else 2)
        _abort(1, exc)
    except BaseException as exc:  # noqa: BLE001 - anything else must bring the job down
        _abort(1, exc)


def _world_rank():
    from mpi4py import MPI

    return MPI.COMM_WORLD.Get_rank() if MPI.Is_initialized() and not MPI.Is_finalized() else None


def _abort(code: int, exc: BaseException | None) -> None:
    from mpi4py import MPI

    rank = _world_rank()
    tag = f"[rank {rank}] " if rank is not None else ""
    if exc is not None:
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        sys.stderr.write("".join(tag + line + "\n" for line in text.rstrip("\n").split("\n")))
    sys.stderr.flush()
    sys.stdout.flush()
    if rank is not None and MPI.COMM_WORLD.Get_size() > 1:
        time.sleep(STDERR_DRAIN_SECONDS)
        MPI.COMM_WORLD.Abort(code)
    os._exit(code)
