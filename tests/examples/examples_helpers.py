"""Run the scripts of examples/ under bounded mpiexec and read the numbers they print."""

from __future__ import annotations

import re
import sys

import numpy as np
from mpirun import REPO, run_mpi
from oracle import sync_logistic_sgd

EXAMPLES = REPO / "examples"
TIMEOUT = 180  # seconds; an example takes a few, the bound only keeps a hang from stalling the suite


def run_example(name: str, ranks: int, *args, returncode: int = 0, env: dict | None = None, cwd=REPO):
    """``mpiexec -n ranks python examples/name args``; asserts its exit status."""
    result = run_mpi(ranks, [sys.executable, str(EXAMPLES / name), *map(str, args)], timeout=TIMEOUT, env=env,
                     cwd=cwd)
    assert result.returncode == returncode, result.describe()
    return result


def lines(stdout: str, label: str) -> list[str]:
    """The rest of each line that starts with ``label``."""
    return re.findall(rf"^{re.escape(label)} (.*)$", stdout, re.M)


def number(stdout: str, label: str) -> float:
    """The number on the one line ``label NUMBER`` (only rank 0 prints, so exactly one)."""
    found = lines(stdout, label)
    assert len(found) == 1, f"expected one line {label!r} NUMBER, got {found} in:\n{stdout}"
    return float(found[0].split()[0])


def serial_logistic_sgd_objective(X, y, epochs: int, batch: int, lr: float, alpha: float, seed: int) -> float:
    """The training objective after sync SGD in one process (:func:`oracle.sync_logistic_sgd`)."""
    theta = sync_logistic_sgd(X, y, epochs, batch, lr, alpha, seed)
    w, z = theta[:-1], X @ theta[:-1] + theta[-1]
    return float(np.mean(np.logaddexp(0.0, z) - y * z) + 0.5 * alpha * w @ w)
