"""``mpiml info`` and the command's behaviour when a rank fails (bounded mpiexec runs)."""

from __future__ import annotations

import json
import re
import sys

import pytest
from mpirun import run_mpi

MPIML = [sys.executable, "-m", "mpiml"]


@pytest.mark.parametrize("ranks", [1, 3, 5])
def test_info_json_describes_the_job(ranks):
    result = run_mpi(ranks, [*MPIML, "info", "--json"], timeout=120)
    assert result.returncode == 0, result.describe()
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, "only rank 0 prints"
    facts = json.loads(lines[0])
    assert facts["ranks"] == ranks
    assert sum(facts["ranks_per_host"].values()) == ranks and facts["hosts"] == len(facts["ranks_per_host"])
    assert facts["mpi_library"] and facts["mpi4py_version"].count(".") >= 1
    assert facts["thread_level"] in {"single", "funneled", "serialized", "multiple"}
    assert all(v == 1 for v in facts["blas_threads_per_rank"].values())  # the harness pins one thread


def test_info_table_and_help():
    result = run_mpi(2, [*MPIML, "info"], timeout=120)
    assert result.returncode == 0 and "mpi_library" in result.stdout and len(re.findall(r"^ranks +2$", result.stdout, re.M)) == 1
    help_text = run_mpi(1, [*MPIML, "--help"], timeout=120)
    assert help_text.returncode == 0 and "examples:" in help_text.stdout and "info" in help_text.stdout


def test_unknown_command_is_a_usage_error():
    result = run_mpi(2, [*MPIML, "frobnicate"], timeout=120)
    assert not result.hung and result.returncode != 0
    assert "unknown command 'frobnicate'" in result.stderr


CRASH_ON_ONE_RANK = """
from mpi4py import MPI
from mpiml.runtime.abort import run_or_abort

def job():
    comm = MPI.COMM_WORLD
    if comm.rank == 1:
        raise ZeroDivisionError("rank one divides by zero")
    comm.Barrier()  # the other ranks would wait here forever without the abort

run_or_abort(job)
"""

COLLECTIVE_ERROR = """
from mpi4py import MPI
from mpiml import DataError
from mpiml.runtime.abort import run_or_abort
from mpiml.runtime.agree import raise_if_any

def job():
    comm = MPI.COMM_WORLD
    raise_if_any(DataError("bad line", "data.csv", 7) if comm.rank == comm.size - 1 else None)

run_or_abort(job)
"""


@pytest.mark.parametrize("ranks", [2, 3])
def test_uncaught_exception_on_one_rank_aborts_the_whole_job(ranks):
    result = run_mpi(ranks, [sys.executable, "-c", CRASH_ON_ONE_RANK], timeout=60)
    assert not result.hung, result.describe()
    assert result.returncode != 0
    assert result.seconds < 30
    assert "[rank 1] ZeroDivisionError: rank one divides by zero" in result.stderr, result.describe()


def test_collective_error_exits_cleanly_with_one_message():
    result = run_mpi(3, [sys.executable, "-c", COLLECTIVE_ERROR], timeout=60)
    assert not result.hung and result.returncode == 2, result.describe()
    assert result.stderr.count("mpiml: error: data.csv:7: bad line (on rank 2)") == 1, result.describe()
