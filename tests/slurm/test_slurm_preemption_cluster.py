"""A preempted job checkpoints, requeues itself and resumes to the uninterrupted result.

Two jobs from slurm/preemptible.sbatch run the same command on the real local cluster:
one undisturbed, one sent SIGUSR1 mid-run (``scancel --signal=USR1 --batch``, what
``--signal=B:USR1@secs`` does before a time limit). The template's trap forwards the
signal, the program checkpoints and exits 3, the template requeues the job, and the
second run (SLURM_RESTART_COUNT=1) resumes from the checkpoint. The results must be equal.

The command is a parameter (:data:`CASES`): a stand-in trainer (examples/preemptible_job.py)
and the real ``mpiml sgd ... --checkpoint-dir D --resume``, whose final model must equal the
uninterrupted run's bitwise.
"""

from __future__ import annotations

import json
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from example_oracle import EXAMPLE_PATH, gradient_descent
from localslurm import job_log, render


@dataclass
class Case:
    """A preemptible command: how to run it and what its result is."""

    name: str
    command: Callable[[Path, Path], list]  # (checkpoint dir, result file) -> argv
    result: Callable[[Path], object]       # result file -> value compared between the two runs
    running: str                           # text in the job log once the steps are under way
    check: Callable[[Path, str], None] = lambda result_file, log: None  # extra checks (result, job log)
    suffix: str = "json"                   # of the result file


def _example_result(path: Path):
    data = json.loads(path.read_text())
    return {"x": data["x"], "objective": data["objective"], "steps": data["steps"]}


def _example_check(path: Path, log: str) -> None:
    data = json.loads(path.read_text())
    assert data["restart_count"] == 1  # the program itself saw SLURM_RESTART_COUNT=1
    assert 0 < data["resumed_from_step"] < data["steps"], data
    x, objective = gradient_descent(0.1, data["steps"])
    np.testing.assert_allclose(data["x"], x, rtol=1e-10, atol=1e-12)


EXAMPLE = Case(
    name="example",
    command=lambda checkpoints, result: [sys.executable, str(EXAMPLE_PATH), "--steps", "40", "--sleep", "0.1",
                                         "--checkpoint-every", "1000", "--checkpoint-dir", str(checkpoints),
                                         "--resume", "--result", str(result)],
    result=_example_result,
    running="starting at step 0",
    check=_example_check,
)
def _model_theta(path: Path):
    """The trained parameters of an ``mpiml sgd --out`` file, as bytes (compared bitwise)."""
    with np.load(path, allow_pickle=False) as model:
        return model["theta"].tobytes()


def _sgd_check(path: Path, log: str) -> None:
    with np.load(path, allow_pickle=False) as model:
        assert np.isfinite(model["theta"]).all() and model["theta"].any()
    resumed = re.findall(r"^resumed from the checkpoint at update (\d+)$", log, re.M)
    assert len(resumed) == 1 and int(resumed[0]) > 0, log  # continued mid-run, not from scratch


SGD = Case(
    name="mpiml-sgd",
    command=lambda checkpoints, result: [sys.executable, "-m", "mpiml", "sgd", "--data",
                                         "synthetic:classification,n=20000,d=50", "--epochs", "40",
                                         "--batch-size", "64", "--checkpoint-dir", str(checkpoints),
                                         "--resume", "--out", str(result)],
    result=_model_theta,
    running="epoch  train_loss",
    check=_sgd_check,
    suffix="npz",
)
CASES = [EXAMPLE, SGD]


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_preempted_job_requeues_and_resumes_to_the_same_result(slurm_cluster, tmp_path, case):
    jobs = {}
    for name in ("steady", "preempted"):
        script = render("preemptible", tmp_path / f"{name}.sbatch",
                        case.command(tmp_path / f"{name}-checkpoints", tmp_path / f"{name}.{case.suffix}"),
                        ntasks_per_node=2, output=str(tmp_path / "job-%j.out"), job_name=f"mpiml-{name}")
        jobs[name] = slurm_cluster.sbatch(script, workdir=tmp_path)

    log = job_log(tmp_path, jobs["preempted"])
    # Generous bounds: they only catch a hang; a loaded 2-core CI machine runs these jobs 3-5x slower.
    slurm_cluster.wait_for_text(log, case.running, timeout=300)
    time.sleep(0.5)  # well inside the run
    done = slurm_cluster.run("scancel", "--signal=USR1", "--batch", jobs["preempted"])
    assert done.returncode == 0, done.stderr

    preempted = slurm_cluster.wait(jobs["preempted"], timeout=900, restarts=1)
    steady = slurm_cluster.wait(jobs["steady"], timeout=300)
    text = log.read_text()
    assert steady.ok and steady.records[0]["Restarts"] == "0", steady.states
    assert preempted.ok, (preempted.states, text)
    assert preempted.records[0]["Restarts"] == "1", text  # requeued once, not in a loop
    # The template's own account of what happened, in order.
    marks = ["start (restart 0)", "got SIGUSR1", "checkpointed; requeueing", "start (restart 1)",
             "finished with status 0"]
    positions = [text.find(mark) for mark in marks]
    assert -1 not in positions and positions == sorted(positions), text
    assert (tmp_path / "preempted-checkpoints" / "manifest.json").exists()

    preempted_result, steady_result = tmp_path / f"preempted.{case.suffix}", tmp_path / f"steady.{case.suffix}"
    assert case.result(preempted_result) == case.result(steady_result)
    case.check(preempted_result, log.read_text())
