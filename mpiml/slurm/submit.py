"""Handing a rendered script to ``sbatch``."""

from __future__ import annotations

import shutil
import subprocess

from mpiml.errors import SubmitError


def sbatch(script: str, args=(), timeout: float = 120) -> str:
    """Submit ``script`` (its text, on sbatch's standard input); returns the job id."""
    program = shutil.which("sbatch")
    if program is None:
        raise SubmitError("sbatch not found: submit from a machine of your Slurm cluster (a login node)")
    try:
        done = subprocess.run([program, "--parsable", *args], input=script, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        raise SubmitError(f"sbatch did not answer within {timeout:.0f} s") from None
    if done.returncode != 0:
        raise SubmitError(f"sbatch refused the job: {done.stderr.strip() or done.stdout.strip()}")
    # --parsable prints "JOBID" or "JOBID;CLUSTER"
    job_id = done.stdout.strip().split(";")[0]
    if not job_id.isdigit():
        raise SubmitError(f"unexpected sbatch output {done.stdout.strip()!r}")
    return job_id
