"""Issue 15's done-when: an allreduce algorithm written and registered here, and nowhere
else, runs through the contract, ``auto`` (by its cost formula and by a tuning file), the
benchmark harness, ``mpiml bench`` and ``mpiml model``; then it is removed again."""

from __future__ import annotations

import json

import numpy as np
import pytest
from collective_contract import check
from mpi4py import MPI
from mpi_helpers import agree

import mpiml
from mpiml.collectives import model, registry, select
from mpiml.perf.harness import Schedule, run_benchmark

NAME = "gather_to_root_then_bcast"
TAG = 97


def gather_to_root_then_bcast(transport, x, out, op, workspace):
    """Rank 0 receives every rank's vector and combines them in rank order (so any
    associative operator works), then sends the result to every rank."""
    comm, p = transport.comm, transport.size
    if transport.rank == 0:
        tmp = workspace.get("toy", x.size, x.dtype)
        np.copyto(out, x)
        for source in range(1, p):
            comm.Recv([tmp, MPI.BYTE], source=source, tag=TAG)
            op(out, tmp, out=out)
        for dest in range(1, p):
            comm.Send([out, MPI.BYTE], dest=dest, tag=TAG)
    else:
        comm.Send([x, MPI.BYTE], dest=0, tag=TAG)
        comm.Recv([out, MPI.BYTE], source=0, tag=TAG)
    return out


def honest_cost(n, p, rates):
    """p - 1 messages in, p - 1 reductions, p - 1 messages out, one after another."""
    return 2 * (p - 1) * (rates.step + n * rates.beta) + (p - 1) * n * rates.gamma


def free_cost(n, p, rates):
    return 0.0


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.delenv("MPIML_TUNING", raising=False)
    select.set_tuning(None)
    calls = []

    def counted(*args):
        calls.append(1)
        return gather_to_root_then_bcast(*args)

    registry.register("allreduce", NAME, counted, cost=honest_cost)
    try:
        yield calls
    finally:
        registry.unregister("allreduce", NAME)
        select.set_tuning(None)


def root_json(capsys, comm):
    """The one JSON object rank 0 printed, on every rank."""
    text = capsys.readouterr().out
    return comm.bcast(json.loads(text) if comm.rank == 0 else None)


@pytest.mark.mpi
def test_a_toy_allreduce_registered_in_a_test_runs_everywhere(toy, shared_tmp, capsys):
    comm = MPI.COMM_WORLD
    p = comm.size
    assert mpiml.ALGORITHMS["allreduce"][-1] == NAME

    # The contract's oracle, with every dtype, op, count and operator order.
    check("allreduce", NAME)
    agree(comm, len(toy) > 0 or p == 1, "the contract never ran the toy")

    # auto follows the cost formula: honest, the toy is never the fastest; free, it always is.
    assert NAME not in {select.choose("allreduce", "auto", n, p) for n in (8, 1 << 20)}
    repeated, out = np.arange(5.0) * comm.rank, np.empty(5)
    for _ in range(3):   # leaves a plan of repeated calls (api._plan) and a memo, which the registration drops
        mpiml.allreduce(repeated, out=out)
    registry.register("allreduce", NAME, registry.get("allreduce", NAME).run, cost=free_cost, replace=True)
    if p > 1:
        assert {select.choose("allreduce", "auto", n, p) for n in (8, 1 << 20)} == {NAME}
        before = len(toy)
        result = mpiml.allreduce(np.arange(5.0) * comm.rank)
        assert len(toy) == before + 1 and np.array_equal(result, np.arange(5.0) * (p * (p - 1) // 2))
        assert mpiml.allreduce(repeated, out=out) is out and len(toy) == before + 2
    assert model.predict(NAME, 1 << 20, 64) == pytest.approx(model.DEFAULT_PARAMS.call_overhead)
    registry.register("allreduce", NAME, registry.get("allreduce", NAME).run, cost=honest_cost, replace=True)

    # ... or a tuning file naming it for this rank count.
    path = shared_tmp / "toy-tuning.json"
    if comm.rank == 0:
        rules = {"allreduce": {str(p): [{"min_bytes": 0, "algorithm": "native"},
                                        {"min_bytes": 1000, "algorithm": NAME}]}}
        path.write_text(json.dumps({"format": "mpiml-tuning", "version": 1, "rules": rules}))
    comm.Barrier()
    large, out = np.ones(1000) * (comm.rank + 1), np.empty(1000)
    for _ in range(3):   # a plan of repeated calls and a memo, which the new tuning drops
        mpiml.allreduce(large, out=out)
    before = len(toy)
    select.set_tuning(path)
    try:
        assert [select.choose("allreduce", "auto", n, p) for n in (8, 4096)] == ["native", NAME]
        assert mpiml.allreduce(large, out=out) is out and np.array_equal(out, np.full(1000, p * (p + 1) / 2))
        agree(comm, len(toy) == before + (p > 1), "a repeated call kept its plan after set_tuning")
    finally:
        select.set_tuning(None)

    # The benchmark harness times it (its default: every registered algorithm and auto) and checks it.
    records = run_benchmark("allreduce", [8, 4096], check=True, schedule=Schedule(iters=2, warmup=1), comm=comm)
    mine = [rec for rec in records if rec["algorithm"] == NAME]
    assert [rec["bytes"] for rec in mine] == [8, 4096]
    assert all(rec["correct"] and rec["time_median_seconds"] > 0 for rec in mine), mine

    # mpiml bench and mpiml model, in this process (the CLIs' own main functions).
    from mpiml.cli import bench, model as model_cli

    assert bench.main(["allreduce", "--sizes", "64", "--iters", "2", "--warmup", "1", "--check", "--json"]) == 0
    report = root_json(capsys, comm)
    assert {(r["algorithm"], r["correct"]) for r in report["results"]} >= {(NAME, True)}
    assert model_cli.main(["--ranks", "2,1000", "--sizes", "8,1M", "--json"]) == 0
    report = root_json(capsys, comm)
    assert all(NAME in rec["predicted_seconds"] for rec in report["predictions"])


@pytest.mark.mpi
def test_the_toy_is_gone_afterwards():
    assert NAME not in mpiml.ALGORITHMS["allreduce"]
    with pytest.raises(mpiml.ArgumentError, match=f"unknown allreduce algorithm '{NAME}'"):
        mpiml.allreduce(np.ones(3), algorithm=NAME)


def reversed_order(transport, x, out, op, workspace):
    """Wrong on purpose for a non-commutative operator: combines the highest rank first."""
    gathered = transport.comm.allgather(x.copy())
    np.copyto(out, gathered[-1])
    for part in reversed(gathered[:-1]):
        op(out, part, out=out)
    return out


@pytest.mark.mpi(min_size=2)
def test_the_contract_rejects_an_algorithm_that_breaks_rank_order():
    registry.register("allreduce", "reversed_order", reversed_order, cost=honest_cost)
    try:
        with pytest.raises(AssertionError, match="non-commutative op not combined in rank order"):
            check("allreduce", "reversed_order")
    finally:
        registry.unregister("allreduce", "reversed_order")
