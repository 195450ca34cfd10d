"""Partitioned factors at p ranks: the same factors as replicated ones, and resume at another p."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from mpi4py import MPI
from mpi_helpers import agree, shared_tmp, sub_comm  # noqa: F401 - shared_tmp is a fixture
from partitioned_cases import mismatches, ratings

from mpiml.errors import DivergenceError
from mpiml.mf import ALS, partitioned
from mpiml.mf.transport import gather_rows


@pytest.mark.mpi
def test_partitioned_factors_equal_replicated_ones(monkeypatch):
    comm = MPI.COMM_WORLD
    bad = mismatches(comm)
    agree(comm, not bad, bad)
    # "auto" with its size floor removed: every rank takes the same verdict from the routed rows
    monkeypatch.setattr(partitioned, "AUTO_PARTITIONS", True)
    monkeypatch.setattr(partitioned, "AUTO_MIN_BYTES", 0)
    data = ratings(comm, 60, 30, 600, 3)
    model = ALS(rank=2, iters=1, factors="auto").fit(data, comm=comm)
    routes = comm.allgather(model.factors_layout_)
    expected = "replicated" if comm.size == 1 else None
    agree(comm, len(set(routes)) == 1 and expected in (None, routes[0]), routes)
    # a singular row solve on one rank stops every rank with the same error
    try:
        ALS(rank=6, reg=0.0, iters=1, biases=False, factors="partitioned").fit(data, comm=comm)
        message = None
    except DivergenceError as exc:
        message = str(exc)
    agree(comm, message is not None and "non-finite" in message, message)
    agree(comm, len(set(comm.allgather(message))) == 1, message)


@pytest.mark.mpi
def test_checkpoint_at_one_rank_count_resumes_at_others(shared_tmp):  # noqa: F811
    world = MPI.COMM_WORLD
    first = min(3, world.size)
    later = sorted({2, 5} & set(range(1, world.size + 1))) or [1]
    for cls, kw in [(ALS, dict(rank=3, reg=0.05, biases=True))]:
        # uninterrupted, on one rank (no collectives: cheap); ALS gives the same factors at any p
        straight = cls(iters=4, factors="replicated", **kw).fit(ratings(MPI.COMM_SELF, 60, 30, 600, 3),
                                                                 comm=MPI.COMM_SELF)
        directory = shared_tmp / f"{cls.__name__}-{first}"
        with sub_comm(first) as sub:
            if sub is not None:
                cls(iters=2, factors="partitioned", checkpoint_dir=str(directory), **kw).fit(
                    ratings(sub, 60, 30, 600, 3), comm=sub)
        world.Barrier()
        for size in later:
            copy = shared_tmp / f"{cls.__name__}-{first}-to-{size}"
            if world.rank == 0:
                shutil.copytree(directory, copy, ignore=shutil.ignore_patterns("mpiml.lock"))
            world.Barrier()
            with sub_comm(size) as sub:
                ok = True
                if sub is not None:
                    resumed = cls(iters=4, factors="partitioned", checkpoint_dir=str(copy), resume=True, **kw).fit(
                        ratings(sub, 60, 30, 600, 3), comm=sub)
                    p, q = gather_rows(resumed.user_block_, sub), gather_rows(resumed.item_block_, sub)
                    if sub.rank == 0:
                        ok = (len(resumed.history_) == 4
                              and np.allclose(p, straight.user_factors_, rtol=1e-7, atol=1e-10)
                              and np.allclose(q, straight.item_factors_, rtol=1e-7, atol=1e-10))
            agree(world, ok, (cls.__name__, first, size))
