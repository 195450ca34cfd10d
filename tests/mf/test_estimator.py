"""What one algorithm does beyond the shared contract (test_contract.py), at one rank."""

from __future__ import annotations

import numpy as np

from mpiml.data.ratings import RatingsShard
from mpiml.data.synthetic_ratings import SyntheticSpec, synthetic_ratings
from mpiml.mf import ALS, FactorModel, ImplicitALS

SPEC = SyntheticSpec(users=60, items=30, ratings=900, rank=3, noise=0.1, seed=3)


def test_als_fold_in_solves_the_weighted_ridge_system_of_the_user_row():
    model = ALS(rank=3, reg=0.05, iters=3, biases=False).fit(synthetic_ratings(SPEC))
    items, ratings = model.item_ids_[[1, 4, 7, 9]], np.array([4.0, 3.0, 5.0, 2.0])
    x = model.fold_in(items, ratings, user=10**5)
    q = model.item_factors_[[1, 4, 7, 9]]
    expected = np.linalg.solve(q.T @ q + 0.05 * 4 * np.eye(3), q.T @ (ratings - model.global_mean_))
    np.testing.assert_allclose(x, expected, rtol=1e-10)


def test_implicit_fold_in_solves_the_confidence_weighted_system():
    model = ImplicitALS(rank=3, reg=0.5, iters=2, alpha=2.0, dtype="float64").fit(synthetic_ratings(SPEC))
    chosen, strengths = [0, 5, 6, 20], np.array([3.0, 1.0, 0.0, 2.0])
    x = model.fold_in(model.item_ids_[chosen], strengths)
    y, yu = model.item_factors_, model.item_factors_[chosen]
    confidence, preference = 1 + 2.0 * np.abs(strengths), (strengths > 0).astype(float)
    a = y.T @ y + yu.T @ np.diag(confidence - 1) @ yu + 0.5 * np.eye(3)
    np.testing.assert_allclose(x, np.linalg.solve(a, yu.T @ (confidence * preference)), rtol=1e-9)


def test_evaluate_drops_cold_start_pairs_or_reports_nan():
    data = synthetic_ratings(SPEC)
    model = ALS(rank=3, reg=0.05, iters=3).fit(data)
    test = RatingsShard.from_arrays([data.users[0], 10**6], [data.items[0], data.items[0]], [3.0, 3.0])
    result = model.evaluate(test)
    assert result["count"] == 1 and result["cold_start_dropped"] == 1
    assert np.isclose(result["rmse"], abs(model.predict(data.users[:1], data.items[:1])[0] - 3.0))
    model.set_params(cold_start="nan")
    assert np.isnan(model.evaluate(test)["rmse"])


def test_a_model_with_reg_auto_saves_the_reg_it_chose(tmp_path):
    data = synthetic_ratings(SPEC)
    model = ALS(rank=3, reg="auto", reg_grid=[1.0, 0.01, 0.1], iters=3).fit(data)
    assert model.reg_ in (0.01, 0.1, 1.0) and model.fit_info_["reg"] == model.reg_
    assert model.reg_grid == [1.0, 0.01, 0.1]  # stored as given; the search runs from the smallest
    assert [t["reg"] for t in model.fit_info_["reg_search"]] == [0.01, 0.1, 1.0]
    model.save(tmp_path / "auto.npz")
    loaded = FactorModel.load(tmp_path / "auto.npz")
    assert loaded.reg == "auto" and loaded.reg_ == model.reg_ and loaded.reg_grid == [0.01, 0.1, 1.0]
    items, ratings = model.item_ids_[:4], np.array([4.0, 3.0, 5.0, 2.0])
    np.testing.assert_allclose(loaded.fold_in(items, ratings), model.fold_in(items, ratings))
