"""The real Slurm cluster shared by every test that submits jobs (started once per session)."""

from __future__ import annotations

import pytest
from localslurm import LocalCluster, skip_or_fail, why_not_here


@pytest.fixture(scope="session")
def slurm_cluster():
    """A running one-machine cluster (2 virtual nodes x 4 CPUs); stopped after the session.

    Skips where the machine cannot run Slurm, except under CI=true, where that fails:
    CI must exercise the real cluster.
    """
    reason = why_not_here()
    if reason:
        skip_or_fail(reason)
    cluster = LocalCluster(nodes=2, cpus=4)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(autouse=True)
def _no_jobs_left_behind(request):
    """After a test on the cluster, cancel what it left queued: a failed test's stuck job
    would otherwise hold the nodes and fail every later test as 'pending'."""
    yield
    if "slurm_cluster" in request.fixturenames:
        request.getfixturevalue("slurm_cluster").cancel_all()
