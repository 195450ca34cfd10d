"""The estimator API at one rank: predict, cold start, recommend, fold_in, save/load."""

from __future__ import annotations

import numpy as np
import pytest

from mpiml.data.ratings import RatingsShard
from mpiml.data.synthetic_ratings import SyntheticSpec, synthetic_ratings
from mpiml.mf import ALS, DSGD, FactorModel, ImplicitALS
from mpiml.errors import ArgumentError, DataError

SPEC = SyntheticSpec(users=60, items=30, ratings=900, rank=3, noise=0.1, seed=3)


@pytest.fixture(scope="module")
def data():
    return synthetic_ratings(SPEC)


@pytest.fixture(scope="module", params=["als", "ials", "dsgd"])
def model(request, data):
    make = {"als": lambda: ALS(rank=3, reg=0.05, iters=3, biases=True),
            "ials": lambda: ImplicitALS(rank=3, iters=2, alpha=2.0),
            "dsgd": lambda: DSGD(rank=3, iters=3)}[request.param]
    return make().fit(data)


def test_predict_is_mean_plus_dot_product_and_cold_start_policies(model, data):
    users, items = data.users[:5], data.items[:5]
    u, i = np.searchsorted(model.user_ids, users), np.searchsorted(model.item_ids, items)
    expected = model.mu + np.einsum("ij,ij->i", model.P[u], model.Q[i])
    np.testing.assert_allclose(model.predict(users, items), expected)
    unknown = np.array([10**6, users[0]]), np.array([items[0], 10**6])
    assert np.all(np.isnan(model.predict(*unknown)))
    assert np.all(model.predict(*unknown, cold_start="mean") == model.mu)


def test_recommend_excludes_rated_items_and_ranks_by_score(model, data):
    user = int(data.users[0])
    rated = set(data.items[data.users == user].tolist())
    items, scores = model.recommend(user, k=5)
    candidates = [i for i in model.item_ids.tolist() if i not in rated]
    all_scores = model.predict(np.full(len(candidates), user), np.array(candidates))
    expected = np.array(candidates)[np.argsort(-all_scores, kind="stable")[:5]]
    assert np.array_equal(items, expected) and np.all(np.diff(scores) <= 0)
    items_all, _ = model.recommend(user, k=len(model.item_ids), exclude_rated=False)
    assert rated <= set(items_all.tolist())
    with pytest.raises(ArgumentError, match="fold_in"):
        model.recommend(10**7)


def test_fold_in_solves_the_user_row_with_items_fixed():
    model = ALS(rank=3, reg=0.05, iters=3, biases=False).fit(synthetic_ratings(SPEC))
    items, ratings = model.item_ids[[1, 4, 7, 9]], np.array([4.0, 3.0, 5.0, 2.0])
    x = model.fold_in(items, ratings, user=10**5)
    q = model.Q[[1, 4, 7, 9]]
    expected = np.linalg.solve(q.T @ q + 0.05 * 4 * np.eye(3), q.T @ (ratings - model.mu))
    np.testing.assert_allclose(x, expected, rtol=1e-10)
    recs, _ = model.recommend(10**5, k=40)
    assert not set(recs.tolist()) & set(items.tolist())
    np.testing.assert_allclose(model.predict([10**5], [items[0]]), model.mu + q[0] @ x)


def test_save_and_load_give_the_same_model(model, data, tmp_path):
    model.save(tmp_path / "m.npz")
    loaded = FactorModel.load(tmp_path / "m.npz")
    assert type(loaded) is type(model) and loaded.params == model.params
    np.testing.assert_array_equal(loaded.predict(data.users, data.items), model.predict(data.users, data.items))
    assert np.array_equal(loaded.recommend(int(data.users[3]))[0], model.recommend(int(data.users[3]))[0])
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="junk.npz"):
        FactorModel.load(tmp_path / "junk.npz")


def test_evaluate_drops_cold_start_pairs(data):
    model = ALS(rank=3, reg=0.05, iters=3).fit(data)
    test = RatingsShard.from_arrays([data.users[0], 10**6], [data.items[0], data.items[0]], [3.0, 3.0])
    result = model.evaluate(test)
    assert result["count"] == 1 and result["cold_start_dropped"] == 1
    assert np.isclose(result["rmse"], abs(model.predict(data.users[:1], data.items[:1])[0] - 3.0))
    model.params["cold_start"] = "nan"
    assert np.isnan(model.evaluate(test)["rmse"])


def test_invalid_parameters_are_refused():
    with pytest.raises(ArgumentError):
        ALS(rank=0)
    with pytest.raises(ArgumentError):
        ImplicitALS(solver="lu")
    with pytest.raises(ArgumentError):
        DSGD(step="adam")
    with pytest.raises(ArgumentError):
        ALS(cold_start="zero")
    with pytest.raises(ArgumentError, match="reg must be a number >= 0, got 'auto'"):
        ImplicitALS(reg="auto")  # auto needs an RMSE to choose by: explicit models only
    with pytest.raises(ArgumentError, match='or "auto"'):
        ALS(reg="lots")
    with pytest.raises(ArgumentError):
        ImplicitALS(dtype="float16")


def test_a_model_with_reg_auto_saves_the_reg_it_chose(data, tmp_path):
    model = ALS(rank=3, reg="auto", reg_grid=[0.01, 0.1, 1.0], iters=3).fit(data)
    assert model.reg_ in (0.01, 0.1, 1.0) and model.fit_info["reg"] == model.reg_
    assert [t["reg"] for t in model.fit_info["reg_search"]] == [0.01, 0.1, 1.0]
    model.save(tmp_path / "auto.npz")
    loaded = FactorModel.load(tmp_path / "auto.npz")
    assert loaded.params["reg"] == "auto" and loaded.reg_ == model.reg_
    items, ratings = model.item_ids[:4], np.array([4.0, 3.0, 5.0, 2.0])
    np.testing.assert_allclose(loaded.fold_in(items, ratings), model.fold_in(items, ratings))
