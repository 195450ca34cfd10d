"""``mpiml sgd --parallel ...`` end to end under mpiexec (bounded runs, 2 ranks)."""

from __future__ import annotations

import json
import re
import sys

import numpy as np
from mpirun import run_mpi

from mpiml.runtime.files import load_npz

SGD = [sys.executable, "-m", "mpiml", "sgd"]
SOFTMAX = ["--data", "synthetic:classification,n=600,d=12,classes=4,density=0.5", "--model", "softmax",
           "--epochs", "2", "--batch-size", "32", "--optimizer", "adam", "--lr", "0.05", "--standardize", "--json"]


def _lines(text):
    """Output lines without the launcher's ``[rank]`` prefix."""
    return [re.sub(r"^\[\d+\]\s?", "", line) for line in text.splitlines()]


def _json(result):
    assert result.returncode == 0, result.describe()
    # raw_decode: MPICH's output tagger may append a stray "[0] " after the object
    return json.JSONDecoder().raw_decode([line for line in _lines(result.stdout) if line.startswith("{")][-1])[0]


def test_model_parallel_cli_equals_data_parallel(tmp_path):
    data = _json(run_mpi(2, SGD + SOFTMAX + ["--out", str(tmp_path / "data.npz")], timeout=120))
    model = _json(run_mpi(2, SGD + SOFTMAX + ["--parallel", "model", "--split", "classes",
                                              "--out", str(tmp_path / "model.npz")], timeout=120))
    assert (model["parallel"], model["grid"], model["split"]) == ("model", "1x2", "classes")
    assert data["parallel"] == "data"
    for key in ("train_loss", "test_loss", "test_accuracy"):
        assert np.isclose(model[key], data[key], rtol=1e-9), key
    a, b = load_npz(tmp_path / "data.npz"), load_npz(tmp_path / "model.npz")
    np.testing.assert_allclose(a["theta"], b["theta"], rtol=1e-9, atol=1e-12)


def test_auto_explains_and_picks_model_parallelism_for_a_wide_sparse_problem():
    result = run_mpi(2, SGD + ["--data", "synthetic:classification,n=400,d=200000,density=0.0001", "--epochs", "1",
                               "--batch-size", "16", "--parallel", "auto", "--explain"], timeout=120)
    assert result.returncode == 0, result.describe()
    assert "per-update cost estimates" in result.stdout and "bytes/step" in result.stdout
    chosen = [line for line in _lines(result.stdout) if line.startswith("* ")]
    assert len(chosen) == 1 and chosen[0].split()[1] == "model", result.stdout
    assert "layout: model on a 1x2 grid" in result.stdout


def test_impossible_layouts_are_refused_on_every_rank():
    for extra, message in ((["--parallel", "hybrid"], "no hybrid layout for 2 ranks"),
                           (["--parallel", "model", "--grid", "2x1"], "is a data layout, not --parallel model"),
                           (["--grid", "3x1"], "needs 3 ranks, this job has 2")):
        result = run_mpi(2, SGD + ["--data", "synthetic:classification,n=100", "--epochs", "1"] + extra, timeout=120)
        assert result.returncode == 2, result.describe()
        assert message in result.stdout + result.stderr, result.describe()


def test_lbfgs_under_model_parallelism_reaches_the_data_parallel_optimum():
    """``--strategy lbfgs --parallel model`` at p = 3 prints the data-parallel optimum (a wide sparse set)."""
    argv = SGD + ["--data", "synthetic:classification,n=300,d=3000,density=0.004", "--test-fraction", "0",
                  "--strategy", "lbfgs", "--reg", "0.01", "--tol", "1e-10", "--iters", "300"]
    data = _json(run_mpi(3, argv + ["--json"], timeout=180))
    text = run_mpi(3, argv + ["--parallel", "model"], timeout=180)
    model = _json(run_mpi(3, argv + ["--parallel", "model", "--json"], timeout=180))
    assert (model["parallel"], model["grid"], model["split"]) == ("model", "1x3", "features")
    assert data["parallel"] == "data" and model["strategy"] == "lbfgs"
    assert model["lbfgs_iterations"] > 0
    assert abs(model["train_loss"] - data["train_loss"]) <= 1e-6 * abs(data["train_loss"])
    assert text.returncode == 0, text.describe()
    assert "layout: model on a 1x3 grid, features split over the columns" in text.stdout
    rows = [line.split() for line in _lines(text.stdout) if line.strip().startswith("1 ")]
    assert rows and abs(float(rows[0][1]) - data["train_loss"]) <= 1e-4, text.stdout   # the epoch row


def test_a_diverging_grid_run_is_one_error_line_and_status_2(tmp_path):
    """``--parallel model`` with a huge ``--lr`` at p = 3: the grid's divergence is collective, no rank aborts."""
    result = run_mpi(3, SGD + ["--data", "synthetic:regression,n=600,d=12", "--model", "linear", "--lr", "1e4",
                               "--epochs", "3", "--batch-size", "16", "--parallel", "model",
                               "--checkpoint-dir", str(tmp_path / "ckpt"),
                               "--out", str(tmp_path / "m.npz")], timeout=120)
    assert result.returncode == 2, result.describe()
    errors = [line for line in result.stderr.splitlines() if "mpiml: error:" in line]
    assert len(errors) == 1 and "diverged" in errors[0] and "not finite" in errors[0], result.describe()
    assert "layout: model on a 1x3 grid" in result.stdout and not (tmp_path / "m.npz").exists()
