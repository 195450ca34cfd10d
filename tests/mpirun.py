"""Start bounded ``mpiexec`` runs from tests, for MPICH and Open MPI alike.

Every run has a timeout; on expiry the whole process group is killed and the caller
gets a result saying so, so no test can hang.
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from mpiml.runtime.launcher import MISSING, find_mpiexec

REPO = Path(__file__).resolve().parent.parent
DEFAULT_TIMEOUT = float(os.environ.get("MPIML_TEST_TIMEOUT", "600"))
# Variables a launcher sets for its children; a nested mpiexec must not inherit them.
_LAUNCHER_PREFIXES = ("PMI_", "PMIX_", "HYDRA_", "MPI_LOCAL", "OMPI_COMM_WORLD", "OMPI_MCA_ess",
                      "OMPI_MCA_orte", "OMPI_MCA_pmix", "PRTE_", "SLURM_")


@functools.lru_cache(maxsize=None)
def mpiexec_path() -> str:
    """``MPIML_MPIEXEC``, else the ``mpiexec`` beside this Python (a venv), else on PATH."""
    found = find_mpiexec()
    if not found:
        raise RuntimeError(MISSING)
    return found


@functools.lru_cache(maxsize=None)
def implementation() -> str:
    """``"openmpi"`` or ``"mpich"``, from ``mpiexec --version``."""
    text = subprocess.run([mpiexec_path(), "--version"], capture_output=True, text=True, timeout=60).stdout
    return "openmpi" if "Open MPI" in text or "OpenRTE" in text else "mpich"


def mpiexec_command(ranks: int, argv: list[str], tag_output: bool = False) -> list[str]:
    """The launcher line for ``ranks`` processes, allowing more ranks than cores.

    ``tag_output`` prefixes every output line with its rank (for logs of test runs).
    """
    if implementation() == "openmpi":
        flags = ["--oversubscribe", "--mca", "pml", "ob1", "--mca", "btl", "self,sm", "--mca", "osc", "^ucx"]
        flags += ["--tag-output"] if tag_output else []
    else:
        flags = ["-prepend-rank"] if tag_output else []
    return [mpiexec_path(), "-n", str(ranks), *flags, *argv]


def mpi_env(extra: dict | None = None) -> dict:
    """The environment for an MPI job: one BLAS/OpenMP thread per rank, root allowed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_LAUNCHER_PREFIXES)}
    env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONUNBUFFERED="1", PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])))
    if implementation() == "openmpi":
        env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    env.update(extra or {})
    return env


@dataclass
class MpiResult:
    ranks: int
    returncode: int | None  # None: killed after the timeout
    stdout: str
    stderr: str
    seconds: float

    @property
    def hung(self) -> bool:
        return self.returncode is None

    def describe(self, tail: int = 6000) -> str:
        state = (f"hung: killed after {self.seconds:.0f}s" if self.hung else f"exit status {self.returncode}")
        return (f"mpiexec -n {self.ranks}: {state}\n--- stdout (tail) ---\n{self.stdout[-tail:]}"
                f"\n--- stderr (tail) ---\n{self.stderr[-tail:]}")


def run_mpi(ranks: int, argv: list[str], timeout: float = DEFAULT_TIMEOUT, env: dict | None = None,
            cwd: str | Path = REPO, tag_output: bool = False) -> MpiResult:
    """Run ``argv`` on ``ranks`` processes; never longer than ``timeout`` seconds."""
    import time

    start = time.monotonic()
    proc = subprocess.Popen(mpiexec_command(ranks, argv, tag_output), cwd=cwd, env=mpi_env(env), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
        code = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        code = None
    return MpiResult(ranks, code, out, err, time.monotonic() - start)


def python_command(*args: str) -> list[str]:
    return [sys.executable, *args]
