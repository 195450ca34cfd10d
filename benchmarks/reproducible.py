"""The cost of reproducible mode (issue 20): per job and per allreduce size, as ratios to the ordinary mode.

    mpiexec -n 4 python benchmarks/reproducible.py [--repeats 5] [--json]

Every measurement interleaves the two modes (ordinary, reproducible, ordinary, ...) in one
run and reports the median seconds of each and the ratio of the medians, so that a shared,
noisy machine shows as spread rather than as a wrong verdict. Times are the slowest
rank's, after a barrier. The goal of issue 20: at most 1.5x the ordinary mode for the jobs
at p = 4.

Jobs (synthetic, in memory): ``sync`` SGD and ``lbfgs`` logistic regression on dense and
sparse rows, ALS and iALS (Cholesky and CG). Allreduce: ``mpiml.allreduce(x)`` against
``mpiml.allreduce(x, reproducible=True)`` of float64 vectors.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import numpy as np
import scipy.sparse as sp
from mpi4py import MPI

import mpiml
from mpiml.data.ratings import RatingsShard
from mpiml.data.synthetic_ratings import SyntheticSpec, synthetic_ratings
from mpiml.mf import ALS, ImplicitALS
from mpiml.sgd import LinearModel

COMM = MPI.COMM_WORLD
SIZES = (1, 128, 8192, 131072, 1 << 20)


def timed(fn) -> float:
    """Seconds of ``fn()`` on the slowest rank."""
    COMM.Barrier()
    start = time.perf_counter()
    fn()
    return COMM.allreduce(time.perf_counter() - start, op=MPI.MAX)


def compare(fn_ordinary, fn_reproducible, repeats):
    """Interleaved medians ``(ordinary, reproducible, ratio)``."""
    fn_ordinary(), fn_reproducible()   # warm: compiled kernels, communicator plans
    a, b = [], []
    for _ in range(repeats):
        a.append(timed(fn_ordinary))
        b.append(timed(fn_reproducible))
    ma, mb = statistics.median(a), statistics.median(b)
    return ma, mb, mb / ma


def rows_of(X, y):
    n = X.shape[0]
    lo, hi = n * COMM.rank // COMM.size, n * (COMM.rank + 1) // COMM.size
    return X[lo:hi], y[lo:hi]


def linear_jobs():
    rng = np.random.default_rng(0)
    n, d = 40000, 200
    X = rng.standard_normal((n, d))
    y = (X @ rng.standard_normal(d) + rng.standard_normal(n) > 0).astype(np.float64)
    Xs = sp.csr_matrix(X * (rng.random((n, d)) < 0.1))
    jobs = {}
    for name, data in (("dense", X), ("sparse", Xs)):
        Xr, yr = rows_of(data, y)
        for strategy, settings in (("sync", dict(epochs=2, batch_size=256)),
                                   ("lbfgs", dict(max_iter=40, tol=1e-12))):
            def job(flag, Xr=Xr, yr=yr, strategy=strategy, settings=settings):
                return lambda: LinearModel("logistic", strategy, reproducible=flag, **settings).fit(Xr, yr)
            jobs[f"{strategy} logistic {name} {n}x{d}"] = job
    return jobs


def mf_jobs():
    spec = SyntheticSpec(users=6000, items=3000, ratings=400000, rank=8, noise=0.1, seed=1)
    shard = synthetic_ratings(spec, COMM.rank, COMM.size)
    jobs = {}
    for label, make in (("als rank 16", lambda flag: ALS(rank=16, iters=3, reproducible=flag)),
                        ("ials cg rank 16", lambda flag: ImplicitALS(rank=16, iters=3, reproducible=flag)),
                        ("ials cholesky rank 16",
                         lambda flag: ImplicitALS(rank=16, iters=3, solver="cholesky", reproducible=flag))):
        def job(flag, make=make):
            return lambda: make(flag).fit(RatingsShard(shard.users, shard.items, shard.values, shard.keys))
        jobs[f"{label}, {spec.ratings} ratings"] = job
    return jobs


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    os.environ.pop("MPIML_REPRODUCIBLE", None)
    results = {"ranks": COMM.size, "jobs": {}, "allreduce": {}}
    for name, job in {**linear_jobs(), **mf_jobs()}.items():
        results["jobs"][name] = compare(job(False), job(True), args.repeats)
    for n in SIZES:
        x = np.random.default_rng(COMM.rank).standard_normal(n)
        out = np.empty_like(x)
        calls = max(1, min(200, (1 << 22) // n))

        def many(flag, x=x, out=out, calls=calls):
            def run():
                for _ in range(calls):
                    mpiml.allreduce(x, out=out, reproducible=flag)
            return run

        a, b, ratio = compare(many(False), many(True), args.repeats)
        results["allreduce"][n] = (a / calls, b / calls, ratio)
    if COMM.rank != 0:
        return
    if args.json:
        print(json.dumps(results))
        return
    print(f"reproducible mode against the ordinary mode, p = {COMM.size} (medians of {args.repeats}, "
          f"interleaved; load {os.getloadavg()[0]:.1f})")
    print(f"{'job':44s} {'ordinary s':>11s} {'reproducible s':>15s} {'ratio':>6s}")
    for name, (a, b, ratio) in results["jobs"].items():
        print(f"{name:44s} {a:11.3f} {b:15.3f} {ratio:6.2f}")
    print(f"{'allreduce float64 elements':44s} {'ordinary us':>11s} {'reproducible us':>15s} {'ratio':>6s}")
    for n, (a, b, ratio) in results["allreduce"].items():
        print(f"{n:44d} {a * 1e6:11.1f} {b * 1e6:15.1f} {ratio:6.2f}")


if __name__ == "__main__":
    main()
