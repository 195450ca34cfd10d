"""The job-family probe of ``mpiml tune`` (mpiml.plan.probe.job_probes) on several ranks: each family's real
step loop measured alone and on all ranks, the same table on every rank, entered at the node's ranks per core."""

from __future__ import annotations

import pytest

TINY = (("lbfgs-model", dict(rows=300, features=400, density=0.05, strategy="lbfgs", parallel="model", max_iter=4)),
        ("dsgd", dict(users=200, items=60, ratings=2000, rank=4, iters=3)))


@pytest.mark.mpi
def test_job_probes_enter_each_familys_scale_and_excess_at_this_ratio():
    from mpi4py import MPI

    from mpiml.plan import Calibration
    from mpiml.plan.probe import _node_ratio, job_probes

    comm = MPI.COMM_WORLD
    before = Calibration(job_excess=(("als", ((1.0, 1e-4),)),), job_scale=(("als", 1.5),))
    found = job_probes(comm, before, probes=TINY)
    assert comm.allgather(found) == [found] * comm.size   # agreed
    scales = dict(found.job_scale)
    assert set(scales) == {"als", "lbfgs-model", "dsgd"} and scales["als"] == 1.5
    assert all(0 < s < 100 for s in scales.values())
    excess = dict(found.job_excess)
    assert excess["als"] == ((1.0, 1e-4),)   # the families not probed are kept
    if comm.size == 1:
        assert set(excess) == {"als"}        # no collective calls to price on one rank
    else:
        ratio = _node_ratio(comm)
        for name in ("lbfgs-model", "dsgd"):
            (r, seconds), = excess[name]
            assert r == pytest.approx(max(ratio, 1.0)) and abs(seconds) < 1.0
