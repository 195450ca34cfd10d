"""``mpiml sgd`` / ``mpiml mf`` with checkpoints, as users run them: misuse is refused in one line, exit 2.

Most cases share one ``mpiexec`` (p = 3): :data:`SCENARIO` runs a list of steps in-process
(command lines through the console entry's error handling, and file damage done on rank 0
between them), and reports each step's exit status and what every rank wrote to stderr.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
from clirun import mpiml
from mpirun import mpi_env, mpiexec_command, run_mpi

from mpiml.runtime.files import load_npz

SCENARIO = r"""
import contextlib, io, json, os, sys
from pathlib import Path
from mpi4py import MPI
from mpiml.cli.main import main
from mpiml.runtime.abort import run_or_abort

comm = MPI.COMM_WORLD
steps, report = json.loads(sys.argv[1]), []
for step in steps:
    if "damage" in step:
        damaged = []
        if comm.rank == 0:
            try:
                files = sorted(Path(step["dir"]).glob("step-*.npz"), reverse=True)
                for path in files[:1] if step["which"] == "latest" else files:
                    data = path.read_bytes()
                    path.write_bytes(data[: len(data) // 2] if step["damage"] == "truncate" else b"")
                    damaged.append(str(path))
            except BaseException:
                import traceback
                traceback.print_exc()
                comm.Abort(1)
        report.append({"damaged": damaged})
        comm.Barrier()
        continue
    os.environ.pop("MPIML_CHECKPOINT_DIR", None)
    os.environ.update(step.get("env", {}))
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            code = run_or_abort(main, step["argv"])
        except SystemExit as exc:
            code = exc.code
    report.append({"code": code, "stderr": comm.gather(err.getvalue(), root=0)})
if comm.rank == 0:
    Path(sys.argv[2]).write_text(json.dumps(report))
"""

SGD = ["sgd", "--data", "synthetic:classification,n=240,d=4,seed=3", "--strategy", "sync", "--epochs", "2",
       "--batch-size", "32", "--lr", "0.1", "--json"]
MF = ["mf", "--ratings", "synthetic:users=40,items=30,ratings=600,rank=3,seed=1", "--rank", "3", "--iters", "3",
      "--json"]
ENV = {"MPIML_KERNELS": "numpy", "MPIML_PROGRESS": "never"}


def _errors(step) -> list:
    """The ``mpiml: error:`` lines of every rank; no traceback anywhere."""
    text = "".join(step["stderr"])
    assert "Traceback" not in text and "allow_pickle" not in text, text
    return [line for line in text.splitlines() if line.startswith("mpiml: error:")]


def _refused(step, *parts) -> str:
    lines = _errors(step)
    assert step["code"] == 2 and len(lines) == 1, step
    for part in parts:
        assert part in lines[0], (part, lines[0])
    return lines[0]


def _fine(step):
    assert step["code"] == 0 and not _errors(step), step


def test_misused_checkpoint_directories_are_refused_naming_the_difference(tmp_path):
    ck, mf_ck, env_ck = tmp_path / "ck", tmp_path / "mf-ck", tmp_path / "env"
    sgd = [*SGD, "--checkpoint-dir", str(ck)]
    mf = [*MF, "--checkpoint-dir", str(mf_ck)]
    steps = [
        {"argv": [*sgd, "--out", str(tmp_path / "two.npz")]},                            # 0
        {"argv": sgd},                                                                    # 1 fresh run over it
        {"argv": [*sgd, "--resume", "--lr", "0.05"]},                                     # 2 other settings
        {"argv": [*sgd, "--resume", "--data", "synthetic:classification,n=240,d=4,seed=4"]},  # 3 other data
        {"argv": [*sgd, "--resume", "--test-fraction", "0.25"]},                          # 4 other rows
        {"argv": [*sgd, "--resume", "--epochs", "3", "--out", str(tmp_path / "three.npz")]},  # 5 train further
        {"damage": "truncate", "dir": str(ck), "which": "latest"},                        # 6
        {"argv": [*sgd, "--resume", "--epochs", "3", "--out", str(tmp_path / "again.npz")]},  # 7 falls back
        {"damage": "empty", "dir": str(ck), "which": "all"},                              # 8
        {"argv": [*sgd, "--resume", "--epochs", "3"]},                                    # 9 nothing usable
        {"argv": [*sgd, "--overwrite", "--out", str(tmp_path / "fresh.npz")]},            # 10 start afresh
        {"argv": mf},                                                                     # 11
        {"argv": [*mf, "--resume", "--reg", "0.2"]},                                      # 12 other reg
        {"argv": [*mf, "--resume", "--ratings", "synthetic:users=40,items=30,ratings=600,rank=3,seed=2"]},  # 13
        {"argv": [*mf, "--resume", "--iters", "4", "--collective-algorithm", "ring"]},   # 14 may change
        {"argv": SGD, "env": {"MPIML_CHECKPOINT_DIR": str(env_ck)}},                      # 15 env: DIR/sgd
        {"argv": MF, "env": {"MPIML_CHECKPOINT_DIR": str(env_ck)}},                       # 16 env: DIR/mf
    ]
    out = tmp_path / "report.json"
    result = run_mpi(3, [sys.executable, "-c", SCENARIO, json.dumps(steps), str(out)], timeout=150, env=ENV,
                     cwd=tmp_path)
    assert result.returncode == 0, result.describe()
    report = json.loads(out.read_text())
    assert len(report) == len(steps)
    _fine(report[0])
    _refused(report[1], f"checkpoint directory {ck} already holds a checkpoint (step ", "--resume", "--overwrite")
    _refused(report[2], f"checkpoint in {ck} was written with lr=0.1, this run has lr=0.05")
    line = _refused(report[3], "was written with data=(rows ", "features 4, hash ", "this run has data=(rows ")
    assert "lr" not in line and "epochs" not in line
    _refused(report[4], "was written with data=(rows ", "this run has data=(rows ")
    _fine(report[5])
    latest = report[6]["damaged"][0]
    _fine(report[7])
    warnings = "".join(report[7]["stderr"])
    assert warnings.count("mpiml: warning:") == 2 and f"{latest} is unusable" in warnings, warnings
    assert "resuming from the previous checkpoint" in warnings
    # resumed from the previous checkpoint, it trains to the same model as the uninterrupted continuation
    three, again = load_npz(tmp_path / "three.npz"), load_npz(tmp_path / "again.npz")
    assert all(np.array_equal(three[k], again[k]) for k in three)
    assert len(report[8]["damaged"]) == 2
    _refused(report[9], f"no usable checkpoint in {ck}", *report[8]["damaged"])
    _fine(report[10])
    _fine(report[11])
    _refused(report[12], f"checkpoint in {mf_ck} was written with reg=0.08, this run has reg=0.2")
    _refused(report[13], f"checkpoint in {mf_ck} was written with data=", "this run has data=")
    _fine(report[14])
    _fine(report[15])
    _fine(report[16])
    assert (env_ck / "sgd" / "manifest.json").exists() and (env_ck / "mf" / "manifest.json").exists()
    assert not list(tmp_path.rglob("mpiml.lock")) and not list(tmp_path.rglob(".*.tmp"))


def test_a_second_job_on_the_same_directory_is_refused(tmp_path):
    ck = tmp_path / "ck"
    argv = [sys.executable, "-m", "mpiml", *MF, "--iters", "100000", "--checkpoint-every", "100000",
            "--checkpoint-dir", str(ck)]
    log = open(tmp_path / "first.err", "w")  # noqa: SIM115 - closed below; a pipe could fill up and block the job
    first = subprocess.Popen(mpiexec_command(1, argv), env=mpi_env(ENV), stdout=subprocess.DEVNULL, stderr=log,
                             text=True, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not (ck / "mpiml.lock").exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (ck / "mpiml.lock").exists(), first.poll()
        owner = json.loads((ck / "mpiml.lock").read_text())
        second = mpiml(2, *MF, "--checkpoint-dir", ck, "--resume", status=None, env=ENV)
        line = _refused({"code": second.returncode, "stderr": [second.stderr]}, f"checkpoint directory {ck} is in "
                        f"use by mpiml mf (host {socket.gethostname()}, PID {owner['pid']}")
        assert second.stdout.strip() == "", line
        first.send_signal(signal.SIGTERM)  # the first job checkpoints, stops (status 3) and unlocks
        first.wait(timeout=60)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
        log.close()
    assert first.returncode == 3, (tmp_path / "first.err").read_text()[-3000:]
    assert not (ck / "mpiml.lock").exists() and (ck / "manifest.json").exists()
