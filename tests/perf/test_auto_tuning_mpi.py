"""A fake tuning file forces "auto" to an unusual algorithm, and that algorithm is what runs."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from mpi4py import MPI

import mpiml
from mpiml.collectives import registry, select


@pytest.mark.mpi
def test_auto_runs_the_algorithm_the_tuning_file_names(tmp_path_factory, monkeypatch):
    comm = MPI.COMM_WORLD
    # Rank 0 writes the file, every rank reads the same one.
    path = comm.bcast(str(tmp_path_factory.mktemp("tuning") / "t.json") if comm.rank == 0 else None)
    if comm.rank == 0:
        rules = {"allreduce": {str(p): [{"min_bytes": 0, "algorithm": "ring"},
                                        {"min_bytes": 1000, "algorithm": "tree"}] for p in range(1, 9)}}
        with open(path, "w") as handle:
            json.dump({"format": "mpiml-tuning", "version": 1, "rules": rules}, handle)
    comm.Barrier()

    ran = []
    table = registry.table("allreduce")  # every registered algorithm, wrapped to log its runs
    for name, entry in list(table.items()):
        logged = dataclasses.replace(entry, run=lambda *a, _n=name, _f=entry.run: (ran.append(_n), _f(*a))[1])
        monkeypatch.setitem(table, name, logged)
    monkeypatch.setenv("MPIML_TUNING", path)
    select.set_tuning(None)
    try:
        small = mpiml.allreduce(np.ones(10, np.float64) * comm.rank)          # 80 bytes: ring
        large = mpiml.allreduce(np.ones(1000, np.float64) * comm.rank)        # 8000 bytes: tree
    finally:
        monkeypatch.delenv("MPIML_TUNING")
        select.set_tuning(None)
    total = comm.size * (comm.size - 1) / 2
    expected = [] if comm.size == 1 else ["ring", "tree"]  # one rank: a local copy, no algorithm
    verdicts = comm.allgather((ran == expected, bool(np.all(small == total) and np.all(large == total)), ran))
    assert all(v[0] and v[1] for v in verdicts), verdicts
