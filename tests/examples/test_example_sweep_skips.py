"""examples/slurm_sweep.py where there is no Slurm: one clear line, exit status 0 (the cluster run is
tests/slurm/test_example_sweep.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from examples_helpers import EXAMPLES
from mpirun import REPO, mpi_env


def test_without_sbatch_it_says_skipped_and_succeeds(tmp_path):
    env = mpi_env({"PATH": str(Path(sys.executable).parent)})  # this Python's folder: no sbatch there
    done = subprocess.run([sys.executable, str(EXAMPLES / "slurm_sweep.py"), "--workdir", str(tmp_path / "w")],
                          env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "skipped: no Slurm (sbatch not found)\n"
    assert not (tmp_path / "w").exists()
