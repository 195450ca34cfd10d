"""``mpiml mf`` under mpiexec: JSON output, bad input (non-zero exit, no hang), resume."""

from __future__ import annotations

import json
import os
import re
import sys

import numpy as np
import pytest
from mpirun import run_mpi

SYNTH = "synthetic:users=200,items=100,ratings=6000,rank=3,noise=0.1,seed=1"


def mf(ranks, *args, timeout=120):
    return run_mpi(ranks, [sys.executable, "-m", "mpiml", "mf", *args], timeout=timeout)


def last_json(result):
    """The JSON object rank 0 printed (launchers may tag lines with the rank)."""
    return json.loads(re.findall(r"\{.*\}", result.stdout)[-1])


def test_json_reports_errors_and_timing(tmp_path):
    out = tmp_path / "model.npz"
    result = mf(3, "--algorithm", "als", "--ratings", SYNTH, "--rank", "3", "--reg", "0.01", "--iters", "6",
                "--test-fraction", "0.1", "--out", str(out), "--json")
    assert result.returncode == 0, result.describe()
    report = last_json(result)
    for key in ("train_rmse", "test_rmse", "iterations", "seconds", "comm_seconds", "ranks", "compute_imbalance"):
        assert key in report, report
    assert report["ranks"] == 3 and report["iterations"] == 6 and report["test_rmse"] < 0.15
    assert 0 <= report["comm_seconds"] <= report["seconds"]
    # Every phase is counted, and the whole run is at least their sum.
    phases = ("load_seconds", "setup_seconds", "fit_seconds", "eval_seconds", "save_seconds")
    assert all(report[k] >= 0 for k in phases) and sum(report[k] for k in phases) <= report["seconds"] + 1e-6
    assert [r["rank"] for r in report["per_rank"]] == [0, 1, 2]
    for r in report["per_rank"]:
        assert r["compute_seconds"] + r["comm_seconds"] + r["wait_seconds"] <= report["fit_seconds"] + 0.05
    computes = [r["compute_seconds"] for r in report["per_rank"]]
    assert abs(report["compute_imbalance"] - max(computes) / (sum(computes) / 3)) < 1e-9
    with np.load(out, allow_pickle=False) as model:
        assert model["P"].shape == (report["users"], 3 + 2)  # biases by default: [x, b_u, 1]
    assert result.stderr.count("iteration") >= 6  # progress, from rank 0 only
    assert "[1] iteration" not in result.stderr and "[2] iteration" not in result.stderr


def test_implicit_reports_ranking_metrics(tmp_path):
    result = mf(2, "--algorithm", "ials", "--ratings", SYNTH, "--rank", "3", "--iters", "2", "--confidence", "2",
                "--test-fraction", "0.2", "--json", "--solver", "cg")
    assert result.returncode == 0, result.describe()
    report = last_json(result)
    assert 0 <= report["precision_at_10"] <= 1 and report["ranked_users"] > 0 and report["ranks"] == 2


def test_bad_line_exits_non_zero_naming_file_and_line(tmp_path):
    path = tmp_path / "ratings.dat"
    lines = [f"{j}::{j % 9}::{j % 5 + 1}::0" for j in range(1, 60)]
    lines[40] = "41::7::NaN::0"
    path.write_text("\n".join(lines) + "\n")
    result = mf(3, "--ratings", str(path), "--iters", "1", timeout=60)
    assert not result.hung and result.returncode != 0, result.describe()
    assert f"{path}:41: rating 'NaN' is not a finite number" in result.stderr, result.describe()


@pytest.mark.parametrize("args, message", [
    (["--algorithm", "als", "--confidence", "1"], "--confidence (ials only)"),
    (["--lr", "0.1"], "--lr (dsgd/nomad only)"),
    (["--algorithm", "dsgd", "--solver", "cg"], "--solver (ials only)"),
    (["--algorithm", "ials", "--biases"], "--biases (als/dsgd/nomad only)"),
    (["--algorithm", "ials", "--no-biases", "--step", "bold"], "--biases (als/dsgd/nomad only), --step (dsgd/nomad only)"),
    (["--algorithm", "als", "--dtype", "float64"], "--dtype (ials only)"),
    (["--algorithm", "ials", "--solver", "cholesky", "--cg-steps", "4"], "--cg-steps applies to --solver cg"),
    (["--algorithm", "ials", "--reg", "auto"], "--reg auto is for als and dsgd"),
    (["--rank", "many"], "argument --rank: invalid int value"),
    (["--reg", "lots"], "expected a number or auto"),
    ([], "--resume needs --checkpoint-dir"),
    (["--factors", "partitioned", "--out", __file__], "is a file, not a folder"),
])
def test_arguments_that_do_not_fit_are_refused_before_any_work(args, message):
    from mpiml.cli.mf import build_parser, check
    from mpiml.errors import ArgumentError

    argv = ["--ratings", SYNTH, *args] + (["--resume"] if not args else [])
    with pytest.raises(ArgumentError, match=re.escape(message)):
        check(build_parser().parse_args(argv))


def test_argument_errors_are_one_line_from_rank_0_and_exit_2():
    for args, message in [(["--algorithm", "als", "--confidence", "1"], "--confidence (ials only)"),
                          (["--rank", "many"], "argument --rank: invalid int value")]:
        result = mf(3, "--ratings", SYNTH, *args, timeout=60)
        assert not result.hung and result.returncode == 2, result.describe()
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("mpiml: error:") and message in lines[0], result.describe()
        assert "iteration" not in result.stdout


def test_defaults_come_from_the_model_and_reg_auto_reports_its_search():
    result = mf(2, "--ratings", SYNTH, "--iters", "2", "--rank", "3", "--reg", "auto", "--test-fraction", "0.1",
                "--json")
    assert result.returncode == 0, result.describe()
    report = last_json(result)
    from mpiml.mf import ALS

    grid = ALS.REG_GRID
    assert [t["reg"] for t in report["reg_search"]] == sorted(grid) and report["reg"] in grid
    assert report["params"]["biases"] is True and report["params"]["reg"] == "auto"
    result = mf(1, "--algorithm", "dsgd", "--ratings", SYNTH, "--iters", "1", "--json")
    assert result.returncode == 0, result.describe()
    from mpiml.mf import DSGD

    defaults = DSGD().get_params()
    report = last_json(result)
    assert report["rank"] == defaults["rank"] and report["params"]["lr"] == defaults["lr"]


def test_missing_file_and_bad_arguments_exit_non_zero(tmp_path):
    result = mf(2, "--ratings", str(tmp_path / "nope.csv"), timeout=60)
    assert not result.hung and result.returncode != 0 and "no such file" in result.stderr
    result = mf(2, "--ratings", "synthetic:users=0", timeout=60)
    assert not result.hung and result.returncode != 0 and "users must be at least 1" in result.stderr
    result = mf(2, "--ratings", SYNTH, "--resume", timeout=60)
    assert not result.hung and result.returncode != 0 and "--resume needs --checkpoint-dir" in result.stderr


def test_resume_continues_a_preempted_run(tmp_path):
    common = ["--algorithm", "dsgd", "--ratings", SYNTH, "--rank", "3", "--json"]
    straight = mf(2, *common, "--iters", "4", "--out", str(tmp_path / "a.npz"))
    first = mf(2, *common, "--iters", "2", "--checkpoint-dir", str(tmp_path / "ck"))
    # Resume at another rank count: the checkpoint holds whole factors.
    resumed = mf(3, *common, "--iters", "4", "--checkpoint-dir", str(tmp_path / "ck"), "--resume",
                 "--out", str(tmp_path / "b.npz"))
    for result in (straight, first, resumed):
        assert result.returncode == 0, result.describe()
    assert last_json(resumed)["iterations"] == 4
    with np.load(tmp_path / "a.npz") as a, np.load(tmp_path / "b.npz") as b:
        assert a["P"].shape == b["P"].shape
    assert abs(last_json(resumed)["train_rmse"] - last_json(straight)["train_rmse"]) < 0.05


def test_separate_test_file_with_cold_start_users(tmp_path):
    rng = np.random.default_rng(0)
    users, items = rng.integers(1, 40, 800), rng.integers(1, 30, 800)
    values = 3 + np.sin(users) * np.cos(items)
    train, test = tmp_path / "u.data", tmp_path / "u.test"
    train.write_text("".join(f"{u}\t{i}\t{v:.3f}\t0\n" for u, i, v in zip(users, items, values)))
    test.write_text(f"{users[0]}\t{items[0]}\t{values[0]:.3f}\t0\n999\t{items[0]}\t3\t0\n")
    # with partitioned factors: evaluated through mpiml.mf.serving, saved as a directory of blocks
    out = tmp_path / "model"
    result = mf(2, "--ratings", str(train), "--test", str(test), "--rank", "2", "--iters", "3", "--json",
                "--factors", "partitioned", "--out", str(out))
    assert result.returncode == 0, result.describe()
    report = last_json(result)
    assert report["test_ratings"] == 2 and report["test_count"] == 1 and report["cold_start_dropped"] == 1
    assert report["ratings_read"] == 800 and report["test_ratings_read"] == 2
    assert report["factors_layout"] == "partitioned" and (out / "manifest.json").is_file()
    from mpi4py import MPI

    from mpiml.mf import ALS, FactorModel

    model = FactorModel.load(out, comm=MPI.COMM_SELF)   # saved by 2 ranks, read by one
    assert isinstance(model, ALS) and model.factors_layout_ == "partitioned" and model.user_ids_.size == 39
    error = abs(model.predict([users[0]], [items[0]], comm=MPI.COMM_SELF)[0] - round(values[0], 3))
    assert abs(error - report["test_rmse"]) < 1e-9


def test_sigusr1_checkpoints_and_exits_preempted_then_resume_finishes(tmp_path):
    import signal
    import subprocess
    import threading

    from mpirun import mpi_env, mpiexec_command

    ck, data = tmp_path / "ck", SYNTH.replace("6000", "60000")
    argv = [sys.executable, "-m", "mpiml", "mf", "--ratings", data, "--rank", "8", "--iters", "1000",
            "--checkpoint-every", "100000"]
    proc = subprocess.Popen(mpiexec_command(2, argv), env=mpi_env({"MPIML_CHECKPOINT_DIR": str(ck)}), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    watchdog = threading.Timer(90, os.killpg, (proc.pid, signal.SIGKILL))  # readline must not hang the suite
    watchdog.start()
    try:
        for _ in range(3):  # progress lines: training is under way
            assert "iteration" in proc.stdout.readline()
        proc.send_signal(signal.SIGUSR1)  # mpiexec forwards it to every rank
        out, err = proc.communicate(timeout=60)
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 3, (proc.returncode, err[-2000:])
    assert "mpiml: preempted" in err and str(ck) in err
    step = json.loads((ck / "mf" / "manifest.json").read_text())["step"]  # mf's subdirectory of the variable's
    assert 3 <= step < 1000
    result = mf(2, "--ratings", data, "--rank", "8", "--iters", str(step + 1), "--checkpoint-dir", str(ck / "mf"),
                "--resume", "--json")
    assert result.returncode == 0, result.describe()
    assert last_json(result)["iterations"] == step + 1


def test_partitioned_model_that_cannot_be_saved_goes_next_to_the_target(tmp_path):
    from mpi4py import MPI

    from mpiml.cli.mf import save_model
    from mpiml.errors import ArgumentError, DataError

    class Blocks:   # stands for a model with partitioned factors: save is collective, here over one rank
        factors_layout_, checkpoint_dir, written = "partitioned", None, []

        def save(self, path, comm=None):
            if str(path) == str(tmp_path / "model"):
                raise DataError("disk full", str(path), collective=True)
            self.written.append(path)

    with pytest.raises(ArgumentError, match="the model is in .*model.rescued-.* instead") as caught:
        save_model(Blocks(), tmp_path / "model", MPI.COMM_SELF)
    (spare,) = Blocks.written
    assert os.path.dirname(spare) == str(tmp_path) and spare in str(caught.value)
