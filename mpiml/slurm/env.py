"""What a process learns from Slurm's environment: job, array task, rank, restarts.

Slurm sets ``SLURM_*`` variables in every job (batch script) and every task of a job
step (``srun``). mpiml uses them to name logs and checkpoint directories so that a
requeued job (same ``SLURM_JOB_ID``, ``SLURM_RESTART_COUNT`` one higher) finds the
checkpoint its previous run wrote. Outside Slurm every field is None (restarts 0).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

from mpiml.errors import ArgumentError

# field -> variable; integers are parsed, the rest kept as text.
_INT_FIELDS = {
    "procid": "SLURM_PROCID",
    "ntasks": "SLURM_NTASKS",
    "localid": "SLURM_LOCALID",
    "nodeid": "SLURM_NODEID",
    "nnodes": "SLURM_JOB_NUM_NODES",
    "cpus_per_task": "SLURM_CPUS_PER_TASK",
    "array_task_id": "SLURM_ARRAY_TASK_ID",
}
_TEXT_FIELDS = {
    "job_id": "SLURM_JOB_ID",
    "array_job_id": "SLURM_ARRAY_JOB_ID",
    "step_id": "SLURM_STEP_ID",
    "job_name": "SLURM_JOB_NAME",
    "nodename": "SLURMD_NODENAME",
    "submit_dir": "SLURM_SUBMIT_DIR",
}
CHECKPOINT_DIR_VARIABLE = "MPIML_CHECKPOINT_DIR"


@dataclass(frozen=True)
class SlurmEnv:
    """The Slurm facts of one process (None where Slurm did not set them)."""

    job_id: str | None = None
    array_job_id: str | None = None
    array_task_id: int | None = None
    step_id: str | None = None
    job_name: str | None = None
    nodename: str | None = None
    submit_dir: str | None = None
    procid: int | None = None
    ntasks: int | None = None
    localid: int | None = None
    nodeid: int | None = None
    nnodes: int | None = None
    cpus_per_task: int | None = None
    restart_count: int = 0

    @property
    def in_job(self) -> bool:
        return self.job_id is not None

    @property
    def run_id(self) -> str | None:
        """``JOBID``, or ``ARRAYJOBID_TASK`` for an array task; the same after a requeue."""
        if self.array_job_id is not None and self.array_task_id is not None:
            return f"{self.array_job_id}_{self.array_task_id}"
        return self.job_id

    def as_dict(self) -> dict:
        return {**asdict(self), "run_id": self.run_id}


def _int(environ, variable):
    text = environ.get(variable)
    if text is None or text == "":
        return None
    try:
        return int(text)
    except ValueError:
        raise ArgumentError(f"{variable}={text!r} is not a whole number") from None


def slurm_env(environ=None) -> SlurmEnv:
    """The :class:`SlurmEnv` of ``environ`` (default ``os.environ``)."""
    environ = os.environ if environ is None else environ
    values = {field: environ.get(variable) for field, variable in _TEXT_FIELDS.items()}
    values.update({field: _int(environ, variable) for field, variable in _INT_FIELDS.items()})
    values["restart_count"] = _int(environ, "SLURM_RESTART_COUNT") or 0
    return SlurmEnv(**values)


def checkpoint_dir(base="checkpoints", environ=None) -> Path:
    """Where a job keeps its checkpoints.

    ``MPIML_CHECKPOINT_DIR`` if set (the preemptible template sets it), else
    ``base/RUN_ID`` inside a Slurm job (stable across requeues), else ``base/local``.
    """
    environ = os.environ if environ is None else environ
    chosen = environ.get(CHECKPOINT_DIR_VARIABLE)
    if chosen:
        return Path(chosen)
    return Path(base) / (slurm_env(environ).run_id or "local")


def log_prefix(rank=None, environ=None) -> str:
    """``[job 123_4 restart 1 rank 0]``-style prefix for log lines (empty parts left out)."""
    env = slurm_env(environ)
    parts = []
    if env.run_id:
        parts.append(f"job {env.run_id}")
    if env.restart_count:
        parts.append(f"restart {env.restart_count}")
    if rank is not None:
        parts.append(f"rank {rank}")
    return f"[{' '.join(parts)}]" if parts else ""
