"""examples/linear_model.py against scikit-learn's LogisticRegression on the files the example wrote."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from examples_helpers import lines, number, run_example
from sklearn.datasets import load_svmlight_files
from sklearn.linear_model import LogisticRegression

from mpiml.sgd import LinearModel

ALPHA, N_FEATURES = 1e-3, 2 ** 12  # as in the example


def objective(X, y, w, b):
    z = X @ w + b
    return float(np.mean(np.logaddexp(0.0, z) - y * z) + 0.5 * ALPHA * w @ w)


@pytest.mark.parametrize("ranks", [2, 3])
def test_text_classifier_matches_scikit_learn_on_the_written_shards(tmp_path, ranks):
    out = run_example("linear_model.py", ranks, "--dir", tmp_path).stdout
    shards = sorted((tmp_path / "train").glob("part-*.svm"))
    assert [p.name for p in shards] == [f"part-{s:05d}.svm" for s in range(4)]
    *parts, X_test, y_test = load_svmlight_files([*map(str, shards), str(tmp_path / "test.svm")],
                                                 n_features=N_FEATURES, zero_based=False)
    X, y = sp.vstack(parts[0::2]).tocsr(), np.concatenate(parts[1::2])
    assert X.shape == (4000, N_FEATURES) and X_test.shape == (1000, N_FEATURES)
    assert np.allclose(sp.linalg.norm(X, axis=1), 1.0)  # unit-length rows, as the docstring says
    assert 0.4 < y.mean() < 0.6

    ref = LogisticRegression(C=1.0 / (ALPHA * len(y)), tol=1e-10, max_iter=10_000).fit(X, y)
    best = objective(X, y, ref.coef_[0], ref.intercept_[0])
    found = lines(out, "trained by lbfgs:")
    assert len(found) == 1, out
    printed = float(found[0].rsplit("objective ", 1)[1])
    assert printed == pytest.approx(best, rel=1e-6)   # the optimum: L-BFGS to tol 1e-6
    assert number(out, "test accuracy") == pytest.approx(ref.score(X_test, y_test), abs=2.5 / len(y_test))
    assert number(out, "test accuracy") > 0.9

    # the saved model is the optimum too, and the two new sentences get their obvious topics
    saved = LinearModel.load(tmp_path / "model.npz")
    assert objective(X, y, saved.coef_, saved.intercept_) == pytest.approx(best, rel=1e-6)
    assert lines(out, "predict") == ["'the coach was happy with the team' -> sport",
                                     "'bake the bread in a hot oven' -> cooking"]
    assert lines(out, "saved model.npz; loaded on 1 rank: same predictions") == ["yes"]
