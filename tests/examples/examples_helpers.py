"""Run the scripts of examples/ under bounded mpiexec and read the numbers they print."""

from __future__ import annotations

import math
import re
import sys

import numpy as np
from scipy.special import expit

from mpirun import REPO, run_mpi

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
    """Sync SGD's logistic regression in one process, over the global batches every rank count and
    layout draws (``mpiml.train.plan.sync_plan``); returns the final training objective."""
    from mpiml.train import plan

    rows_total, w, b = X.shape[0], np.zeros(X.shape[1]), 0.0
    for epoch in range(epochs):
        order, _, _ = plan.sync_plan(seed, epoch, rows_total, 0, rows_total, batch)  # the global permutation
        for s in range(math.ceil(rows_total / batch)):
            rows = order[s * batch:(s + 1) * batch]
            r = expit(X[rows] @ w + b) - y[rows]
            w, b = w - lr * (X[rows].T @ r / len(rows) + alpha * w), b - lr * r.mean()
    z = X @ w + b
    return float(np.mean(np.logaddexp(0.0, z) - y * z) + 0.5 * alpha * w @ w)
