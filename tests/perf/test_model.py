"""The cost model against its closed forms, and the properties any such model must have."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mpiml.collectives import model
from mpiml.collectives.model import ModelParams, lower_bound, predict
from mpiml.collectives.registry import ALGORITHMS

# Round numbers, so the closed forms below are easy to check by hand.
P = ModelParams(alpha=1.0, beta=0.01, gamma=0.001, copy=0.0001, step_overhead=2.0, call_overhead=10.0,
                native_fault=0.5, fault_bytes=10**9, segment_bytes=1000)


def test_ring_allreduce_closed_form():
    # 2(p-1) steps of (alpha + o), 2(p-1)/p n beta, (p-1)/p n gamma, plus the call.
    n, p = 6000, 3
    expected = 10 + 2 * 2 * 3.0 + 2 * 2 / 3 * n * 0.01 + 2 / 3 * n * 0.001
    assert predict("ring", n, p, P) == pytest.approx(expected)


def test_recursive_doubling_power_of_two_and_not():
    n = 1000
    step = 3.0 + n * 0.01 + n * 0.001
    assert predict("recursive_doubling", n, 8, P) == pytest.approx(10 + 3 * step)
    fold = (3.0 + n * 0.011) + (3.0 + n * 0.01)
    # p = 6 folds to q = 4: two exchanges plus the fold in and out.
    assert predict("recursive_doubling", n, 6, P) == pytest.approx(10 + fold + 2 * step)


def test_rabenseifner_closed_form_and_fold_cost():
    n = 8000
    at8 = 10 + 2 * 3 * 3.0 + 2 * 7 / 8 * n * 0.01 + 7 / 8 * n * 0.001
    assert predict("rabenseifner", n, 8, P) == pytest.approx(at8)
    fold = (3.0 + n * 0.011) + (3.0 + n * 0.01)
    assert predict("rabenseifner", n, 9, P) - predict("rabenseifner", n, 8, P) == pytest.approx(fold)


def test_tree_allreduce_uses_ceil_log2_steps():
    n = 100
    up, down = 3.0 + n * 0.011, 3.0 + n * 0.01
    assert predict("tree", n, 5, P) == pytest.approx(10 + 3 * (up + down))
    assert predict("tree", n, 4, P) == pytest.approx(10 + 2 * (up + down))


def test_native_is_one_python_step_plus_the_better_library_algorithm():
    n, p = 5000, 4
    doubling = 2 * (1.0 + n * 0.011)
    rabenseifner = 2 * 2 * 1.0 + 2 * 3 / 4 * n * 0.01 + 3 / 4 * n * 0.001
    expected = 10 + 2.0 + min(doubling, rabenseifner) + n * 0.0001  # + the copy of the input
    assert predict("native", n, p, P) == pytest.approx(expected)
    assert predict("native", n, p, P, in_place=True) == pytest.approx(expected - n * 0.0001)
    big = 2 * 10**9  # above fault_bytes: fresh temporaries cost native_fault per byte, in place too
    no_faults = ModelParams(**{**P.to_dict(), "fault_bytes": 10**12})
    assert predict("native", big, p, P, in_place=True) - predict("native", big, p, no_faults, in_place=True) == (
        pytest.approx(big * 0.5))


def test_pipeline_bcast_steps():
    # 2500 bytes in segments of 1000: p - 2 + 3 steps of one segment.
    assert predict("pipeline", 2500, 5, P, collective="bcast") == pytest.approx(10 + 6 * (3.0 + 1000 * 0.01))
    assert predict("binomial", 2500, 5, P, collective="bcast") == pytest.approx(10 + 3 * (3.0 + 2500 * 0.01))


def test_one_rank_is_a_copy():
    for collective, names in ALGORITHMS.items():
        for name in names:
            assert predict(name, 4000, 1, P, collective=collective) == pytest.approx(
                10 + (0 if collective == "bcast" else 4000 * 0.0001))


def test_every_algorithm_of_every_collective_has_a_model():
    for collective, names in ALGORITHMS.items():
        assert set(model.algorithms(collective)) == set(names)
    with pytest.raises(ValueError, match="no model for bcast algorithm 'ring'"):
        predict("ring", 8, 4, collective="bcast")
    with pytest.raises(ValueError, match="need p >= 1"):
        predict("ring", 8, 0)
    with pytest.raises(ValueError, match="no model for gossip algorithm 'ring'"):
        predict("ring", 8, 4, collective="gossip")


params_strategy = st.builds(
    ModelParams,
    alpha=st.floats(1e-8, 1e-4), beta=st.floats(1e-12, 1e-8), gamma=st.floats(1e-12, 1e-8),
    copy=st.floats(1e-12, 1e-8), step_overhead=st.floats(0, 1e-5), call_overhead=st.floats(0, 1e-5),
    native_fault=st.floats(0, 1e-9), segment_bytes=st.integers(1024, 1 << 24))


@given(params=params_strategy, p=st.integers(2, 100_000), n=st.integers(0, 1 << 34),
       collective=st.sampled_from(sorted(ALGORITHMS)))
def test_no_algorithm_beats_the_lower_bound(params, p, n, collective):
    bound = lower_bound(collective, n, p, params)
    for name in ALGORITHMS[collective]:
        assert predict(name, n, p, params, collective=collective) >= bound * (1 - 1e-12)


@given(params=params_strategy, p=st.integers(1, 100_000), n=st.integers(0, 1 << 33),
       collective=st.sampled_from(sorted(ALGORITHMS)))
def test_predictions_grow_with_message_size(params, p, n, collective):
    for name in ALGORITHMS[collective]:
        small = predict(name, n, p, params, collective=collective)
        large = predict(name, 2 * n + 1, p, params, collective=collective)
        assert math.isfinite(small) and 0 <= small <= large


def test_crossovers_find_the_exact_byte():
    def winner(nbytes):
        return "small" if nbytes < 5000 else "large"

    assert model.crossovers(winner, 1, 1 << 20) == [(5000, "small", "large")]


def test_defaults_give_the_measured_shape():
    # Small messages: the library (no Python steps); large: bandwidth-optimal algorithms.
    assert model.best("allreduce", 8, 64) == "native"
    assert model.best("allreduce", 64 << 20, 2) in ("ring", "rabenseifner")
    assert model.best("allreduce", 64 << 20, 1024) == "rabenseifner"  # ring's 2(p-1) steps cost too much


def test_rates_by_size_price_a_message_at_its_own_size():
    from dataclasses import replace

    from mpiml.collectives.model import DEFAULT_PARAMS, at_size, by_size

    points = [[1 << 10, 1e-11], [1 << 20, 4e-11], [16 << 20, 4e-10]]
    assert by_size(points, 10) == 1e-11 and by_size(points, 1 << 30) == 4e-10   # the ends beyond the points
    assert abs(by_size(points, 4 << 20) - (4e-11 + 0.5 * (4e-10 - 4e-11))) < 1e-20  # linear in log2(bytes)
    assert at_size(DEFAULT_PARAMS, 1 << 20) is DEFAULT_PARAMS   # no points: the constant rates
    sized = replace(DEFAULT_PARAMS, rates_by_size={"copy": points, "float32": [[1 << 10, 2e-11], [16 << 20, 8e-10]]})
    for n in (1 << 10, 16 << 20):   # at a point, the same as constant rates of that point's values
        flat = replace(DEFAULT_PARAMS, copy=by_size(points, n), gamma=by_size(sized.rates_by_size["float32"], n),
                       gamma_by_dtype={**DEFAULT_PARAMS.gamma_by_dtype,
                                       "float32": by_size(sized.rates_by_size["float32"], n)})
        for algorithm in ("ring", "recursive_doubling", "native"):
            assert predict(algorithm, n, 3, sized) == predict(algorithm, n, 3, flat)
        assert lower_bound("allreduce", n, 3, sized) == lower_bound("allreduce", n, 3, flat)
    # a cache-sized message is priced at the cache's rates, a large one at memory's
    assert predict("ring", 1 << 10, 2, sized) < predict("ring", 1 << 10, 2, replace(sized, rates_by_size={},
                                                                                      copy=4e-10, gamma=8e-10))
