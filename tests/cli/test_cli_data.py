"""Data details on the command line: svmlight index base, label column by name, matching test files."""

from __future__ import annotations

import numpy as np
import pytest
from clirun import mpiml, one_error, one_json

from mpiml.data import load_shard, synthetic
from mpiml.data.ratings import split_fraction
from mpiml.data.synthetic_ratings import SyntheticSpec, synthetic_ratings

TRAIN = "1 1:0.5 3:1\n0 2:1 3:0.2\n1 1:1 2:0.3\n0 3:1\n1 1:2 3:0.1\n0 2:2\n"  # no index 0
TEST = "1 0:0.5 2:1\n0 1:1\n1 0:1 1:0.3\n"                                      # has index 0


@pytest.fixture
def svm_files(tmp_path):
    (tmp_path / "train.svm").write_text(TRAIN)
    (tmp_path / "test.svm").write_text(TEST)
    return tmp_path / "train.svm", tmp_path / "test.svm"


@pytest.mark.parametrize("zero_based", [True, False])
def test_the_index_base_matches_scikit_learn(svm_files, zero_based):
    from sklearn.datasets import load_svmlight_file

    train, _ = svm_files
    ours = load_shard(str(train), zero_based=zero_based)
    X, y = load_svmlight_file(str(train), zero_based=zero_based)
    width = max(ours.X.shape[1], X.shape[1])
    np.testing.assert_array_equal(ours.X.toarray()[:, :width], np.pad(X.toarray(), ((0, 0), (0, width - X.shape[1]))))
    np.testing.assert_array_equal(ours.y, y)
    assert ours.zero_based is zero_based and load_shard(str(train)).zero_based is False  # auto: no index 0


@pytest.mark.parametrize("ranks", [1, 3])
def test_train_and_test_are_read_with_one_base(svm_files, ranks):
    train, test = svm_files
    # auto decides on the training file (one-based): the test file's index 0 is an error, not a silent shift.
    one_error(mpiml(ranks, "sgd", "--data", train, "--test", test, "--json", status=None),
              "test.svm:1: feature index 0 in one-based data", "--zero-based true")
    report = one_json(mpiml(ranks, "sgd", "--data", train, "--test", test, "--zero-based", "true", "--json"))
    assert report["test_accuracy"] is not None and report["rows_read"] == 6 and report["test_rows_read"] == 3


@pytest.mark.parametrize("ranks", [1, 3])
def test_label_column_by_name(tmp_path, ranks):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 2))
    y = (X[:, 0] > 0).astype(int)
    rows = "\n".join(f"{a:.6f},{label},{b:.6f}" for (a, b), label in zip(X, y))
    (tmp_path / "d.csv").write_text("a,label,b\n" + rows + "\n")
    by_name = one_json(mpiml(ranks, "sgd", "--data", tmp_path / "d.csv", "--label-column", "label", "--json"))
    by_index = one_json(mpiml(ranks, "sgd", "--data", tmp_path / "d.csv", "--label-column", "1", "--json"))
    assert by_name["train_loss"] == by_index["train_loss"] and by_name["train_accuracy"] > 0.9
    assert by_name["rows_read"] == 60 and by_name["test_rows_read"] is None
    if ranks > 1:  # a first row holding NaN is no header (the README's rule): an error naming its line
        (tmp_path / "nan.csv").write_text("nan,1,2\n" + rows + "\n")
        one_error(mpiml(ranks, "sgd", "--data", tmp_path / "nan.csv", status=None), "nan.csv:1: ", "not finite")
    one_error(mpiml(ranks, "sgd", "--data", tmp_path / "d.csv", "--label-column", "lable", status=None),
              "no column 'lable' in the header line (columns: a, label, b)")


@pytest.mark.parametrize("ranks", [1, 3])
def test_datagen_test_out_comes_from_the_same_model(tmp_path, ranks):
    one_json(mpiml(ranks, "datagen", "regression", "--n-samples", 50, "--n-features", 4, "--seed", 3, "--out",
                   tmp_path / "train.csv", "--test-out", tmp_path / "test.csv", "--test-samples", 20, "--json"))
    _, options = synthetic.parse_spec("synthetic:regression,n=50,d=4,seed=3")
    X, y = synthetic.generate("regression", options, 50, 70)  # rows after the training rows
    written = np.loadtxt(tmp_path / "test.csv", delimiter=",")
    np.testing.assert_array_equal(written, np.column_stack([y, X]))  # label first; %.17g round-trips
    spec = SyntheticSpec(users=200, items=50, ratings=3000, seed=4)
    one_json(mpiml(ranks, "datagen", "ratings", "--users", 200, "--items", 50, "--ratings", 3000, "--seed", 4,
                   "--out", tmp_path / "r.npz", "--test-out", tmp_path / "rt.npz", "--test-fraction", 0.25, "--json"))
    train, test = split_fraction(synthetic_ratings(spec), 0.25, 0)  # what mf --test-fraction 0.25 holds out
    for path, part in (("r.npz", train), ("rt.npz", test)):
        arrays = np.load(tmp_path / path, allow_pickle=False)
        order = np.argsort(part.keys)
        np.testing.assert_array_equal(arrays["users"], part.users[order])
        np.testing.assert_array_equal(arrays["ratings"], part.values[order])
