"""examples/preemptible_job.py keeps the preemption contract, under plain mpiexec (no Slurm).

SIGUSR1 to mpiexec (which forwards it to every rank) -> checkpoint, exit status 3;
``--resume`` continues to the result of an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
from example_oracle import EXAMPLE_PATH, gradient_descent
from mpirun import REPO, mpi_env, mpiexec_command, run_mpi

EXAMPLE = [sys.executable, str(EXAMPLE_PATH)]


def result(path):
    return json.loads(path.read_text())


def test_resume_continues_to_the_uninterrupted_result(tmp_path):
    ck = str(tmp_path / "ck")
    first = run_mpi(3, [*EXAMPLE, "--steps", "12", "--checkpoint-every", "5", "--checkpoint-dir", ck], timeout=120)
    assert first.returncode == 0, first.describe()
    resumed = run_mpi(3, [*EXAMPLE, "--steps", "20", "--checkpoint-dir", ck, "--resume",
                          "--result", str(tmp_path / "resumed.json")], timeout=120)
    assert resumed.returncode == 0 and "resumed from step 12" in resumed.stdout, resumed.describe()
    straight = run_mpi(3, [*EXAMPLE, "--steps", "20", "--checkpoint-dir", str(tmp_path / "other"),
                           "--result", str(tmp_path / "straight.json")], timeout=120)
    assert straight.returncode == 0, straight.describe()
    assert result(tmp_path / "resumed.json")["x"] == result(tmp_path / "straight.json")["x"]
    np.testing.assert_allclose(result(tmp_path / "straight.json")["x"], gradient_descent(0.1, 20)[0], rtol=1e-10)


def test_sigusr1_checkpoints_and_exits_with_status_3(tmp_path):
    ck = tmp_path / "ck"
    argv = [*EXAMPLE, "--steps", "200", "--sleep", "0.05", "--checkpoint-dir", str(ck)]
    proc = subprocess.Popen(mpiexec_command(2, argv), cwd=REPO, env=mpi_env(), text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, start_new_session=True)
    watchdog = threading.Timer(60, os.killpg, (proc.pid, signal.SIGKILL))  # readline must not hang the suite
    watchdog.start()
    try:
        assert "starting at step 0" in proc.stdout.readline()
        time.sleep(0.3)
        proc.send_signal(signal.SIGUSR1)
        out, err = proc.communicate(timeout=60)
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 3, (out, err)
    assert "SIGUSR1 received: checkpointed step" in out and "mpiml: preempted" in err
    step = json.loads((ck / "manifest.json").read_text())["step"]
    assert 0 < step < 200
    resumed = run_mpi(2, [*EXAMPLE, "--steps", "200", "--checkpoint-dir", str(ck), "--resume", "--json"],
                      timeout=120)
    assert resumed.returncode == 0, resumed.describe()
    final = json.loads(resumed.stdout)
    assert final["resumed_from_step"] == step
    np.testing.assert_allclose(final["x"], gradient_descent(0.1, 200)[0], rtol=1e-10)


def test_evaluate_without_checkpoint_is_a_clean_error(tmp_path):
    done = run_mpi(2, [*EXAMPLE, "--evaluate", "--checkpoint-dir", str(tmp_path / "none")], timeout=120)
    assert done.returncode == 2 and done.stderr.count("no checkpoint to evaluate") == 1, done.describe()
