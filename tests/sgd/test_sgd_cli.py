"""``mpiml sgd`` and ``mpiml datagen`` as users run them: bounded mpiexec subprocesses."""

from __future__ import annotations

import json
import re
import sys

import numpy as np
from mpirun import run_mpi

from mpiml.runtime.files import load_npz

TIMEOUT = 180


def mpiml(ranks, *args):
    return run_mpi(ranks, [sys.executable, "-m", "mpiml", *map(str, args)], timeout=TIMEOUT)


def last_json(result):
    assert not result.hung, result.describe()
    # strip the launcher's rank tag: "[0] " (MPICH) or "[1,0]<stdout>:" (Open MPI)
    lines = [re.sub(r"^\[[\d,]+\](<stdout>:)?\s*", "", line) for line in result.stdout.splitlines()]
    # raw_decode: MPICH's tagger may append a stray "[0] " after the object
    return json.JSONDecoder().raw_decode(next(line for line in reversed(lines) if line.startswith("{")))[0]


def test_quick_start_job_runs_on_built_in_data():
    result = mpiml(3, "sgd", "--epochs", "3", "--json")
    assert result.returncode == 0, result.describe()
    report = last_json(result)
    for key in ("train_loss", "test_loss", "test_accuracy", "epochs", "seconds", "comm_seconds", "ranks",
                "compute_seconds", "wait_seconds"):
        assert key in report, key
    assert report["ranks"] == 3 and report["epochs"] == 3 and len(report["per_rank"]) == 3
    assert (report["strategy"], report["strategy_requested"], report["standardize"]) == ("sync", "auto", True)
    compute = [r["compute_seconds"] for r in report["per_rank"]]
    assert report["compute_imbalance"] == max(compute) / (sum(compute) / 3) >= 1.0
    assert report["load_seconds"] + report["fit_seconds"] <= report["seconds"]
    assert report["test_accuracy"] > 0.85
    assert report["comm_seconds"] == sum(r["comm_seconds"] for r in report["per_rank"])
    assert result.stdout.count("{") == result.stdout.count("}") and len(report["history"]) == 3


def test_no_flags_trains_by_lbfgs_to_scikit_learns_tolerance():
    result = mpiml(2, "sgd", "--json")
    assert result.returncode == 0, result.describe()
    report = last_json(result)
    assert (report["strategy"], report["strategy_requested"], report["standardize"]) == ("lbfgs", "auto", False)
    assert report["lbfgs_converged"] and 0 < report["lbfgs_iterations"] < 100 and report["test_accuracy"] > 0.85
    assert report["eval_seconds"] > 0 and report["load_seconds"] + report["fit_seconds"] <= report["seconds"]


def test_settings_the_strategy_would_not_use_are_one_error_line():
    for args, needle in ((["--strategy", "lbfgs", "--lr", "0.1"], "--lr not used by strategy lbfgs"),
                         (["--strategy", "sync", "--iters", "9"], "--iters not used by strategy sync"),
                         (["--model", "svm", "--tol", "1e-3"], "which --strategy auto chose")):
        result = mpiml(3, "sgd", "--data", "synthetic:classification,n=300", *args)
        assert result.returncode == 2, result.describe()
        errors = [line for line in result.stderr.splitlines() if "mpiml: error:" in line]
        assert len(errors) == 1 and needle in errors[0], result.describe()


def test_datagen_then_train_with_a_test_file_and_human_output(tmp_path):
    for name, n in (("train.svm", 3000), ("test.svm", 1000)):
        gen = mpiml(2, "datagen", "classification", "--n-samples", n, "--n-features", 15, "--density", 0.5,
                    "--seed", 1 if name == "train.svm" else 2, "--out", tmp_path / name, "--json")
        assert gen.returncode == 0, gen.describe()
    out = tmp_path / "model.npz"
    result = mpiml(2, "sgd", "--data", tmp_path / "train.svm", "--test", tmp_path / "test.svm",
                   "--strategy", "local", "--sync-every", 4, "--optimizer", "adam", "--lr", 0.05, "--out", out)
    assert result.returncode == 0, result.describe()
    assert "epoch" in result.stdout and "compute_s" in result.stdout and "\r" not in result.stdout
    model = load_npz(out)
    assert str(model["model"]) == "logistic" and model["theta"].shape == (16,)


def test_bad_input_exits_nonzero_naming_the_line_and_writes_nothing(tmp_path):
    data = tmp_path / "bad.svm"
    data.write_text("1 1:1\n0 2:1\n" * 20 + "1 1:1 2:zz\n" + "0 2:1\n" * 10)
    out, ckpt = tmp_path / "model.npz", tmp_path / "ckpt"
    result = mpiml(3, "sgd", "--data", data, "--out", out, "--checkpoint-dir", ckpt)
    assert result.returncode == 2, result.describe()
    assert f"{data}:41:" in result.stderr and "malformed" in result.stderr
    assert not out.exists() and not ckpt.exists()
    assert list(tmp_path.iterdir()) == [data]


def test_diverging_run_stops_with_a_clear_message(tmp_path):
    result = mpiml(2, "sgd", "--data", "synthetic:regression,n=3000,d=20", "--model", "linear", "--lr", 1e4,
                   "--checkpoint-dir", tmp_path / "ckpt", "--out", tmp_path / "m.npz")
    assert result.returncode == 2, result.describe()
    assert "diverged" in result.stderr and "not finite" in result.stderr
    assert not (tmp_path / "m.npz").exists()


def test_stop_and_resume_at_another_rank_count(tmp_path):
    common = ["sgd", "--data", "synthetic:classification,n=4000,d=8", "--epochs", 3, "--batch-size", 64,
              "--momentum", 0.9, "--json"]
    whole = mpiml(2, *common, "--out", tmp_path / "whole.npz")
    assert whole.returncode == 0, whole.describe()
    ckpt = tmp_path / "ckpt"
    first = mpiml(2, *common, "--checkpoint-dir", ckpt, "--stop-after-updates", 70, "--out", tmp_path / "r.npz")
    assert first.returncode == 3, first.describe()
    assert last_json(first)["interrupted"] and not (tmp_path / "r.npz").exists()
    same_p = mpiml(2, *common, "--checkpoint-dir", ckpt, "--resume", "--out", tmp_path / "r.npz")
    assert same_p.returncode == 0 and last_json(same_p)["resumed_from_update"] == 70, same_p.describe()
    assert np.array_equal(load_npz(tmp_path / "r.npz")["theta"], load_npz(tmp_path / "whole.npz")["theta"])
    # a fresh interruption at p=2, resumed at p=3: sync batches do not depend on p, so the same model
    ckpt3 = tmp_path / "ckpt3"
    assert mpiml(2, *common, "--checkpoint-dir", ckpt3, "--stop-after-updates", 70).returncode == 3
    other_p = mpiml(3, *common, "--checkpoint-dir", ckpt3, "--resume", "--out", tmp_path / "r3.npz")
    assert other_p.returncode == 0, other_p.describe()
    np.testing.assert_allclose(load_npz(tmp_path / "r3.npz")["theta"], load_npz(tmp_path / "whole.npz")["theta"],
                               rtol=1e-9, atol=1e-12)


def test_sigusr1_stops_with_a_checkpoint_and_status_3(tmp_path):
    import os
    import signal
    import subprocess

    from mpirun import mpi_env, mpiexec_command

    ckpt = tmp_path / "ckpt"
    argv = [sys.executable, "-m", "mpiml", "sgd", "--data", "synthetic:classification,n=100000,d=20",
            "--epochs", "500", "--checkpoint-dir", str(ckpt)]
    proc = subprocess.Popen(mpiexec_command(2, argv), env=mpi_env(), text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        for line in proc.stdout:  # wait for the first finished epoch: training is under way
            if re.search(r"^\S*\s*1\s+\d", line.strip()):
                break
        os.kill(proc.pid, signal.SIGUSR1)  # mpiexec forwards it to the ranks, as Slurm's --signal does
        out, err = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 3, (out, err)
    assert "stopped after" in out and (ckpt / "manifest.json").exists()
    manifest = json.loads((ckpt / "manifest.json").read_text())
    assert 0 < manifest["updates"] < 500 * 313


def test_bundled_scikit_learn_data_with_standardization(tmp_path):
    import pytest

    pytest.importorskip("sklearn", reason="the sklearn: data sets need scikit-learn (extra 'sklearn')")
    result = mpiml(2, "sgd", "--data", "sklearn:breast_cancer", "--standardize", "--epochs", 10,
                   "--batch-size", 32, "--lr", 0.1, "--json")
    assert result.returncode == 0, result.describe()
    assert last_json(result)["test_accuracy"] > 0.9
    bad = mpiml(2, "sgd", "--data", "sklearn:no_such_set")
    assert bad.returncode == 2 and "sklearn:no_such_set: unknown bundled data set" in bad.stderr, bad.describe()


def test_json_stdout_is_one_object_with_explain_and_a_model_layout():
    """--json with --explain and a model-parallel layout: the layout and cost table go to stderr."""
    result = mpiml(3, "sgd", "--data", "synthetic:classification,n=600,d=12", "--parallel", "model", "--explain",
                   "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)  # the whole of stdout: exactly one JSON object
    assert summary["grid"] == "1x3" and summary["parallel"] == "model"
    assert "layout: model on a 1x3 grid" in result.stderr and "strategy: lbfgs" in result.stderr
