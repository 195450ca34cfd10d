"""The preemption flag: a signal on one rank stops every rank at the same poll."""

from __future__ import annotations

import os
import signal

import pytest
from mpi4py import MPI

from mpiml.runtime.preempt import PreemptionWatch


@pytest.mark.mpi
@pytest.mark.parametrize("signame", ["SIGUSR1", "SIGTERM"])
def test_signal_on_last_rank_stops_all_ranks_together(signame):
    comm = MPI.COMM_WORLD
    previous = signal.getsignal(getattr(signal, signame))
    with PreemptionWatch() as watch:
        assert not watch.should_stop()
        if comm.rank == comm.size - 1:
            os.kill(os.getpid(), getattr(signal, signame))
            assert watch.requested and watch.signal_name == signame
        assert watch.should_stop()  # on every rank, including those never signalled
    assert signal.getsignal(getattr(signal, signame)) is previous
