"""``mpiml datagen ratings``: the generator's ratings, the same file at any rank count."""

from __future__ import annotations

import sys

import numpy as np
from mpirun import run_mpi

from mpiml.data.synthetic_ratings import SyntheticSpec, synthetic_ratings
from mpiml.runtime.files import load_npz

MPIML = [sys.executable, "-m", "mpiml", "datagen", "ratings", "--users", "120", "--items", "40",
         "--ratings", "2e3", "--rank", "4", "--seed", "7"]


def test_same_file_at_any_rank_count_and_equal_to_the_generator(tmp_path):
    for ranks in (1, 3):
        result = run_mpi(ranks, [*MPIML, "--out", str(tmp_path / f"r{ranks}.csv")], timeout=120)
        assert result.returncode == 0, result.describe()
    assert (tmp_path / "r1.csv").read_bytes() == (tmp_path / "r3.csv").read_bytes()
    written = np.loadtxt(tmp_path / "r1.csv", delimiter=",")
    whole = synthetic_ratings(SyntheticSpec(users=120, items=40, ratings=2000, rank=4, seed=7))
    order = np.argsort(whole.keys, kind="stable")
    assert written.shape == (2000, 3)
    np.testing.assert_array_equal(written[:, 0], whole.users[order])
    np.testing.assert_array_equal(written[:, 1], whole.items[order])
    np.testing.assert_array_equal(written[:, 2], whole.values[order])  # %.17g round-trips exactly


def test_npz_holds_the_same_ratings(tmp_path):
    result = run_mpi(2, [*MPIML, "--out", str(tmp_path / "r.npz")], timeout=120)
    assert result.returncode == 0, result.describe()
    run_mpi(1, [*MPIML, "--out", str(tmp_path / "r.tsv")], timeout=120)
    arrays = load_npz(tmp_path / "r.npz")
    text = np.loadtxt(tmp_path / "r.tsv", delimiter="\t")
    np.testing.assert_array_equal(np.column_stack([arrays["users"], arrays["items"], arrays["ratings"]]), text)


def test_unknown_suffix_and_bad_spec_fail_on_every_rank_without_a_file(tmp_path):
    bad_suffix = run_mpi(2, [*MPIML, "--out", str(tmp_path / "r.parquet")], timeout=120)
    assert bad_suffix.returncode == 2 and "cannot tell the format" in bad_suffix.stderr, bad_suffix.describe()
    bad_spec = run_mpi(2, [*MPIML, "--noise", "-1", "--out", str(tmp_path / "r.csv")], timeout=120)
    assert bad_spec.returncode == 2 and "non-negative" in bad_spec.stderr, bad_spec.describe()
    assert list(tmp_path.iterdir()) == []
