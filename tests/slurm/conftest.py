"""The real Slurm cluster shared by every test that submits jobs (started once per session)."""

from __future__ import annotations

import os

import pytest
from localslurm import LocalCluster, why_not_here


@pytest.fixture(scope="session")
def slurm_cluster():
    """A running one-machine cluster (2 virtual nodes x 4 CPUs); stopped after the session.

    Skips where the machine cannot run Slurm, except under CI=true, where that fails:
    CI must exercise the real cluster.
    """
    reason = why_not_here()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true, but the Slurm tests cannot run: {reason}", pytrace=False)
        pytest.skip(reason)
    cluster = LocalCluster(nodes=2, cpus=4)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
