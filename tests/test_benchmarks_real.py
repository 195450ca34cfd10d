"""The pure parts of benchmarks/real_data.py, on canned results and small synthetic files (no real data):
reading mpiml's JSON, per-round ratios, the table, checksums, and that the peer libraries get
exactly the train/test split and the objective mpiml's command line uses."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from mpirun import run_mpi

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def rd():
    spec = importlib.util.spec_from_file_location("benchmarks_real_data", REPO / "benchmarks" / "real_data.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def mpiml_json(rd, result, fields):
    """What the suite reads from the JSON rank 0 printed (field names vary between versions)."""
    assert result.returncode == 0, result.describe()
    raw = json.loads(re.findall(r"\{.*\}", result.stdout)[-1])
    return rd.read_mpiml(raw, rd.MF_FIELDS if fields == "mf" else rd.SGD_FIELDS, "")


# ------------------------------------------------------------------------- reading mpiml's JSON
def test_read_mpiml_prefers_new_names_and_falls_back(rd):
    mf = rd.read_mpiml({"seconds": 2.0, "test_rmse": 0.9, "iterations": 10}, rd.MF_FIELDS, "mf-explicit")
    assert mf == {"fit_seconds": 2.0, "rmse": 0.9, "iterations": 10}
    assert rd.read_mpiml({"fit_seconds": 1.5, "seconds": 2.0, "test_rmse": 0.9}, rd.MF_FIELDS,
                         "mf-explicit")["fit_seconds"] == 1.5
    sgd = rd.read_mpiml({"seconds": 3.0, "load_seconds": 1.0, "test_accuracy": 0.8, "train_loss": 0.3,
                         "lbfgs_iterations": None, "epochs": 5}, rd.SGD_FIELDS, "logreg")
    assert sgd["fit_seconds"] == 2.0 and sgd["iterations"] == 5 and sgd["objective"] == 0.3
    assert rd.read_mpiml({"fit_seconds": 1.2, "seconds": 3.0, "load_seconds": 1.0, "test_accuracy": 0.8,
                          "train_loss": 0.3, "lbfgs_iterations": 7}, rd.SGD_FIELDS, "logreg")["iterations"] == 7
    renamed = rd.read_mpiml({"seconds": 1.0, "test_ndcg@10": 0.25, "test_precision@10": 0.125}, rd.MF_FIELDS,
                            "mf-implicit")
    assert renamed["ndcg"] == 0.25 and renamed["precision"] == 0.125 and "missing" not in renamed


def test_read_mpiml_lists_the_keys_it_saw_when_one_is_missing(rd):
    out = rd.read_mpiml({"seconds": 1.0, "rmse_test": 0.9}, rd.MF_FIELDS, "mf-explicit")
    assert out["missing"] == {"quantities": ["rmse"], "keys_seen": ["rmse_test", "seconds"]}


# ------------------------------------------------------------------------- ratios and the table
def run(variant, round_, fit, wall=None, peer=False, job="mf-explicit", ranks=1, pair=None, error=None, **quality):
    metrics = {} if error else {"fit_seconds": fit, **quality}
    return {"dataset": "set", "variant": variant, "job": job, "label": variant, "ranks": ranks, "peer": peer,
            "pair": pair, "round": round_, "wall_seconds": fit + 1.0 if wall is None else wall, "metrics": metrics,
            **({"error": error} if error else {})}


def canned():
    runs = []
    for r, (a, b, p1, p2) in enumerate([(1, 3, 2, 1), (4, 2, 6, 3), (4, 8, 3, 3)]):
        runs += [run("mine-p1", r, p1, rmse=0.9), run("mine-p2", r, p2, ranks=2, pair="mine-p1", rmse=0.9),
                 run("peer-a", r, a, peer=True, rmse=0.85), run("peer-b", r, b, peer=True, rmse=0.95)]
    runs.append(run("mine-p1", 3, 1.0, error="boom\nmpiml: error: bad things"))
    runs.append(run("load-a", 0, 2.0, job="load", peer=True))
    runs.insert(0, run("load-b", 0, 1.0, job="load"))
    return runs


def test_ratios_are_medians_of_the_per_round_ratios(rd):
    rows = {row["variant"]: row for row in rd.summarize(canned())}
    mine, twin = rows["mine-p1"], rows["mine-p2"]
    # fastest peer per round: 1, 2, 4 -> ratios 2, 3, 0.75 (the ratio of the medians would be 1.5)
    assert mine["fit_vs_peer"] == pytest.approx(2.0)
    assert mine["fit_seconds"] == 3 and mine["rounds"] == 4 and mine["ok_rounds"] == 3
    assert mine["error"].endswith("bad things")
    # walls are fit + 1: 3/2, 7/3, 4/5
    assert mine["wall_vs_peer"] == pytest.approx(1.5)
    assert twin["p2_over_p1"] == pytest.approx(0.5) and mine["p2_over_p1"] is None
    assert rows["peer-a"]["fit_vs_peer"] == pytest.approx(1.0)
    assert mine["quality_vs_peer"] == pytest.approx(0.85 / 0.9)
    assert rows["load-b"]["fit_vs_peer"] == pytest.approx(0.5) and rows["load-b"]["quality_vs_peer"] is None
    assert [r["job"] for r in rd.summarize(canned())][-1] == "load"  # rows grouped by job


def test_table_shows_rows_failures_loads_and_notes(rd):
    rows = rd.summarize(canned() + [run("broken", 0, 1.0, error="Traceback\nValueError: no such thing")])
    rounds = [{"dataset": "set", "round": 0, "load_before": 1.0, "load_after": 2.25}]
    text = rd.format_table(rows, rounds, {"set": ["als tuned1: --rank 50"]})
    lines = text.splitlines()
    assert lines[0].split() == ["set", "job", "run", "p", "quality", "fit_s", "wall_s", "fit/peer", "wall/peer",
                                "p2/p1", "it"]
    mine = next(line for line in lines if " mine-p2 " in line)
    assert mine.split()[:6] == ["set", "mf", "mine-p2", "2", "rmse", "0.9000"] and mine.split()[-2] == "0.50"
    assert "FAILED ValueError: no such thing" in text
    assert "load avg before->after each round: 1.0->2.2" in text and "set: als tuned1: --rank 50" in text


def test_quality_text_and_quality_ratio(rd):
    row = {"job": "logreg", "accuracy": 0.84, "objective": 0.3233}
    assert rd.quality_text(row) == "acc 0.8400 obj 0.32330"
    assert rd.quality_vs_peer(row, [{"accuracy": 0.8}, {"accuracy": 0.7}]) == pytest.approx(1.05)
    assert rd.quality_text({"job": "mf-implicit", "ndcg": 0.5, "precision": None}) == "ndcg 0.5000 p@10 -"


def test_split_check_names_the_runs_that_disagree(rd):
    runs = [{"variant": "a", "metrics": {"train_ratings": 90, "test_count": 10}},
            {"variant": "b", "metrics": {"train_ratings": 90, "test_count": 10, "ranked_users": 7}},
            {"variant": "c", "metrics": {"ranked_users": 7}}, {"variant": "d", "error": "x"}]
    assert rd.split_check(runs) == "same split everywhere: train_ratings 90, test_count 10, ranked_users 7"
    runs[2]["metrics"]["ranked_users"] = 6
    assert rd.split_check(runs) == "SPLIT MISMATCH: ranked_users: 7 (b), 6 (c)"
    assert rd.split_check([{"variant": "s", "metrics": {"n_train": 80}}], {"n_train": 81}).startswith(
        "SPLIT MISMATCH: n_train: 81 (expected), 80 (s)")


# ------------------------------------------------------------------------- files and checksums
def test_checksums_warn_on_mismatch_and_read_any_manifest(rd, tmp_path, capsys):
    path = tmp_path / "a.txt"
    path.write_bytes(b"abc")
    right = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"  # SHA-256("abc"), FIPS 180-2
    good, bad = rd.check_files({str(path): right}), rd.check_files({str(path): "0" * 64})
    assert good[0]["ok"] is True and bad[0]["ok"] is False and bad[0]["actual"] == right
    assert "differs from the recorded" in capsys.readouterr().err
    # a git blob SHA-1 (`git hash-object`: "blob 3\\0abc") is accepted too
    assert rd.check_files({str(path): ["0" * 64, "f2ba8f84ab5c1bce84a7b441cb1959cfc7093b7f"]})[0]["ok"] is True
    assert rd.known_digests("/x/ml-1m/ratings.dat")[1] == "77a7c4b150f588c23bb9e1f068aa996c0b413695"
    assert rd.known_digests("/x/ml-10M100K/ratings.dat") == [] and rd.known_digests("/y/a9a.t")
    nested = {"x": {"path": str(path), "sha256": right}, "y": [{"file": "/abs/b", "sha256": "00"}], "z": "text"}
    assert rd.manifest_checksums(nested) == {str(path): right, "/abs/b": "00"}


def test_discover_pairs_libsvm_test_files_and_finds_ratings(rd, tmp_path):
    for name in ("a9", "a9.t", "w8", "r.dat", "pairs.dat"):
        (tmp_path / name).write_text("1 1:1\n")
    manifest = {"libsvm/a9": {"path": str(tmp_path / "a9"), "format": "svmlight", "sha256": "aa"},
                "libsvm/a9.t": {"path": str(tmp_path / "a9.t"), "format": "svmlight", "sha256": "bb"},
                "libsvm/w8": {"path": str(tmp_path / "w8"), "format": "svmlight"},
                "ml-x/ratings": {"path": str(tmp_path / "r.dat"), "users": 3, "format": "user::item::rating"},
                "ml-x/pairs": {"path": str(tmp_path / "pairs.dat"), "users": 3, "format": "user::item; no rating"},
                "ml-y": {"path": str(tmp_path / "r.dat"), "users": 3, "format": "user\\titem\\trating\\ttime"},
                "_not_obtained": {"ml-1m": "no"}}
    sets, sums = rd.discover(tmp_path, manifest)
    assert [(d.name, d.kind, d.train, d.test) for d in sets] == [
        ("a9", "libsvm", str(tmp_path / "a9"), str(tmp_path / "a9.t")), ("w8", "libsvm", str(tmp_path / "w8"), None),
        ("ml-x", "ratings", str(tmp_path / "r.dat"), None), ("ml-y", "ratings", str(tmp_path / "r.dat"), None)]
    assert sums == {str(tmp_path / "a9"): "aa", str(tmp_path / "a9.t"): "bb"}


def test_rows_width_and_prefix_of_svmlight_text(rd, tmp_path):
    path = tmp_path / "f.svm"
    path.write_text("# comment\n1 3:1 7:2\n\n-1 2:1 # 99:1 in a comment\n1 12:0.5\n")
    assert rd.data_rows(path) == 3 and rd.svmlight_width([path]) == 12
    zero = tmp_path / "z.svm"
    zero.write_text("1 0:1 4:1\n")
    assert rd.svmlight_width([path, zero]) == 13
    prefix = rd.write_prefix(path, tmp_path / "p.svm", 2)
    assert Path(prefix).read_text() == "# comment\n1 3:1 7:2\n\n-1 2:1 # 99:1 in a comment\n"
    sample = rd.write_sample(path, tmp_path / "s.svm", 2)  # every 2nd of 3 data rows
    assert Path(sample).read_text() == "1 3:1 7:2\n1 12:0.5\n"


# ------------------------------------------------------------------------- the peers see mpiml's split
def ratings_file(tmp_path):
    rng = np.random.default_rng(3)
    lines = [f"{u}::{i}::{rng.integers(1, 6)}::97830{j}" for j, (u, i) in
             enumerate({(int(u), int(i)) for u, i in rng.integers(1, [41, 31], size=(500, 2))})]
    lines.insert(17, "")  # blank lines are not ratings but still count as lines
    path = tmp_path / "ratings.dat"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_ratings_split_is_the_one_mpiml_mf_uses_at_p1(rd, tmp_path):
    from mpiml.mf import ALS

    path = ratings_file(tmp_path)
    train, test = rd.ratings_split(str(path), 0.1, 5)
    lines = [line for line in path.read_text().splitlines() if line]
    assert len(train) + len(test) == len(lines) and 20 < len(test) < 90
    flags = ["--rank", "3", "--reg", "0.1", "--iters", "3", "--seed", "0"]
    report = mpiml_json(rd, run_mpi(1, [sys.executable, "-m", "mpiml", "mf", "--algorithm", "als", "--ratings", str(path),
                                   "--test-fraction", "0.1", "--split-seed", "5", "--json", *flags], timeout=120), "mf")
    assert (report["train_ratings"], report["test_ratings"]) == (len(train), len(test))
    # the same ratings, not just as many: an ALS fit on the peers' split gives mpiml's test RMSE
    model = ALS(rank=3, reg=0.1, iters=3, seed=0).fit(train)
    assert model.evaluate(test)["rmse"] == pytest.approx(report["rmse"], rel=1e-9)


@pytest.mark.parametrize("ranks", [2, 3])
def test_ratings_split_is_the_one_mpiml_mf_uses_at_any_p(rd, tmp_path, ranks):
    path = ratings_file(tmp_path)
    train, test = rd.ratings_split(str(path), 0.1, 5)
    report = mpiml_json(rd, run_mpi(ranks, [sys.executable, "-m", "mpiml", "mf", "--ratings", str(path), "--iters",
                                            "1", "--test-fraction", "0.1", "--split-seed", "5", "--json"],
                                    timeout=120), "mf")
    assert (report["train_ratings"], report["test_ratings"]) == (len(train), len(test))
    assert (report["users"], report["items"]) == (np.unique(train.users).size, np.unique(train.items).size)


def test_peer_ranking_metrics_are_mpiml_evaluate(rd, tmp_path):
    import scipy.sparse

    from mpiml.mf import ImplicitALS

    train, test = rd.ratings_split(str(ratings_file(tmp_path)), 0.2, 2)
    model = ImplicitALS(rank=3, iters=2, alpha=2.0, seed=0).fit(train)
    users, items, u, i, tu, ti, tv = rd.indexed(train, test)
    assert np.array_equal(users, model.user_ids_) and np.array_equal(items, model.item_ids_)
    matrix = scipy.sparse.csr_matrix((train.values, (u, i)), shape=(users.size, items.size))
    ours = rd.ranking(model.user_factors_, model.item_factors_, matrix, tu, ti, tv, 10)
    theirs = model.evaluate(test, k=10)
    assert ours["ndcg"] == pytest.approx(theirs["ndcg_at_10"], rel=1e-12)
    assert ours["precision"] == pytest.approx(theirs["precision_at_10"], rel=1e-12)
    assert ours["ranked_users"] == theirs["ranked_users"] > 0


def svmlight_file(tmp_path, rows=240, features=12):
    rng = np.random.default_rng(4)
    w = rng.normal(size=features)
    lines = []
    for _ in range(rows):
        cols = np.sort(rng.choice(features, size=4, replace=False))
        vals = rng.normal(size=4)
        label = 1 if vals @ w[cols] + 0.3 * rng.normal() > 0 else -1
        lines.append(f"{label} " + " ".join(f"{c + 1}:{v:.4f}" for c, v in zip(cols, vals)))
    path = tmp_path / "tiny.svm"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_libsvm_holdout_is_mpiml_sgd_s(rd, tmp_path):
    from mpiml.data import load_shard, split_holdout

    path = svmlight_file(tmp_path)
    X, y, Xt, yt = rd.libsvm_split(str(path), None, 0.2, 0)
    train, test = split_holdout(load_shard(str(path), fmt="svmlight"), 0.2, 0)
    assert np.array_equal(X.toarray(), train.X.toarray()) and np.array_equal(y, train.y)
    assert np.array_equal(Xt.toarray(), test.X.toarray()) and np.array_equal(yt, test.y)
    assert X.indices.dtype == np.int32  # what SGDClassifier accepts


@pytest.mark.parametrize("ranks", [1, 2, 3])
def test_lbfgs_objective_is_sklearn_logistic_regression_s(rd, tmp_path, ranks):
    from sklearn.linear_model import LogisticRegression

    path = svmlight_file(tmp_path)
    X, y, Xt, yt = rd.libsvm_split(str(path), None, 0.2, 0)
    alpha = 1.0 / X.shape[0]  # C = 1
    clf = LogisticRegression(C=1.0, tol=1e-12, max_iter=10000).fit(X, y)
    report = mpiml_json(rd, run_mpi(ranks, [sys.executable, "-m", "mpiml", "sgd", "--data", str(path), "--format",
                                            "svmlight", "--test-fraction", "0.2", "--seed", "0", "--strategy", "lbfgs",
                                            "--reg", repr(alpha), "--json"], timeout=120), "sgd")
    ours = rd.logistic_objective(X, y, clf.coef_, clf.intercept_, alpha)
    assert report["objective"] == pytest.approx(ours, rel=1e-6)  # mean loss + alpha/2 ||w||^2
    assert report["accuracy"] == pytest.approx(clf.score(Xt, yt))
