"""Bugs a new user met on the command line, each run as users run it (bounded mpiexec)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from clirun import mpiml, one_error, one_json
from mpirun import REPO, mpi_env, run_mpi

EXAMPLE = [sys.executable, str(REPO / "examples" / "preemptible_job.py")]


def test_serial_evaluate_reads_a_checkpoint_of_two_ranks(tmp_path):
    ck = tmp_path / "ck"
    trained = run_mpi(2, [*EXAMPLE, "--steps", "6", "--checkpoint-dir", str(ck), "--json"], timeout=120)
    assert trained.returncode == 0, trained.describe()
    # Serially, as the example's docstring shows (no launcher).
    done = subprocess.run([*EXAMPLE, "--evaluate", "--checkpoint-dir", str(ck), "--json"], env=mpi_env(),
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    evaluated, final = json.loads(done.stdout), json.loads(trained.stdout)
    assert evaluated["steps"] == 6 and evaluated["x"] == final["x"] and evaluated["objective"] == final["objective"]


@pytest.mark.parametrize("ranks", [1, 3])
def test_split_classes_of_a_binary_model_says_why(ranks):
    result = mpiml(ranks, "sgd", "--split", "classes", "--parallel", "model", status=None)
    one_error(result, "--split classes splits the classes of --model softmax", "--split features")


def test_split_classes_refused_by_the_library_too():
    from mpiml.errors import ArgumentError
    from mpiml.parallel import cost
    from mpiml.parallel.run import choose_layout

    with pytest.raises(ArgumentError, match="one output"):
        choose_layout(cost.Problem(n=100, d=10, nnz=1000, k=1, batch=10, p=4), "model", split="classes")


def test_model_title_names_the_overrides():
    result = mpiml(1, "model", "--ranks", "4", "--sizes", "1K", "--set", "alpha=5e-6")
    title = result.stdout.splitlines()[0]
    assert "with alpha=5e-6" in title and "(default parameters)" not in title


@pytest.mark.parametrize("ranks", [1, 3])
def test_bench_allgather_has_no_op(ranks):
    args = ["bench", "allgather", "--sizes", "64", "--iters", "2", "--warmup", "0", "--collective-algorithm", "native"]
    assert "op " not in mpiml(ranks, *args).stdout.splitlines()[0]
    assert one_json(mpiml(ranks, *args, "--json"))["op"] is None
    one_error(mpiml(ranks, *args, "--op", "max", status=None), "--op is for allreduce")
