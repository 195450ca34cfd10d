"""Fitting the model from measurements (serial, synthetic measurements with known answers)."""

from __future__ import annotations

import pytest

from mpiml.collectives import model
from mpiml.perf.calibrate import fit_line
from mpiml.perf.tune import explain_rows, fit_native


def test_fit_line_recovers_latency_and_rate():
    points = {n: 2e-6 + n * 1.5e-10 for n in (8, 1024, 65536, 1 << 20, 4 << 20)}
    intercept, slope = fit_line(points)
    assert intercept == pytest.approx(2e-6, rel=1e-6) and slope == pytest.approx(1.5e-10, rel=1e-6)


def test_fit_line_never_returns_negative_costs():
    intercept, slope = fit_line({8: 1e-6, 1 << 20: 0.5e-6})
    assert intercept >= 0 and slope > 0


def synthetic(params, collective, sizes, p=2):
    return [{"collective": collective, "algorithm": "native", "bytes": n, "ranks": p, "dtype": "float32",
             "time_median_seconds": model.predict("native", n, p, params, collective=collective)}
            for n in sizes]


def test_fit_native_recovers_the_extra_cost_and_the_faults():
    truth = model.ModelParams(native_extra={"allgather": 4e-10, "allreduce": 1e-10}, native_fault=7e-10)
    start = model.ModelParams(native_extra={}, native_fault=0.0)
    records = (synthetic(truth, "allgather", [1 << 20, 4 << 20, 16 << 20])
               + synthetic(truth, "allreduce", [1 << 20, 16 << 20, 64 << 20, 128 << 20]))
    fitted = fit_native(start, records)
    assert fitted.native_extra["allgather"] == pytest.approx(4e-10)
    assert fitted.native_extra["allreduce"] == pytest.approx(1e-10)
    assert fitted.native_fault == pytest.approx(7e-10)
    # Nothing measured for reduce: it keeps what it had.
    assert "reduce" not in fitted.native_extra


def test_explain_rows_compare_prediction_measurement_and_bound():
    params = model.ModelParams()
    [row] = explain_rows([{"collective": "allreduce", "algorithm": "ring", "bytes": 1 << 20, "ranks": 4,
                           "dtype": "float32", "time_median_seconds": 1e-3}], params)
    predicted = model.predict("ring", 1 << 20, 4, params)
    assert row["predicted_seconds"] == pytest.approx(predicted)
    assert row["measured_over_predicted"] == pytest.approx(1e-3 / predicted)
    assert row["efficiency"] == pytest.approx(model.lower_bound("allreduce", 1 << 20, 4, params) / 1e-3)


def test_fit_native_ignores_one_rank_runs():
    start = model.ModelParams(native_extra={"allreduce": 1e-10})
    records = [{"collective": "allreduce", "algorithm": "native", "bytes": 1 << 20, "ranks": 1, "dtype": "float32",
                "time_median_seconds": 1.0}]
    assert fit_native(start, records).native_extra == {"allreduce": 1e-10}


def test_repeated_passes_combine_to_the_median():
    from mpiml.perf.tune import combine_repeats

    def rec(median, low, high):
        return {"collective": "allreduce", "ranks": 2, "bytes": 8, "algorithm": "ring", "iterations": 5,
                "time_median_seconds": median, "time_min_seconds": low, "time_max_seconds": high}

    [combined] = combine_repeats([rec(1.0, 0.9, 1.1), rec(9.0, 8.0, 20.0), rec(1.2, 1.0, 1.3)])
    assert combined["time_median_seconds"] == 1.2  # the burst of 9.0 does not decide
    assert (combined["time_min_seconds"], combined["time_max_seconds"]) == (0.9, 20.0)
    assert combined["repeats"] == 3 and combined["iterations"] == 15
