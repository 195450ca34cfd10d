"""The harness itself: a failure on one rank fails the run, a hang is reported as one."""

from __future__ import annotations

import sys
from pathlib import Path

from mpirun import run_mpi

FAIL_ON_RANK_2 = """
from mpi4py import MPI
import sys
from pathlib import Path
comm = MPI.COMM_WORLD
comm.Barrier()
sys.exit(1 if comm.rank == 2 else 0)
"""

HANG = """
from mpi4py import MPI
comm = MPI.COMM_WORLD
if comm.rank != 0:
    comm.recv(source=0)  # rank 0 never sends
"""


def test_one_failing_rank_fails_the_run():
    result = run_mpi(3, [sys.executable, "-c", FAIL_ON_RANK_2], timeout=120)
    assert not result.hung
    assert result.returncode != 0, result.describe()


def test_assertion_failing_on_one_rank_fails_pytest_under_mpiexec(tmp_path):
    test_file = tmp_path / "test_one_rank_fails.py"
    test_file.write_text(
        "import pytest\nfrom mpi4py import MPI\n\n"
        "@pytest.mark.mpi\ndef test_rank_two_disagrees():\n"
        "    assert MPI.COMM_WORLD.rank != 2\n"
    )
    argv = [sys.executable, "-m", "pytest", "--with-mpi", "-q", "-p", "no:cacheprovider",
            "--rootdir", str(tmp_path), str(test_file)]
    result = run_mpi(3, argv, timeout=120, cwd=tmp_path)
    assert not result.hung
    assert result.returncode != 0, result.describe()
    assert "1 failed" in result.stdout, result.describe()


def test_all_ranks_succeeding_passes():
    result = run_mpi(3, [sys.executable, "-c", FAIL_ON_RANK_2.replace("== 2", "== 99")], timeout=120)
    assert result.returncode == 0, result.describe()


def test_hang_is_killed_and_reported_with_rank_count():
    result = run_mpi(2, [sys.executable, "-c", HANG], timeout=5)
    assert result.hung
    assert result.seconds < 60
    assert "mpiexec -n 2: hung" in result.describe()


def test_a_failure_on_one_rank_stops_every_rank_before_the_next_test(tmp_path):
    # A failed test may leave the ranks out of step; the tests after it would then fail or hang for its sake.
    test_file = tmp_path / "test_out_of_step.py"
    test_file.write_text(
        "import pathlib\nimport pytest\nfrom mpi4py import MPI\n\n"
        "@pytest.mark.mpi\ndef test_rank_one_fails():\n"
        "    assert MPI.COMM_WORLD.rank != 1\n\n"
        "@pytest.mark.mpi\ndef test_next():\n"
        "    pathlib.Path(f'next-ran-{MPI.COMM_WORLD.rank}').touch()\n"
    )
    argv = [sys.executable, "-m", "pytest", "--with-mpi", "-q", "-p", "no:cacheprovider", "-p", "conftest",
            "--rootdir", str(tmp_path), str(test_file)]
    result = run_mpi(3, argv, timeout=120, cwd=tmp_path, env={"PYTHONPATH": str(Path(__file__).parent)})
    assert not result.hung, result.describe()
    assert result.returncode != 0, result.describe()
    assert "stopping, as the ranks may be out of step" in result.stdout, result.describe()
    assert not list(tmp_path.glob("next-ran-*")), result.describe()  # test_next ran on no rank
