"""Test configuration shared by the serial run and the runs under mpiexec.

A plain ``pytest`` runs the serial tests and, through ``test_under_mpiexec.py``, every
test marked ``@pytest.mark.mpi`` under ``mpiexec`` at each rank count in RANK_COUNTS.
Inside those runs (``--with-mpi``) only the MPI tests are selected.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from mpi_helpers import shared_tmp  # noqa: F401  (a fixture for every test directory)

# The suite runs more ranks than cores on purpose: no oversubscription warning from every run
# (mpiml.plan.guard; its own tests turn it on). Subprocesses and mpiexec jobs inherit it.
os.environ.setdefault("MPIML_GUARD", "off")

# Examples must be the same on every rank (they drive collective calls), so generation is
# derandomized and independent of timing; no example database is shared between ranks.
settings.register_profile(
    "mpi",
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=int(os.environ.get("MPIML_HYPOTHESIS_EXAMPLES", "25")),
    suppress_health_check=list(HealthCheck),
    print_blob=False,
)
settings.register_profile("serial", deadline=None, max_examples=100)


def pytest_configure(config):
    settings.load_profile("mpi" if config.getoption("--with-mpi", default=False) else "serial")


_failed_tests: set[str] = set()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """Under mpiexec: stop every rank after the first test that failed on any rank.

    A failed test may leave the ranks out of step (one rank raised before a collective call
    that the others entered; in CI a local error on rank 0 made rank 1 fail too, one call
    later), and every later test then failed for its sake or waited, until the run's
    timeout, on a message that never came. Stopping at once reports the real failure.
    """
    yield
    comm = getattr(item.config, "outcomes_comm", None)
    if comm is None:
        return
    failed = comm.allreduce(int(item.nodeid in _failed_tests))
    if failed:
        item.session.shouldstop = (f"{item.nodeid} failed on {failed} of {comm.Get_size()} rank(s); "
                                   "stopping, as the ranks may be out of step")


def pytest_runtest_logreport(report):
    if report.failed:
        _failed_tests.add(report.nodeid)


def pytest_collection_modifyitems(config, items):
    with_mpi = config.getoption("--with-mpi", default=False)
    keep, drop = [], []
    for item in items:
        is_mpi = item.get_closest_marker("mpi") is not None
        (keep if is_mpi == with_mpi else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


# MPICH keeps each job's node-shared memory in /dev/shm under a name made from the job's PMI
# name until MPI_Finalize; the jobs these tests abort on purpose leave theirs behind, and a
# later job whose PMI name hashes alike would attach to one and fail in MPI_Init. So the
# session removes the segments that appeared while it ran and that no process maps any more.
SHM = Path("/dev/shm")
MPICH_SEGMENTS = ("mpich_shm_", "mpich_vci_")


def _mpich_segments() -> set:
    try:
        return {path.name for path in SHM.iterdir() if path.name.startswith(MPICH_SEGMENTS)}
    except OSError:
        return set()


def _mapped_segments() -> set:
    mapped = set()
    for maps in Path("/proc").glob("[0-9]*/maps"):
        try:
            text = maps.read_text()
        except OSError:  # the process ended, or is not ours to read
            continue
        mapped.update(line.split("/dev/shm/", 1)[1].split(" ")[0] for line in text.splitlines() if "/dev/shm/" in line)
    return mapped


def pytest_sessionstart(session):
    session.config.stash_mpich_segments = _mpich_segments()
    if session.config.getoption("--with-mpi", default=False):
        from mpi4py import MPI

        # The ranks compare outcomes on a communicator of their own: a test that failed
        # part-way may leave messages or calls pending on COMM_WORLD.
        session.config.outcomes_comm = MPI.COMM_WORLD.Dup()


def pytest_sessionfinish(session, exitstatus):
    if session.config.getoption("--with-mpi", default=False):
        return  # a run under mpiexec inside the suite: the outer session cleans up once
    before = getattr(session.config, "stash_mpich_segments", None)
    if before is None:
        return
    for name in _mpich_segments() - before - _mapped_segments():
        (SHM / name).unlink(missing_ok=True)
