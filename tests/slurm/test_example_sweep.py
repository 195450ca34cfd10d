"""examples/slurm_sweep.py on the local Slurm cluster: every run's result against numpy gradient descent."""

from __future__ import annotations

import re
import sys

import pytest
from example_oracle import gradient_descent
from mpirun import REPO

SWEEP = [sys.executable, str(REPO / "examples" / "slurm_sweep.py")]


def test_sweep_example_submits_waits_and_gathers(slurm_cluster, tmp_path):
    # One task at a time: on the one-machine cluster, MPICH steps that start in the same moment
    # on the same host sometimes fail in MPI_Init (UCX address exchange) or hang there.
    rates, steps = [0.05, 0.1, 0.2], 30
    done = slurm_cluster.run(*SWEEP, "--rates", ",".join(map(str, rates)), "--steps", str(steps), "--workdir",
                             str(tmp_path / "sweep"), "--max-parallel", "1", timeout=300, cwd=tmp_path)
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert re.search(r"^submitted job array \d+ \(3 runs\) and waited for it$", done.stdout, re.M), done.stdout
    runs = re.findall(r"^run (\d+) --rate (\S+) objective (\S+)$", done.stdout, re.M)
    assert [(int(task), float(rate)) for task, rate, _ in runs] == list(enumerate(rates)), done.stdout
    objectives = [gradient_descent(rate, steps)[1] for rate in rates]
    for (_, _, printed), expected in zip(runs, objectives):
        assert float(printed) == pytest.approx(expected, rel=1e-9)
    best = rates[objectives.index(min(objectives))]
    assert re.search(rf"^best --rate {best} objective ", done.stdout, re.M), done.stdout
