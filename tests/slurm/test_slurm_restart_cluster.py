"""A rank killed inside a Slurm job is restarted in place by ``mpiml run`` (srun) to the uninterrupted model.

Two jobs from slurm/preemptible.sbatch run the same ``mpiml sgd``: one undisturbed, one with
``MPIML_FAULT`` killing rank 1 mid-run (SIGKILL, as a crash would). The template starts the
job through ``mpiml run``; srun's ``--kill-on-bad-exit`` ends the step, and the supervisor
starts it again with ``--resume`` from the last checkpoint, at the same rank count: the
final models must be equal bitwise. A second job loses a node mid-run and finishes on the node left.
Needs the local cluster (``MPIML_SLURM_TESTS=1``).
"""

from __future__ import annotations

import re
import sys
import time

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


def test_a_node_lost_from_a_no_kill_job_restarts_on_the_nodes_left(slurm_cluster, tmp_path):
    """A node goes down mid-run (``scontrol update state=down``): the step fails, Slurm shrinks the
    ``--no-kill`` allocation, and ``mpiml run`` resumes on the node left with fewer ranks (MPIML_MIN_RANKS)."""
    command = [sys.executable, "-m", "mpiml", "sgd", "--data", "synthetic:classification,n=20000,d=50", "--epochs",
               "12", "--batch-size", "64", "--checkpoint-dir", str(tmp_path / "ck"), "--out", str(tmp_path / "m.npz")]
    script = render("multi-node", tmp_path / "job.sbatch", command, nodes=2, ntasks_per_node=2, no_kill=None,
                    output=str(tmp_path / "job-%j.out"), job_name="mpiml-node-lost")
    job = slurm_cluster.sbatch(script, workdir=tmp_path, env={"MPIML_RESTARTS": "1", "MPIML_MIN_RANKS": "2"})
    log = job_log(tmp_path, job)
    deadline = time.monotonic() + 300
    while not (tmp_path / "ck" / "manifest.json").exists():  # the first checkpoint: well inside the run
        assert time.monotonic() < deadline, log.read_text() if log.exists() else "no log"
        time.sleep(0.2)
    record = slurm_cluster.records(job)[0]
    nodes = slurm_cluster.run("scontrol", "show", "hostnames", record["NodeList"]).stdout.split()
    lost = next(node for node in nodes if node != record["BatchHost"])
    try:
        done = slurm_cluster.run("scontrol", "update", f"nodename={lost}", "state=down", "reason=mpiml-test")
        assert done.returncode == 0, done.stderr
        finished = slurm_cluster.wait(job, timeout=600)
    finally:  # back in service before the next test submits (it would wait for two nodes)
        slurm_cluster.run("scontrol", "update", f"nodename={lost}", "state=resume")
        until = time.monotonic() + 120
        while time.monotonic() < until and "idle" not in slurm_cluster.run("sinfo", "-h", "-n", lost, "-o",
                                                                            "%T").stdout:
            time.sleep(0.5)
    text = log.read_text()
    assert finished.ok, (finished.states, text)
    assert "mpiml run: attempt 1/2: 4 rank(s) under srun" in text, text
    assert "restarting on 2 rank(s)" in text and f"nodes now {record['BatchHost']}" in text, text
    assert re.search(r"attempt 2/2: 2 rank\(s\) under srun, resuming from step \d+", text), text
    with np.load(tmp_path / "m.npz", allow_pickle=False) as model:
        assert np.isfinite(model["theta"]).all()
