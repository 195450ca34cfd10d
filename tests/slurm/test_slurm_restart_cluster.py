"""A rank killed inside a Slurm job is restarted in place by ``mpiml run`` (srun) to the uninterrupted model.

Two jobs from slurm/preemptible.sbatch run the same ``mpiml sgd``: one undisturbed, one with
``MPIML_FAULT`` killing rank 1 mid-run (SIGKILL, as a crash would). The template starts the
job through ``mpiml run``; srun's ``--kill-on-bad-exit`` ends the step, and the supervisor
starts it again with ``--resume`` from the last checkpoint, at the same rank count: the
final models must be equal bitwise. Needs the local cluster (``MPIML_SLURM_TESTS=1``).
"""

from __future__ import annotations

import re
import sys

import numpy as np
from localslurm import job_log, render


def sgd(checkpoints, out):
    return [sys.executable, "-m", "mpiml", "sgd", "--data", "synthetic:classification,n=2000,d=10", "--strategy",
            "sync", "--epochs", "4", "--checkpoint-every", "5", "--checkpoint-dir", str(checkpoints), "--out",
            str(out)]


def test_a_killed_rank_is_restarted_in_the_job_to_the_same_model(slurm_cluster, tmp_path):
    jobs = {}
    for name, env in (("steady", {}), ("killed", {"MPIML_FAULT": "rank=1,collective=30"})):
        command = sgd(tmp_path / f"{name}-ck", tmp_path / f"{name}.npz")
        script = render("preemptible", tmp_path / f"{name}.sbatch", command, ntasks_per_node=2,
                        output=str(tmp_path / "job-%j.out"), job_name=f"mpiml-{name}")
        jobs[name] = slurm_cluster.sbatch(script, workdir=tmp_path, env=env)
    steady = slurm_cluster.wait(jobs["steady"], timeout=300)
    killed = slurm_cluster.wait(jobs["killed"], timeout=300)
    text = job_log(tmp_path, jobs["killed"]).read_text()
    assert steady.ok and killed.ok, (steady.states, killed.states, text)
    assert killed.records[0]["Restarts"] == "0", text  # restarted inside the job, not requeued
    assert "mpiml run: attempt 1/3: 2 rank(s) under srun" in text, text
    assert re.search(r"attempt 2/3: 2 rank\(s\) under srun, resuming from step \d+", text), text
    assert "attempt 2/3 ended with exit status 0" in text and "finished with status 0" in text
    with np.load(tmp_path / "steady.npz", allow_pickle=False) as a, np.load(tmp_path / "killed.npz") as b:
        assert a["theta"].tobytes() == b["theta"].tobytes()
