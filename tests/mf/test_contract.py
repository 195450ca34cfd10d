"""The contract every factorization model keeps, run for each of ALS, ImplicitALS, DSGD and NOMAD.

One set of tests parametrised over the algorithms (as the ``implicit`` library's
RecommenderBase test mixin does): parameters stored unchanged and checked by ``fit``,
scikit-learn's fitted attributes, predict / evaluate / recommend / fold_in against numpy
on the fitted factors, save / load, and a checkpointed run resumed to the end equal to a
straight run. One rank; the MPI behaviour is in test_mf_mpi.py.
"""

from __future__ import annotations

import copy
import inspect
import json
import re

import numpy as np
import pytest

from mpiml.data.ratings import RatingsShard, split_fraction
from mpiml.data.synthetic_ratings import SyntheticSpec, synthetic_ratings
from mpiml.errors import ArgumentError, DataError
from mpiml.mf import ALS, DSGD, MODELS, NOMAD, FactorModel, ImplicitALS, params

SPEC = SyntheticSpec(users=60, items=30, ratings=900, rank=3, noise=0.1, seed=3)
SMALL = {"als": dict(rank=3, reg=0.05, iters=3), "ials": dict(rank=3, iters=2, alpha=2.0),
         "dsgd": dict(rank=3, iters=3), "nomad": dict(rank=3, iters=3)}
CLASSES = [ALS, ImplicitALS, DSGD, NOMAD]
# A value of each kind that no parameter of that kind accepts.
BAD = {"int": 1.5, "float": "many", "bool": "yes", "choice": "bogus", "reg": "lots", "grid": [], "path": 3,
       "callable": 3}


def small(cls, **extra):
    return cls(**{**SMALL[cls.algorithm], **extra})


@pytest.fixture(scope="module")
def data():
    return synthetic_ratings(SPEC)


@pytest.fixture(scope="module", params=CLASSES, ids=lambda cls: cls.algorithm)
def fitted(request, data):
    return small(request.param).fit(data)


def test_every_registered_model_is_under_contract():
    assert sorted(MODELS) == sorted(cls.algorithm for cls in CLASSES) == sorted(params.ALGORITHMS)


# ---------------------------------------------------------------------- parameters
@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: cls.algorithm)
def test_init_stores_the_parameters_unchanged_and_get_params_round_trips(cls):
    callback, seed = (lambda record: None), np.int64(5)
    model = small(cls, seed=seed, callback=callback)
    assert model.get_params()["seed"] is seed and model.get_params()["callback"] is callback
    assert list(model.get_params()) == [p.name for p in params.of(cls.algorithm)]
    assert cls(**model.get_params()).get_params() == model.get_params()
    assert model.set_params(iters=7) is model and model.iters == 7
    assert repr(cls(rank=3, iters=7)) == f"{cls.__name__}(rank=3, iters=7)"
    with pytest.raises(ArgumentError, match=f"{cls.algorithm}: no parameter 'bogus'"):
        model.set_params(bogus=1)
    with pytest.raises(TypeError, match="unexpected keyword argument 'bogus'"):
        cls(bogus=1)
    with pytest.raises(TypeError, match="positional argument"):
        cls(3)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: cls.algorithm)
def test_signature_and_docstring_are_the_parameter_table(cls):
    signature = inspect.signature(cls)
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in signature.parameters.values())
    assert {name: p.default for name, p in signature.parameters.items()} == params.defaults(cls.algorithm)
    assert cls().get_params() == params.defaults(cls.algorithm)
    for param in params.of(cls.algorithm):
        assert f"\n{param.name} : " in cls.__doc__


@pytest.mark.parametrize("cls, param", [(cls, p) for cls in CLASSES for p in params.of(cls.algorithm)],
                         ids=lambda x: getattr(x, "algorithm", getattr(x, "name", None)))
def test_fit_refuses_an_invalid_value_of_every_parameter(cls, param, data):
    model = small(cls, **{param.name: BAD[param.kind]})  # __init__ takes anything
    message = f"{cls.algorithm}: {param.name} must be {param.allowed(cls.algorithm)}, got {BAD[param.kind]!r}"
    with pytest.raises(ArgumentError, match=re.escape(message)):
        model.fit(data)
    assert not hasattr(model, "user_factors_")


@pytest.mark.parametrize("make, message", [
    (lambda: ALS(rank=0), "als: rank must be an integer >= 1, got 0"),
    (lambda: ALS(rank=True), "als: rank must be an integer >= 1, got True"),
    (lambda: ImplicitALS(reg="auto"), "ials: reg must be a number >= 0, got 'auto'"),
    (lambda: ALS(reg="lots"), 'als: reg must be a number >= 0 or "auto", got \'lots\''),
    (lambda: ALS(reg=float("nan")), 'als: reg must be a number >= 0 or "auto", got nan'),
    (lambda: DSGD(lr=0), "dsgd: lr must be a number > 0, got 0"),
    (lambda: DSGD(step="adam"), "dsgd: step must be one of ['bold', 'decay'], got 'adam'"),
    (lambda: ImplicitALS(solver="lu"), "ials: solver must be one of ['cholesky', 'cg'], got 'lu'"),
    (lambda: ImplicitALS(dtype="float16"), "ials: dtype must be one of ['float32', 'float64'], got 'float16'"),
    (lambda: ALS(cold_start="zero"), "als: cold_start must be one of ['drop', 'nan', 'mean'], got 'zero'"),
    (lambda: ALS(biases=1), "als: biases must be True or False, got 1"),
    (lambda: ALS(reg="auto", auto_fraction=1.0), "als: auto_fraction must be a number > 0 and < 1, got 1.0"),
    (lambda: DSGD(reg="auto", reg_grid=[0.1, -0.1]), "dsgd: reg_grid must be None or a non-empty list of numbers "
                                                     ">= 0, got [0.1, -0.1]"),
])
def test_messages_say_what_a_value_must_be(make, message, data):
    with pytest.raises(ArgumentError, match=re.escape(message)):
        make().fit(data)


# ------------------------------------------------------------ fitted attributes
def test_fit_leaves_scikit_learn_fitted_attributes(fitted, data):
    model, algorithm = fitted, fitted.algorithm
    users, items = np.unique(data.users), np.unique(data.items)
    assert np.array_equal(model.user_ids_, users) and np.array_equal(model.item_ids_, items)
    assert model.user_factors_.shape[0] == users.size and model.item_factors_.shape[0] == items.size
    assert model.user_factors_.shape[1] == model.item_factors_.shape[1] >= 3
    expected_mean = 0.0 if model.implicit else data.values.mean()
    assert model.global_mean_ == pytest.approx(expected_mean, rel=1e-12)
    assert model.reg_ == model.get_params()["reg"]
    assert len(model.history_) == model.fit_info_["iterations"] == SMALL[algorithm]["iters"]
    assert model.fit_info_["users"] == users.size and model.fit_info_["train_ratings"] == len(data)
    # the names of 0.1.0, read-only for one version
    assert model.P is model.user_factors_ and model.Q is model.item_factors_
    assert model.user_ids is model.user_ids_ and model.item_ids is model.item_ids_
    with pytest.raises(AttributeError, match="property 'P'"):
        model.P = None


@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: cls.algorithm)
def test_a_model_that_was_not_fitted_says_so(cls, tmp_path):
    model = cls()
    for call in (lambda: model.predict([1], [1]), lambda: model.recommend(1), lambda: model.fold_in([1], [1.0]),
                 lambda: model.save(tmp_path / "m.npz")):
        with pytest.raises(ArgumentError, match=f"this {cls.__name__} is not fitted yet"):
            call()


def test_callback_sees_every_iteration_record(data):
    for cls in CLASSES:
        seen = []
        model = small(cls, callback=seen.append).fit(data)
        assert seen == model.history_ and [r["iteration"] for r in seen] == list(range(1, len(seen) + 1))


def test_the_same_parameters_fit_the_same_model(fitted, data):
    again = type(fitted)(**fitted.get_params()).fit(data)
    np.testing.assert_array_equal(again.user_factors_, fitted.user_factors_)
    np.testing.assert_array_equal(again.item_factors_, fitted.item_factors_)


# ---------------------------------------------------------------------- using
def test_predict_is_the_mean_plus_a_dot_product_and_cold_start_policies(fitted, data):
    model = fitted
    users, items = data.users[:5], data.items[:5]
    u, i = np.searchsorted(model.user_ids_, users), np.searchsorted(model.item_ids_, items)
    expected = model.global_mean_ + np.einsum("ij,ij->i", model.user_factors_[u], model.item_factors_[i])
    np.testing.assert_allclose(model.predict(users, items), expected, rtol=1e-6)
    unknown = np.array([10**6, users[0]]), np.array([items[0], 10**6])
    assert np.all(np.isnan(model.predict(*unknown)))
    assert np.all(model.predict(*unknown, cold_start="mean") == model.global_mean_)
    with pytest.raises(ArgumentError, match="cold_start must be one of"):
        model.predict(*unknown, cold_start="zero")


def test_recommend_excludes_rated_items_and_ranks_by_score(fitted, data):
    model = fitted
    user = int(data.users[0])
    rated = set(data.items[data.users == user].tolist())
    items, scores = model.recommend(user, k=5)
    candidates = [i for i in model.item_ids_.tolist() if i not in rated]
    all_scores = model.predict(np.full(len(candidates), user), np.array(candidates))
    expected = np.array(candidates)[np.argsort(-all_scores, kind="stable")[:5]]
    assert np.array_equal(items, expected) and np.all(np.diff(scores) <= 0)
    np.testing.assert_allclose(scores, np.sort(all_scores)[::-1][:5], rtol=1e-6)
    items_all, _ = model.recommend(user, k=len(model.item_ids_), exclude_rated=False)
    assert rated <= set(items_all.tolist())
    with pytest.raises(ArgumentError, match="unknown user 10000000: fold_in their ratings first"):
        model.recommend(10**7)


def test_fold_in_adds_a_user_that_predict_and_recommend_know(fitted):
    model = copy.deepcopy(fitted)  # fold_in changes the model
    chosen = [1, 4, 7, 9]
    items, ratings = model.item_ids_[chosen], np.array([4.0, 3.0, 5.0, 2.0])
    row = model.fold_in(items, ratings, user=10**5)
    assert row.shape == (model.item_factors_.shape[1],) and np.all(np.isfinite(row))
    np.testing.assert_allclose(model.predict(np.full(len(items), 10**5), items),
                               model.global_mean_ + model.item_factors_[chosen] @ row, rtol=1e-6)
    recs, _ = model.recommend(10**5, k=model.item_ids_.size)
    assert not set(recs.tolist()) & set(items.tolist())
    assert set(recs.tolist()) | set(items.tolist()) == set(model.item_ids_.tolist())
    np.testing.assert_array_equal(model.fold_in(items, ratings), row)  # without user=: nothing is added
    with pytest.raises(ArgumentError, match="user 100000 is already in the model"):
        model.fold_in(items, ratings, user=10**5)


def test_evaluate_against_numpy_on_the_predictions(fitted, data):
    model = fitted
    _, test = split_fraction(data, 0.2, seed=4)
    result = model.evaluate(test, k=5)
    if model.implicit:
        for key in ("precision_at_5", "recall_at_5", "ndcg_at_5", "map_at_5"):
            assert 0.0 <= result[key] <= 1.0
        assert result["ranked_users"] > 0 and "rmse" not in result
    else:
        error = model.predict(test.users, test.items) - test.values
        assert result["count"] == len(test) and result["cold_start_dropped"] == 0
        assert result["rmse"] == pytest.approx(np.sqrt(np.mean(error**2)), rel=1e-12)
        assert result["mae"] == pytest.approx(np.mean(np.abs(error)), rel=1e-12)
        assert "ndcg_at_5" in model.evaluate(test, k=5, ranking=True)


# ---------------------------------------------------------------------- storage
def test_save_and_load_give_the_same_model(fitted, data, tmp_path):
    model = fitted
    model.save(tmp_path / "m.npz")
    loaded = FactorModel.load(tmp_path / "m.npz")
    assert type(loaded) is type(model) and loaded.get_params() == model.get_params()
    assert loaded.reg_ == model.reg_
    np.testing.assert_array_equal(loaded.predict(data.users, data.items), model.predict(data.users, data.items))
    assert np.array_equal(loaded.recommend(int(data.users[3]))[0], model.recommend(int(data.users[3]))[0])
    np.testing.assert_array_equal(loaded.fold_in(model.item_ids_[:3], [4.0, 2.0, 5.0]),
                                  model.fold_in(model.item_ids_[:3], [4.0, 2.0, 5.0]))
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="junk.npz: cannot read model"):
        FactorModel.load(tmp_path / "junk.npz")


def _rewrite_config(source, target, change):
    with np.load(source, allow_pickle=False) as arrays:
        contents = dict(arrays)
    config = json.loads(str(contents["config"]))
    change(config)
    contents["config"] = np.array(json.dumps(config))
    np.savez(target, **contents)


def test_load_skips_parameters_of_older_versions_and_refuses_other_formats(fitted, data, tmp_path):
    fitted.save(tmp_path / "m.npz")
    _rewrite_config(tmp_path / "m.npz", tmp_path / "old.npz", lambda c: c["params"].update(batch=64))
    loaded = FactorModel.load(tmp_path / "old.npz")
    np.testing.assert_array_equal(loaded.predict(data.users, data.items), fitted.predict(data.users, data.items))
    _rewrite_config(tmp_path / "m.npz", tmp_path / "new.npz", lambda c: c.update(format=2))
    with pytest.raises(DataError, match="new.npz: not an mpiml model"):
        FactorModel.load(tmp_path / "new.npz")
    _rewrite_config(tmp_path / "m.npz", tmp_path / "bad.npz", lambda c: c["params"].update(rank=-1))
    with pytest.raises(DataError, match="bad.npz: the saved parameters are invalid: .*rank must be an integer"):
        FactorModel.load(tmp_path / "bad.npz")


@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: cls.algorithm)
def test_a_checkpointed_run_resumed_to_the_end_equals_a_straight_run(cls, data, tmp_path):
    straight = small(cls, iters=4).fit(data)
    small(cls, iters=2, checkpoint_dir=tmp_path).fit(data)
    resumed = small(cls, iters=4, checkpoint_dir=tmp_path, resume=True).fit(data)
    assert len(resumed.history_) == 4
    assert [h["objective"] for h in resumed.history_[:2]] == [h["objective"] for h in straight.history_[:2]]
    np.testing.assert_allclose(resumed.user_factors_, straight.user_factors_, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(resumed.item_factors_, straight.item_factors_, rtol=1e-12, atol=1e-14)


def test_a_shard_without_ratings_is_a_data_error():
    for cls in CLASSES:
        with pytest.raises(DataError, match="no training ratings on any rank"):
            cls(rank=2).fit(RatingsShard.from_arrays([], [], []))
