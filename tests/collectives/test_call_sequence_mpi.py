"""Check mode: ranks in different calls raise MismatchError on every rank, naming each call site.

(A rank that skips its last calls meets the others at the end of the program: that case
needs whole jobs and is in tests/runtime/test_watchdog.py.)
"""

from __future__ import annotations

import os
import re

import numpy as np
import pytest
from mpi4py import MPI

import mpiml

HERE = os.path.basename(__file__)


@pytest.mark.mpi(min_size=2)
def test_ranks_in_different_calls_raise_on_every_rank_naming_each_call_site():
    comm = MPI.COMM_WORLD
    x = np.ones(3)
    with pytest.raises(mpiml.MismatchError, match="ranks are in different collective calls") as info:
        if comm.rank == 1:
            mpiml.bcast(x, check=True)          # the line named for rank 1
        else:
            mpiml.allreduce(x, check=True)      # the line named for the others
    message = str(info.value)
    line = test_ranks_in_different_calls_raise_on_every_rank_naming_each_call_site.__code__.co_firstlineno
    for rank in range(comm.size):
        name, offset = ("bcast", 6) if rank == 1 else ("allreduce", 8)
        assert re.search(rf"rank {rank}: {name} \(checked call #\d+\) at \S*{HERE}:{line + offset}\b", message), \
            message
    assert info.value.collective
    # nothing moved: the communicator still works, in and out of check mode
    assert mpiml.allreduce(np.ones(2), check=True).tolist() == [comm.size] * 2
    assert mpiml.allreduce(np.ones(2)).tolist() == [comm.size] * 2


@pytest.mark.mpi(min_size=2)
def test_checked_calls_are_numbered_alike_on_every_rank():
    comm = MPI.COMM_WORLD
    x = np.ones(2)
    for _ in range(3):
        mpiml.allreduce(x, check=True)
    with pytest.raises(mpiml.MismatchError) as info:
        mpiml.allreduce(np.ones(2 + (comm.rank == comm.size - 1)), check=True)
    numbers = re.findall(r"\(checked call #(\d+)\)", str(info.value))
    assert len(numbers) == 1, str(info.value)  # the ranks' records of this call carry the same number
    assert f"rank {comm.size - 1}:" in str(info.value)
