"""Kill sweep: a job killed (SIGKILL, one rank) at any checkpoint stage or collective call resumes to the
uninterrupted result, bitwise, at the same rank count.

Each job (``mpiml sgd`` sync/local/lbfgs, ``mpiml mf`` als/ials/dsgd, on tiny data, p = 2) runs as a
chain of launches in one checkpoint directory, all with ``--resume``: every launch but the
last is killed by ``MPIML_FAULT`` (``rank=R,collective=N`` counts from the launch's start, so
later launches of a chain, which resume further on, are killed further into the run; or
``stage=checkpoint-...,count=K``); the last one runs to the end. Its model must equal the
model of an uninterrupted run bit for bit. The uninterrupted runs, and the last launches,
of all jobs share one ``mpiexec`` each (:data:`DRIVER` calls the command line
in-process), so the sweep costs about one launch per kill point.

The sweep below (20 collective numbers, every stage for sgd and for mf, every job) runs at
p = 2, about one launch per kill point plus two. (p = 3 is covered by
tests/cli/test_cli_checkpoints.py.)
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from mpirun import run_mpi

from mpiml.runtime.files import load_npz

SGD_DATA = "synthetic:classification,n=240,d=4,seed=3"
MF_DATA = "synthetic:users=40,items=30,ratings=600,rank=3,seed=1"
JOBS = {
    "sync": (2, ["sgd", "--data", SGD_DATA, "--strategy", "sync", "--epochs", "5", "--batch-size", "24",
                 "--checkpoint-every", "2", "--lr", "0.1"]),
    "local": (2, ["sgd", "--data", SGD_DATA, "--strategy", "local", "--sync-every", "2", "--epochs", "10",
                  "--batch-size", "16", "--checkpoint-every", "2", "--optimizer", "adam", "--lr", "0.05"]),
    "lbfgs": (2, ["sgd", "--data", SGD_DATA, "--strategy", "lbfgs", "--warm-start-epochs", "1"]),
    "als": (2, ["mf", "--ratings", MF_DATA, "--rank", "3", "--iters", "14", "--test-fraction", "0.2"]),
    "ials": (2, ["mf", "--algorithm", "ials", "--ratings", MF_DATA, "--rank", "3", "--iters", "18"]),
    "dsgd": (2, ["mf", "--algorithm", "dsgd", "--ratings", MF_DATA, "--rank", "3", "--iters", "16",
                 "--step", "bold", "--reg", "auto", "--reg-grid", "0.03,0.1", "--auto-iters", "1"]),
}


def _c(rank, n):
    return f"rank={rank},collective={n}"


def _s(stage, count=1):
    return f"rank=0,stage=checkpoint-{stage},count={count}"


# The kill points of each chain, in launch order: 20 distinct collective numbers, each stage for sgd and mf.
SHORT = {
    "sync": [_c(1, 9), _s("before-write", 2), _c(0, 14), _c(0, 20), _c(1, 12)],
    "local": [_c(1, 8), _s("after-write", 2), _c(0, 16), _c(1, 21)],
    "lbfgs": [_c(1, 5), _c(0, 13), _s("after-rename")],
    "als": [_c(1, 11), _s("after-rename", 2), _c(0, 18), _c(1, 25)],
    "ials": [_c(0, 7), _c(1, 15), _s("before-write", 3), _c(0, 23), _c(1, 26)],
    "dsgd": [_c(1, 10), _s("after-write", 1), _c(0, 19), _c(1, 28), _c(0, 30)],
}


PLAN = SHORT
RANKS = (2,)

# Runs several mpiml command lines in one process (the uninterrupted runs, and the last launches).
DRIVER = """
import json, sys
from mpiml.cli.main import main
codes = [main(argv) for argv in json.loads(sys.argv[1])]
sys.exit(max(codes))
"""

ENV = {"MPIML_KERNELS": "numpy", "MPIML_PROGRESS": "never"}  # the numpy reference: no JIT start-up per launch


def _argv(name, directory, *extra):
    return [*JOBS[name][1], "--checkpoint-dir", str(directory), "--json", *extra]


def _drive(ranks, argvs, cwd):
    result = run_mpi(ranks, [sys.executable, "-c", DRIVER, json.dumps(argvs)], timeout=300, env=ENV, cwd=cwd)
    assert result.returncode == 0, result.describe()


def _same_bits(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and a[k].shape == b[k].shape
                                        and a[k].tobytes() == b[k].tobytes() for k in a)


def test_the_kill_sweep_plan_covers_every_stage_and_twenty_collective_numbers():
    points = [point for chain in PLAN.values() for point in chain]
    assert len({p for p in points if "collective=" in p}) >= 20
    for family in (("sync", "local", "lbfgs"), ("als", "ials", "dsgd")):
        stages = {p.split("stage=")[1].split(",")[0] for name in family for p in PLAN[name] if "stage=" in p}
        assert stages == {"checkpoint-before-write", "checkpoint-after-write", "checkpoint-after-rename"}


@pytest.mark.parametrize("ranks", RANKS)
def test_a_killed_job_resumes_to_the_uninterrupted_model_bitwise(tmp_path, ranks):
    names = list(JOBS)
    _drive(ranks, [_argv(name, tmp_path / f"{name}-reference", "--out", str(tmp_path / f"{name}-reference.npz"))
                   for name in names], tmp_path)
    for name in names:
        for point in PLAN[name]:
            killed = run_mpi(ranks, [sys.executable, "-m", "mpiml", *_argv(name, tmp_path / name, "--resume")],
                             timeout=120, env={**ENV, "MPIML_FAULT": point}, cwd=tmp_path)
            assert not killed.hung and killed.returncode not in (0, 2, 3), (name, point, killed.describe())
    _drive(ranks, [_argv(name, tmp_path / name, "--resume", "--out", str(tmp_path / f"{name}.npz"))
                   for name in names], tmp_path)
    for name in names:
        resumed, reference = load_npz(tmp_path / f"{name}.npz"), load_npz(tmp_path / f"{name}-reference.npz")
        assert _same_bits(resumed, reference), (name, {k: np.max(np.abs(resumed[k] - reference[k]))
                                                       for k in reference if reference[k].dtype.kind == "f"})
        left = sorted(p.name for p in (tmp_path / name).iterdir())  # no lock, no temporaries, two checkpoints
        assert left[0] == "manifest.json" and 2 <= len(left) <= 3 and all(n.startswith("step-") for n in left[1:]), \
            left
