"""MPIML_FAULT kills the chosen rank at the chosen collective call or stage, and nothing else."""

from __future__ import annotations

import sys

import pytest
from mpirun import run_mpi

from mpiml.errors import ArgumentError
from mpiml.runtime import fault

COUNTING_JOB = """
import sys
import numpy as np
import mpiml
from mpiml.runtime import fault
from mpi4py import MPI
x = np.ones(4)
for call in range(1, 7):
    print(f"rank {MPI.COMM_WORLD.rank} enters call {call}", flush=True)
    mpiml.allreduce(x)
    fault.stage("between-calls")
print(f"rank {MPI.COMM_WORLD.rank} done", flush=True)
"""


@pytest.mark.parametrize("ranks,victim,spec,last_call", [
    (2, 1, "rank=1,collective=3", 3),
    (3, 2, "rank=2,stage=between-calls,count=4", 4),
])
def test_the_armed_rank_dies_where_it_is_told(ranks, victim, spec, last_call):
    result = run_mpi(ranks, [sys.executable, "-c", COUNTING_JOB], timeout=60, env={"MPIML_FAULT": spec})
    assert not result.hung and result.returncode != 0, result.describe()
    # hydra may glue lines of different ranks together: look for the words, not for lines
    assert f"rank {victim} enters call {last_call}" in result.stdout, result.describe()
    assert f"rank {victim} enters call {last_call + 1}" not in result.stdout, result.describe()
    assert f"rank {victim} done" not in result.stdout


def test_unarmed_runs_to_the_end():
    result = run_mpi(3, [sys.executable, "-c", COUNTING_JOB], timeout=60, env={"MPIML_FAULT": ""})
    assert result.returncode == 0, result.describe()
    assert all(result.stdout.count(f"rank {r} done") == 1 for r in range(3)), result.describe()


@pytest.mark.parametrize("text", ["rank=1", "collective=2,stage=x", "rank=one,collective=2", "when=3"])
def test_a_bad_spec_is_refused(text):
    with pytest.raises((ArgumentError, ValueError)):
        fault._parse(text)
