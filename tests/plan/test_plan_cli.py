"""``mpiml plan`` through ``main(argv)``: the table, --json, the choices on a 64-node cluster, data sizes, --sbatch."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from mpiml.cli import plan
from mpiml.cli.main import main as mpiml_main
from mpiml.cli.parser import UsageError
from mpiml.plan import Layout, Prediction
from mpiml.plan import jobs
from mpiml.plan.layouts import Row
from mpiml.slurm.render import template_options

GOLDEN = Path(__file__).parent / "golden"
CLUSTER64 = ["--nodes-max", "64", "--cores-per-node", "64", "--mem-per-node", "256G"]


@pytest.fixture(scope="module")
def tuning(tmp_path_factory):
    """A tuning file of a cluster with a fast network (alpha 2 us, 10 GB/s) and the default compute constants."""
    from mpiml.plan.calibration import DEFAULT, section_document

    path = tmp_path_factory.mktemp("tuning") / "cluster.json"
    path.write_text(json.dumps({"params": {"alpha": 2e-6, "beta": 1e-10}, "compute": section_document(DEFAULT)}))
    return str(path)


def run_json(capsys, *argv):
    assert plan.main(["--json", *argv]) == 0
    return json.loads(capsys.readouterr().out)


def test_choice_follows_the_problem_on_a_simulated_64_node_cluster(capsys, tuning):
    wide = run_json(capsys, *CLUSTER64, "--tuning", tuning, "--rows", "1e6", "--features", "1e8", "--nnz", "1e8",
                    "--", "mpiml", "sgd", "--strategy", "lbfgs")
    small = run_json(capsys, *CLUSTER64, "--tuning", tuning, "--rows", "2000", "--features", "20",
                     "--", "mpiml", "sgd", "--strategy", "lbfgs")
    # wide sparse: the 1e8-feature model is split (model or hybrid); small dense: few ranks, data parallel
    assert wide["recommended"]["parallel"] in ("model", "hybrid") and wide["recommended"]["grid"][1] > 1
    assert small["recommended"]["parallel"] == "data" and small["recommended"]["ranks"] <= 8
    assert small["recommended"]["ranks"] < wide["recommended"]["ranks"]
    for doc in (wide, small):
        assert doc["cluster"]["nodes_max"] == 64 and doc["considered"] > 300
        best = doc["recommended"]
        assert best in doc["candidates"]
        assert best["ranks_per_node"] * best["threads_per_rank"] <= 64 and best["fits_memory"]
        # fastest goal: nothing shown is more than 5% faster than the recommendation
        assert min(c["seconds_total"] for c in doc["candidates"]) >= best["seconds_total"] / 1.05 - 1e-12


def test_goals_change_the_choice(capsys):
    common = ["--nodes-max", "4", "--cores-per-node", "8", "--mem-per-node", "32G",
              "--", "mpiml", "mf", "--ratings", "synthetic:users=50000,items=10000,ratings=2e6", "--algorithm", "als"]
    fastest = run_json(capsys, *common)
    cheapest = run_json(capsys, "--goal", "core-hours", *common)
    assert cheapest["recommended"]["core_hours"] <= fastest["recommended"]["core_hours"]
    assert fastest["recommended"]["seconds_total"] <= cheapest["recommended"]["seconds_total"]
    limit = (fastest["recommended"]["seconds_total"] + cheapest["recommended"]["seconds_total"]) / 2
    hh, rest = divmod(int(limit), 3600)
    deadline = run_json(capsys, "--deadline", f"{hh}:{rest // 60:02d}:{rest % 60:02d}", *common)
    assert deadline["goal"] == "deadline" and deadline["recommended"]["meets_deadline"]
    assert deadline["recommended"]["seconds_total"] <= int(limit)
    assert fastest["job"]["ratings"] == 2_000_000 and fastest["job"]["users"] == 50_000


def test_table_marks_the_recommendation_and_says_why(capsys):
    assert mpiml_main(["plan", "--nodes-max", "2", "--cores-per-node", "4", "--mem-per-node", "8G",
                       "sgd", "--data", "synthetic:classification,n=5000,d=30", "--epochs", "3"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith("mpiml plan: sgd ") and "4,000 rows x 30 features" in lines[0]  # 20% held out
    assert "cluster: up to 2 node(s) x 4 cores, 8.0 GiB each (given); goal: fastest" in out
    header = next(line for line in lines if "ranks/node" in line)
    for column in ("nodes", "threads", "parallel", "s/epoch", "total", "core-h", "mem/rank", "comm"):
        assert column in header
    marked = [line for line in lines if line.startswith("*")]
    assert len(marked) == 1
    assert any(line.startswith("recommended: ") and " -- " in line for line in lines)


def test_sizes_from_a_whole_svmlight_file_and_a_sample(tmp_path, monkeypatch):
    monkeypatch.setenv("MPIML_KERNELS", "numpy")  # the reference parser: no kernel to compile in a test
    rng = np.random.default_rng(0)
    lines, nnz, top = [], 0, 0
    for i in range(3000):
        cols = np.sort(rng.choice(np.arange(1, 500), size=rng.integers(3, 8), replace=False))
        nnz += cols.size
        top = max(top, int(cols.max()))
        lines.append(f"{i % 3} " + " ".join(f"{c}:{rng.random():.3f}" for c in cols))
    path = tmp_path / "train.svm"
    path.write_text("\n".join(lines) + "\n")
    size = jobs.sgd_data_size(str(path))
    assert (size.rows, size.features, size.nnz, size.dense, size.classes, size.how) == \
        (3000, top + 1, nnz, False, 3, "read whole")
    monkeypatch.setattr(jobs, "WHOLE_BYTES", 10_000)
    monkeypatch.setattr(jobs, "CHUNK_BYTES", 4_000)
    sampled = jobs.sgd_data_size(str(path))
    assert sampled.how == "sampled" and abs(sampled.rows - 3000) < 300 and abs(sampled.nnz - nnz) < 0.1 * nnz


def test_sizes_from_headers_csv_and_ratings(tmp_path, monkeypatch):
    monkeypatch.setenv("MPIML_KERNELS", "numpy")
    X = sp.random(40, 7, density=0.3, format="csr", random_state=1)
    np.savez(tmp_path / "d.npz", data=X.data, indices=X.indices, indptr=X.indptr, shape=X.shape, y=np.zeros(40))
    size = jobs.sgd_data_size(str(tmp_path / "d.npz"))
    assert (size.rows, size.features, size.nnz, size.dense) == (40, 7, X.nnz, False)
    (tmp_path / "d.csv").write_text("label,a,b,c\n" + "1,2,3,4\n" * 25)
    size = jobs.sgd_data_size(str(tmp_path / "d.csv"))
    assert (size.rows, size.features, size.nnz, size.dense) == (25, 3, 75, True)
    (tmp_path / "r.dat").write_text("".join(f"{u}::{i}::4::0\n" for u in range(1, 31) for i in (2, 5, 9)))
    r = jobs.ratings_size(str(tmp_path / "r.dat"))
    assert (r.users, r.items, r.ratings) == (30, 3, 90)
    (tmp_path / "r.mtx").write_text("%%MatrixMarket matrix coordinate real general\n% c\n100 50 3\n1 1 5\n2 2 3\n3 3 1\n")
    r = jobs.ratings_size(str(tmp_path / "r.mtx"))
    assert (r.users, r.items, r.ratings, r.how) == (100, 50, 3, "header")


def test_sbatch_request_renders_the_golden_script():
    row = Row(Layout(4, 16, 2, "hybrid", (16, 4)), Prediction(2.0, "iteration", 1000.0, 0.5, 3 << 30, 35.6))
    options = plan.request(row, plan_cluster(), margin=1.5, startup=120)
    assert options == {"nodes": "4", "ntasks-per-node": "16", "cpus-per-task": "2", "mem": "58983M",
                       "time": "0:27:00"}  # 1000 s x 1.5 + 120 s, rounded up to whole minutes
    command = plan.job_command("sgd", ["--data", "train.svm", "--epochs", "5"], row.layout)
    assert command == ["mpiml", "sgd", "--data", "train.svm", "--epochs", "5", "--parallel", "hybrid",
                       "--grid", "16x4"]
    text = plan.render("multi-node", options, command)
    golden = GOLDEN / "plan-multi-node.sbatch"
    if os.environ.get("MPIML_UPDATE_GOLDEN") == "1":
        golden.write_text(text)
    assert text == golden.read_text()


def plan_cluster():
    from mpiml.plan import Cluster

    return Cluster(8, 64, 256 << 30)


def test_sbatch_from_the_command_line(tmp_path, capsys):
    out = tmp_path / "job.sbatch"
    doc = run_json(capsys, "--nodes-max", "2", "--cores-per-node", "4", "--mem-per-node", "8G", "--sbatch",
                   "multi-node", "--out", str(out), "--", "mpiml", "sgd", "--epochs", "2")
    options = doc["sbatch"]["options"]
    assert {k: v for k, v in template_options(out.read_text()).items() if k in options} == options
    rec = doc["recommended"]
    assert (options["nodes"], options["ntasks-per-node"], options["cpus-per-task"]) == \
        (str(rec["nodes"]), str(rec["ranks_per_node"]), str(rec["threads_per_rank"]))
    assert "MPIML_COMMAND=(mpiml sgd --epochs 2" in out.read_text()
    assert plan.main(["--nodes-max", "1", "--cores-per-node", "2", "--sbatch", "single-node", "--",
                      "mpiml", "sgd", "--epochs", "1"]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("#!/bin/bash") and "recommended:" in captured.err  # the script alone on stdout


@pytest.mark.parametrize("argv,message", [
    ([], "give the job as"),
    (["--", "mpiml", "info"], "give the job as"),
    (["--out", "x.sbatch", "--", "sgd"], "--out is for --sbatch"),
    (["--users", "5", "--", "sgd"], "--users is for mf jobs"),
    (["--deadline", "1:99:00", "--", "sgd"], "--deadline"),
    (["--goal", "fastest", "--deadline", "1:00:00", "--", "sgd"], "not both"),
    (["--", "mf", "--algorithm", "als"], "the job's command"),
    (["--", "sgd", "--epochs", "0"], "the job's command"),
    (["--mem-per-node", "lots", "--", "sgd"], "not a size"),
    (["--nodes-max", "2", "--nodes", "3", "--", "sgd"], "more than the cluster's 2"),
])
def test_refused_command_lines(argv, message):
    with pytest.raises(UsageError, match=message.replace("(", r"\(")):
        plan.main(argv)
