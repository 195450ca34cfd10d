"""The harness on one process: verdicts, schedules, records (serial, COMM_SELF)."""

from __future__ import annotations

import numpy as np
import pytest
from mpi4py import MPI

from mpiml.perf.harness import Schedule, check_algorithms, run_benchmark
from mpiml.perf.workloads import COLLECTIVES, Workload, exact_input


def test_check_flags_an_algorithm_whose_output_differs():
    out = np.zeros(4)
    results = {"native": [1, 2, 3, 4], "good": [1, 2, 3, 4], "bad": [1, 2, 3, 5]}

    def call(name):
        out[:] = results[name]

    workload = Workload("allreduce", 32, 4, call, lambda: out.fill(-1), lambda: out)
    assert check_algorithms(workload, ["native", "good", "bad"], MPI.COMM_SELF) == {
        "native": True, "good": True, "bad": False}


def test_schedule_counts():
    assert Schedule(iters=7).iterations(1.0) == 7
    assert Schedule(min_time=0.1, min_iters=5, max_iters=100).iterations(0.01) == 10
    assert Schedule(min_time=0.1, min_iters=5, max_iters=100).iterations(1.0) == 5
    assert Schedule(min_time=0.1, min_iters=5, max_iters=100).iterations(1e-9) == 100


@pytest.mark.parametrize("dtype", ["float32", "int32", "uint8", "float16"])
@pytest.mark.parametrize("op", ["sum", "prod", "min", "max"])
def test_exact_inputs_reduce_exactly(dtype, op):
    # 8 ranks of inputs: the float reduction equals the int64 one (no rounding anywhere).
    parts = [exact_input(1000, dtype, op, r) for r in range(8)]
    ufunc = {"sum": np.add, "prod": np.multiply, "min": np.minimum, "max": np.maximum}[op]
    got = ufunc.reduce(np.stack(parts), axis=0)
    wide = ufunc.reduce(np.stack([p.astype(np.int64) for p in parts]), axis=0)
    if np.dtype(dtype).kind != "u" or op != "sum":
        assert np.array_equal(got.astype(np.int64), wide)


@pytest.mark.parametrize("collective", COLLECTIVES)
def test_records_on_one_rank(collective):
    records = run_benchmark(collective, [8, 4096], ["auto", "native"], check=True,
                            schedule=Schedule(iters=3, warmup=1), comm=MPI.COMM_SELF)
    assert [(r["bytes"], r["algorithm"]) for r in records] == [(8, "auto"), (8, "native"),
                                                                (4096, "auto"), (4096, "native")]
    for rec in records:
        assert rec["correct"] is True and rec["iterations"] == 3
        assert rec["time_min_seconds"] <= rec["time_median_seconds"] <= rec["time_max_seconds"]
        assert rec["algbw_gbps"] == pytest.approx(rec["bytes"] / rec["time_median_seconds"] / 1e9)
    assert all(r["ratio_to_native"] == 1.0 for r in records if r["algorithm"] == "native")


def test_conditions_warn_about_oversubscription_and_load():
    from mpiml.perf.machine import conditions, warning

    facts = conditions(MPI.COMM_SELF)
    assert sum(h["ranks"] for h in facts["hosts"].values()) == 1
    quiet = {"hosts": {"a": {"ranks": 2, "cores": 2, "load_average": 0.5}}, "oversubscribed": False, "busy": False}
    assert warning(quiet) is None
    crowded = {"hosts": {"a": {"ranks": 4, "cores": 2, "load_average": 6.0}}, "oversubscribed": True, "busy": True}
    text = warning(crowded)
    assert "oversubscribed" in text and "6.0 on 2 cores" in text
