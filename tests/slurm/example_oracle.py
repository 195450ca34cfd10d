"""The computation of examples/preemptible_job.py, redone serially in plain numpy."""

from __future__ import annotations

import importlib.util

import numpy as np
from mpirun import REPO

EXAMPLE_PATH = REPO / "examples" / "preemptible_job.py"


def load_example():
    spec = importlib.util.spec_from_file_location("preemptible_job", EXAMPLE_PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def gradient_descent(rate, steps, seed=7, rows=240, dim=6):
    """``(x, objective)`` after ``steps`` full-batch gradient steps from zero on the example's data."""
    a, b = load_example().make_problem(seed, rows, dim)
    x = np.zeros(dim)
    for _ in range(steps):
        x = x - rate * (a.T @ (a @ x - b)) / rows
    residual = a @ x - b
    return x, float(residual @ residual / (2 * rows))
