"""``mpiml run``: supervised restarts from the last checkpoint after a rank dies.

The decisions (retry or not, rank count, command, environment) are pure and tested here
directly; three real runs check the whole: a rank killed mid-run (``MPIML_FAULT`` on the
first attempt only) is survived with the uninterrupted model bitwise at the same rank count,
a run with ``--min-ranks`` finishes at fewer ranks, and exit status 2 is never retried.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from argparse import Namespace

import numpy as np
import pytest
from clirun import MPIML
from mpirun import mpi_env, mpiexec_command

from mpiml.cli import run
from mpiml.cli.parser import UsageError

SGD = ["mpiml", "sgd", "--data", "synthetic:classification,n=2000,d=10", "--strategy", "sync", "--epochs", "4"]


def options(**given):
    values = {"ranks": 2, "restarts": 2, "min_ranks": None, "launcher": "mpiexec", "mpi": None}
    values.update(given)
    return Namespace(**values)


def test_plan_reads_the_job_and_refuses_what_cannot_restart(tmp_path):
    job = run.plan(options(), [*SGD, "--checkpoint-dir", str(tmp_path)], {})
    assert job.resumable and job.checkpoint_dir == str(tmp_path) and job.ranks == job.min_ranks == 2
    assert run.plan(options(), SGD, {"MPIML_CHECKPOINT_DIR": str(tmp_path)}).checkpoint_dir == str(tmp_path)
    with pytest.raises(UsageError, match="--restarts needs a job that checkpoints"):
        run.plan(options(), SGD, {})
    assert run.plan(options(restarts=0), SGD, {}).checkpoint_dir is None  # no restarts: nothing to resume
    with pytest.raises(UsageError, match="the job's command would fail: mpiml sgd: --test-fraction"):
        run.plan(options(), [*SGD, "--checkpoint-dir", "c", "--test-fraction", "1.5"], {})
    with pytest.raises(UsageError, match="after `--`"):
        run.plan(options(), [], {})
    with pytest.raises(UsageError, match="--min-ranks must be between 1 and -n 2"):
        run.plan(options(min_ranks=3), ["hostname"], {})
    with pytest.raises(UsageError, match="-n P"):
        run.plan(options(ranks=None), ["hostname"], {})
    with pytest.raises(UsageError, match="--restarts must be at least 0"):
        run.plan(options(restarts=-1), ["hostname"], {})
    with pytest.raises(UsageError, match="--mpi is srun's option"):
        run.plan(options(mpi="pmi2"), ["hostname"], {})
    with pytest.raises(UsageError, match="starts the ranks itself"):
        run.plan(options(), ["hostname"], {"PMI_RANK": "0"})  # under mpiexec by mistake
    other = run.plan(options(), ["python", "train.py"], {})  # not mpiml: rerun as it is
    assert not other.resumable and run.job_command(other, 2) == ["python", "train.py"]


def test_inside_slurm_the_launcher_is_srun_with_the_allocation_s_tasks():
    environ = {"SLURM_JOB_ID": "7", "SLURM_NTASKS": "8", "SLURM_JOB_NUM_NODES": "4"}
    job = run.plan(options(ranks=None, launcher="auto", mpi="pmi2", min_ranks=4), ["hostname"], environ)
    assert (job.launcher, job.ranks, job.min_ranks) == ("srun", 8, 4)
    assert run.launch_command(job, 6, ["hostname"], exclude={"n3"}) == [
        "srun", "--mpi=pmi2", "--ntasks=6", "--kill-on-bad-exit=1", "--exclude=n3", "hostname"]
    assert run.tasks_per_node(environ) == 2 and run.tasks_per_node({"SLURM_NTASKS_PER_NODE": "3"}) == 3
    sinfo = "n1 idle\nn2 down*\nn3 allocated\nn4 draining\nn5 mixed~\n"
    assert run.nodes_gone(sinfo) == {"n2", "n4"}
    assert run.next_ranks(job, 8, available=2 * 2) == 4      # two of four nodes gone: 4 ranks still fit
    assert run.next_ranks(job, 8, available=2 * 1) is None   # fewer than --min-ranks: give up
    assert run.next_ranks(job, 6, available=8) == 6          # never more than before
    # A failed node leaves a --no-kill job: srun then needs the smaller allocation in its environment.
    line = "JobId=7 JobName=x NumNodes=3 NumCPUs=6 NodeList=n[1,3-4] BatchHost=n1"
    assert run.job_allocation(line) == ("n[1,3-4]", 3) and run.job_allocation("JobId=7") is None
    step = run.slurm_step_env({**environ, "SLURM_TASKS_PER_NODE": "2(x4)", "HOME": "/h"}, "n[1,3-4]", 3)
    assert step["SLURM_JOB_NUM_NODES"] == step["SLURM_NNODES"] == "3" and step["SLURM_NODELIST"] == "n[1,3-4]"
    assert "SLURM_TASKS_PER_NODE" not in step and "SLURM_NTASKS" not in step and step["HOME"] == "/h"


def test_retry_decisions_and_the_next_command():
    assert [run.outcome(s) for s in (0, 2, 3, 1, 9, 137)] == ["done", "usage", "preempted", "failed", "failed",
                                                                "failed"]
    assert run.exit_status(-9) == 137 and run.exit_status(9) == 9
    job = run.plan(options(min_ranks=1), [*SGD, "--checkpoint-dir", "c"], {})
    assert run.next_ranks(job, 3) == 2 and run.next_ranks(job, 1) == 1  # mpiexec: one fewer, down to M
    same = run.plan(options(), [*SGD, "--checkpoint-dir", "c"], {})
    assert run.next_ranks(same, 2) == 2
    assert run.job_command(same, 1) == [*SGD, "--checkpoint-dir", "c"]
    assert run.job_command(same, 2) == [*SGD, "--checkpoint-dir", "c", "--resume"]
    resumed = run.Plan(tuple([*SGD, "--overwrite", "--resume"]), 2, 2, 1, "mpiexec", True, "c")
    assert run.job_command(resumed, 1) == [*SGD, "--overwrite", "--resume"]  # the user's own first attempt
    assert run.job_command(resumed, 2) == [*SGD, "--resume"]                 # a restart never overwrites
    assert run.launch_command(same, 3, ["x"], "/bin/mpiexec") == ["/bin/mpiexec", "-n", "3", "x"]


def test_an_injected_fault_hits_only_the_attempts_named():
    environ = {"MPIML_FAULT": "rank=1,collective=3", "HOME": "/h"}
    assert run.attempt_env(environ, 1)["MPIML_FAULT"] == "rank=1,collective=3"
    assert "MPIML_FAULT" not in run.attempt_env(environ, 2) and run.attempt_env(environ, 2)["HOME"] == "/h"
    every = {**environ, "MPIML_FAULT_ATTEMPTS": "1,2"}
    assert "MPIML_FAULT" in run.attempt_env(every, 2) and "MPIML_FAULT" not in run.attempt_env(every, 3)


def test_latest_step_reads_the_newest_manifest(tmp_path):
    assert run.latest_step(tmp_path) is None and run.latest_step(None) is None
    (tmp_path / "sgd").mkdir()
    (tmp_path / "sgd" / "manifest.json").write_text('{"step": 21, "latest": "step-00000021.npz"}')
    assert run.latest_step(tmp_path) == (21, str(tmp_path / "sgd" / "manifest.json"))
    (tmp_path / "manifest.json").write_text("{broken")
    assert run.latest_step(tmp_path)[0] == 21


def supervise(tmp_path, *args, env=None, timeout=240):
    """``mpiml run ARGS`` as a user starts it (not under mpiexec); bounded."""
    environment = mpi_env({"MPIML_PROGRESS": "never", "MPIML_MPIEXEC": mpiexec_command(1, [])[0], **(env or {})})
    command = [*MPIML, "run", *args]
    proc = subprocess.Popen(command, cwd=tmp_path, env=environment, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"mpiml run hung:\n{err[-4000:]}")
    return proc.returncode, out, err


def job(tmp_path, name, *extra):
    python_mpiml = [sys.executable, "-m", "mpiml", *SGD[1:]]
    return [*python_mpiml, "--checkpoint-dir", str(tmp_path / f"ck-{name}"),
            "--out", str(tmp_path / f"{name}.npz"), "--json", *extra]


def model(path):
    with np.load(path, allow_pickle=False) as arrays:
        return {key: arrays[key].copy() for key in arrays.files}


def test_a_killed_rank_is_restarted_from_the_checkpoint_to_the_same_model(tmp_path):
    status, _, err = supervise(tmp_path, "-n", "2", "--", *job(tmp_path, "steady"))
    assert status == 0, err
    # Rank 1 dies on its 30th collective call (mid-training, after the checkpoint at update 21).
    status, _, err = supervise(tmp_path, "-n", "2", "--restarts", "2", "--", *job(tmp_path, "killed"),
                               env={"MPIML_FAULT": "rank=1,collective=30"})
    assert status == 0, err
    assert "attempt 1/3: 2 rank(s)" in err and "attempt 1/3 ended with exit status" in err
    assert "attempt 2/3: 2 rank(s) under mpiexec, resuming from step 21" in err, err
    assert "attempt 2/3 ended with exit status 0" in err and "attempt 3/3" not in err
    steady, killed = model(tmp_path / "steady.npz"), model(tmp_path / "killed.npz")
    assert steady.keys() == killed.keys()
    for key in steady:
        assert steady[key].tobytes() == killed[key].tobytes(), key


def test_with_min_ranks_a_restart_runs_on_fewer_ranks(tmp_path):
    status, out, err = supervise(tmp_path, "-n", "2", "--min-ranks", "1", "--restarts", "1", "--",
                                 *job(tmp_path, "shrunk"), env={"MPIML_FAULT": "rank=1,collective=30"})
    assert status == 0, err
    assert "attempt 1/2: 2 rank(s)" in err and "restarting on 1 rank(s)" in err
    assert "attempt 2/2: 1 rank(s) under mpiexec, resuming from step 21" in err, err
    summary = json.loads([line for line in out.splitlines() if line.startswith("{")][-1])
    assert summary["ranks"] == 1 and summary["resumed_from_update"] == 21 and summary["updates"] == 28
    assert np.isfinite(model(tmp_path / "shrunk.npz")["theta"]).all()


def test_what_is_retried_and_what_is_not(tmp_path):
    """Exit statuses 2 and 3 end the supervision at once; others are retried until the restarts run out."""
    def exiting(code):
        return ["--", sys.executable, "-c", f"import sys; print('ran', flush=True); sys.exit({code})"]

    status, out, err = supervise(tmp_path, "-n", "1", "--restarts", "3", *exiting(2))
    assert status == 2 and out.count("ran") == 1 and "attempt 1/4 ended with exit status 2" in err, err
    assert "(bad input or arguments): not retried" in err and "attempt 2/4" not in err
    status, out, err = supervise(tmp_path, "-n", "1", "--restarts", "1", *exiting(5))
    assert status == 5 and out.count("ran") == 2, err
    assert "attempt 2/2 ended with exit status 5" in err and "no restarts left (--restarts 1)" in err
    # Exit status 3 (checkpointed on a signal): test_a_signal_is_passed_on_to_the_job_and_ends_the_supervision


def test_a_signal_is_passed_on_to_the_job_and_ends_the_supervision(tmp_path):
    """SIGUSR1 (what Slurm sends before a time limit) reaches the job, whose status is then final."""
    program = ("import signal, sys, time; signal.signal(signal.SIGUSR1, lambda *a: sys.exit(3)); "
               "print('ready', flush=True); time.sleep(60)")
    environment = mpi_env({"MPIML_MPIEXEC": mpiexec_command(1, [])[0]})
    proc = subprocess.Popen([*MPIML, "run", "-n", "1", "--restarts", "2", "--", sys.executable, "-c", program],
                            cwd=tmp_path, env=environment, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.2)
        proc.send_signal(signal.SIGUSR1)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 3, err
    assert "attempt 1/3 ended with exit status 3" in err and "attempt 2/3" not in err


FAKE_MPIML = """#!/usr/bin/env python3
import json, os, sys
with open(os.environ["MPIML_RECORD"], "w") as out:
    json.dump(sys.argv[1:], out)
"""


@pytest.mark.parametrize("template,expected", [
    ("preemptible", ["run", "--restarts", "2", "--min-ranks", "4", "--mpi", "pmi2", "--"]),
    ("multi-node", ["run", "-n", "4", "--restarts", "0", "--min-ranks", "4", "--launcher", "srun", "--mpi", "pmi2",
                    "--"]),
])
def test_the_slurm_templates_start_the_job_through_mpiml_run(tmp_path, template, expected):
    from mpiml.slurm import templates
    from mpiml.slurm.render import render_script

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "mpiml").write_text(FAKE_MPIML)
    (bin_dir / "mpiml").chmod(0o700)
    command = ["mpiml", "sgd", "--epochs", "2", "it's $(here)"]
    script = tmp_path / "job.sbatch"
    script.write_text(render_script(templates.find(template).read_text(), {}, command))
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "MPIML_RECORD": str(tmp_path / "argv.json"),
           "HOME": str(tmp_path),
           "SLURM_JOB_ID": "1", "SLURM_NTASKS": "4", "SLURM_JOB_NODELIST": "n[1-2]", "SLURM_SUBMIT_DIR": str(tmp_path)}
    done = subprocess.run(["bash", str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "argv.json").read_text()) == [*expected, *command]
