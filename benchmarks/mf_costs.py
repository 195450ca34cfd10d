"""Fit the row-cost constants of :mod:`mpiml.mf.partition` to measured row solves.

    PYTHONPATH=. python benchmarks/mf_costs.py            # both code paths
    MPIML_KERNELS=numpy PYTHONPATH=. python benchmarks/mf_costs.py

For each factor rank ``k`` and rating count ``nnz`` it times one half-step over many rows
that all have ``nnz`` ratings (CPU seconds, one thread), for ALS (``als.half_step``) and
implicit ALS (``ials.ials_rows``, Cholesky and CG), then fits by least squares

    seconds per row = t * (overhead + dense * k**3 / 3 + nnz * k**2 + per_rating * nnz)          (Cholesky)
    seconds per row = t * (overhead + dense * cg k**2 + (2 cg + 2) nnz k + per_rating * nnz)     (CG)

(non-negative, relative least squares) and prints ``t`` (seconds per unit), ``dense``,
``per_rating`` and ``overhead`` (in units), with the worst relative error of the fit. The
constants in ``partition.COSTS`` come from this output.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_var] = "1"

import numpy as np  # noqa: E402


def rows_with(n_rows, nnz, n_cols, rng):
    from mpiml.mf.partition import build_rows

    rows = np.repeat(np.arange(n_rows), nnz)
    cols = np.concatenate([rng.choice(n_cols, size=nnz, replace=False) for _ in range(n_rows)])
    return build_rows(0, n_rows, rows, cols, rng.integers(1, 6, size=rows.size).astype(np.float64))


def measure(kind, k, nnz, rng, budget=2e8):
    from mpiml.mf import als, ials

    n_cols = max(4 * nnz, 2000)
    n_rows = int(np.clip(budget / (k**3 / 3 + nnz * k * k + 2000.0 * k), 20, 4000))
    rows = rows_with(n_rows, nnz, n_cols, rng)
    other = rng.normal(scale=k**-0.5, size=(n_cols, k))
    best = np.inf
    for _ in range(3):
        start = time.process_time()
        if kind == "als":
            own = np.zeros((n_rows, k))
            als.half_step(rows, own, other, 3.5, 0.05, als.Layout(k), "users")
        else:
            solver = "cg" if kind == "ials_cg" else "cholesky"
            ials.ials_rows(rows, other, other.T @ other, 0.1, 1.0, solver, 3, np.zeros((n_rows, k)))
        best = min(best, time.process_time() - start)
    return best / n_rows


def fit(kind, samples, cg_steps=3):
    """Non-negative least squares in relative terms: every sample weighs alike however long it took."""
    from scipy.optimize import nnls

    k, nnz, sec = (np.array(c, dtype=np.float64) for c in zip(*samples))
    if kind == "ials_cg":
        columns = [np.ones_like(k), cg_steps * k * k, nnz, (2 * cg_steps + 2) * nnz * k]
    else:
        columns = [np.ones_like(k), k**3 / 3, nnz, nnz * k * k]
    design = np.column_stack(columns)
    coef, _ = nnls(design / sec[:, None], np.ones_like(sec))
    unit = coef[-1]
    return {"seconds_per_unit": unit, "overhead": coef[0] / unit, "dense": coef[1] / unit,
            "per_rating": coef[2] / unit, "max_relative_error": float(np.max(np.abs(design @ coef / sec - 1)))}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", default="8,16,32,64,128")
    parser.add_argument("--nnz", default="1,5,20,100,400,2000")
    parser.add_argument("--kinds", default="als,ials_cholesky,ials_cg")
    args = parser.parse_args(argv)
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
    from mpiml.runtime.jit import compiled

    rng = np.random.default_rng(0)
    report = {"compiled": compiled(), "load": os.getloadavg()[0]}
    for kind in args.kinds.split(","):
        samples = [(k, nnz, measure(kind, k, nnz, rng)) for k in map(int, args.ranks.split(","))
                   for nnz in map(int, args.nnz.split(","))]
        report[kind] = {**fit(kind, samples), "samples": samples}
    report["load_after"] = os.getloadavg()[0]
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
