"""``mpiml sgd`` defaults and L-BFGS against scikit-learn on LIBSVM binary sets (one rank).

Run from the repository root (scikit-learn from the ``bench`` extra)::

    python benchmarks/sgd_libsvm.py [--data /work/data/libsvm] [--sets a9a,w8a,ijcnn1,reuters-lasvm]
                                    [--rounds 5] [--json]

Each set is ``NAME`` with its test file ``NAME.t`` when there is one, else a fixed seeded
80/20 split; ``NAME:dense`` is the same set as a dense array. Loading is not timed here
(see ``benchmarks/svmlight_load.py``). Per set:

1. defaults: test accuracy of ``LinearModel()`` with no settings (what ``mpiml sgd`` with
   no flags trains), of ``LinearModel(strategy="sync")`` (the SGD defaults), of
   scikit-learn's ``LogisticRegression()`` and ``SGDClassifier(loss="log_loss")`` defaults.
2. equal tolerance: ``LinearModel(strategy="lbfgs", alpha=1/n, tol=1e-4)`` against
   ``LogisticRegression(C=1, tol=1e-4)`` (the same objective: mean log-loss +
   ``1/(2 C n) ||w||^2``, intercept free): iterations, the relative objective gap, and fit
   seconds in interleaved rounds (mpiml, sklearn, mpiml, ...), medians and their ratio.
3. with ``--baseline DIR`` (another checkout, e.g. ``git archive main | tar -x -C DIR``):
   the same ``lbfgs`` fit by the baseline's mpiml, in a worker process, interleaved into
   the rounds (mpiml, sklearn, baseline, ...): its iterations, objective gap and fit
   seconds, and the ratio of this tree's median to the baseline's.
All single-threaded; the load average is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

# MPIML_BENCH_TREE: the checkout whose mpiml is imported (the --baseline worker runs another one)
sys.path.insert(0, os.environ.get("MPIML_BENCH_TREE") or str(Path(__file__).resolve().parent.parent))


def load(directory: Path, name: str):
    """``(X, y, X_test, y_test)`` of set ``name``; ``NAME:dense`` gives dense arrays."""
    from mpi4py import MPI

    from mpiml.data import read_shard

    if name.endswith(":dense"):
        X, y, Xt, yt = load(directory, name[:-len(":dense")])
        return X.toarray(), y, Xt.toarray(), yt

    train = read_shard(directory / name, "svmlight", comm=MPI.COMM_SELF)
    test_path = directory / f"{name}.t"
    if test_path.exists():
        test = read_shard(test_path, "svmlight", comm=MPI.COMM_SELF, n_features=train.X.shape[1])
        return train.X, train.y, test.X, test.y
    held = np.random.default_rng(0).random(train.X.shape[0]) < 0.2
    return train.X[~held], train.y[~held], train.X[held], train.y[held]


def objective(coef, intercept, X, y, alpha):
    s = X @ coef + intercept
    t = (y > 0).astype(float)
    return float(np.mean(np.logaddexp(0, s) - t * s) + 0.5 * alpha * coef @ coef)


def timed(fn):
    """``(result, wall seconds, CPU seconds)`` of ``fn()``; CPU time is less disturbed by a loaded machine."""
    start, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - start, time.process_time() - cpu


def compare(X, y, Xt, yt, rounds, baseline=None):
    from mpi4py import MPI
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression, SGDClassifier

    from mpiml.sgd import LinearModel

    warnings.simplefilter("ignore", ConvergenceWarning)
    n = X.shape[0]
    out = {"rows": n, "features": X.shape[1], "test_rows": Xt.shape[0]}
    # 1. defaults
    auto = LinearModel(comm=MPI.COMM_SELF).fit(X, y)
    out["mpiml_default_strategy"] = auto.config_.strategy
    out["mpiml_default_accuracy"] = auto.score(Xt, yt)
    sync = LinearModel(strategy="sync", comm=MPI.COMM_SELF).fit(X, y)
    out["mpiml_sync_default_accuracy"] = sync.score(Xt, yt)
    sk = LogisticRegression().fit(X, y)
    out["sklearn_lr_accuracy"] = sk.score(Xt, yt)
    out["sklearn_lr_iterations"] = int(sk.n_iter_[0])
    out["sklearn_sgd_accuracy"] = SGDClassifier(loss="log_loss", random_state=0).fit(X, y).score(Xt, yt)
    # 2. equal tolerance, equal objective
    alpha = 1.0 / n
    ours = lambda: LinearModel(strategy="lbfgs", comm=MPI.COMM_SELF, alpha=alpha, tol=1e-4).fit(X, y)  # noqa: E731
    theirs = lambda: LogisticRegression(C=1.0, tol=1e-4).fit(X, y)  # noqa: E731
    a, b = ours(), theirs()  # warm-up (kernels loaded, caches warm)
    fa, fb = objective(a.coef_, a.intercept_, X, y, alpha), objective(b.coef_[0], b.intercept_[0], X, y, alpha)
    out.update(mpiml_lbfgs_iterations=a.history_[-1]["lbfgs_iterations"], sklearn_iterations=int(b.n_iter_[0]),
               objective_gap=(fa - fb) / abs(fb), mpiml_lbfgs_accuracy=a.score(Xt, yt),
               sklearn_accuracy=b.score(Xt, yt))
    times = {"mpiml": [], "sklearn": [], "baseline": [], "mpiml_cpu": [], "baseline_cpu": []}
    for _ in range(rounds):
        _, wall, cpu = timed(ours)
        times["mpiml"].append(wall)
        times["mpiml_cpu"].append(cpu)
        times["sklearn"].append(timed(theirs)[1])
        if baseline is not None:
            baseline.stdin.write("fit\n")
            baseline.stdin.flush()
            record = json.loads(baseline.stdout.readline())
            times["baseline"].append(record["seconds"])
            times["baseline_cpu"].append(record["cpu_seconds"])
            out.update(baseline_iterations=record["iterations"],
                       baseline_objective_gap=(record["objective"] - fb) / abs(fb))
    if baseline is not None:
        out["baseline_fit_seconds"] = statistics.median(times["baseline"])
        out["mpiml_fit_cpu_seconds"] = statistics.median(times["mpiml_cpu"])
        out["baseline_fit_cpu_seconds"] = statistics.median(times["baseline_cpu"])
        out["cpu_ratio_to_baseline"] = out["mpiml_fit_cpu_seconds"] / out["baseline_fit_cpu_seconds"]
    out["mpiml_fit_seconds"] = statistics.median(times["mpiml"])
    out["sklearn_fit_seconds"] = statistics.median(times["sklearn"])
    out["fit_ratio"] = out["mpiml_fit_seconds"] / out["sklearn_fit_seconds"]
    if baseline is not None:
        out["fit_ratio_to_baseline"] = out["mpiml_fit_seconds"] / out["baseline_fit_seconds"]
    out["load_average"] = os.getloadavg()[0]
    return out


def serve(directory: Path, name: str) -> None:
    """The ``--baseline`` worker: load ``name``, then answer each input line with one timed ``lbfgs`` fit (JSON)."""
    from mpi4py import MPI

    from mpiml.sgd import LinearModel

    X, y, _, _ = load(directory, name)
    alpha = 1.0 / X.shape[0]

    def fit():
        return LinearModel(strategy="lbfgs", comm=MPI.COMM_SELF, alpha=alpha, tol=1e-4).fit(X, y)

    fit()  # warm-up (kernels loaded, caches warm)
    print("ready", flush=True)
    for _ in sys.stdin:
        est, seconds, cpu = timed(fit)
        print(json.dumps({"seconds": seconds, "cpu_seconds": cpu, "iterations": int(est.history_[-1]["lbfgs_iterations"]),
                          "objective": objective(est.coef_, est.intercept_, X, y, alpha)}), flush=True)


def start_baseline(tree: str, directory: Path, name: str):
    """A :func:`serve` process importing the mpiml of checkout ``tree``, once it has loaded the set."""
    import subprocess

    env = {**os.environ, "PYTHONPATH": tree, "MPIML_BENCH_TREE": tree}
    proc = subprocess.Popen([sys.executable, __file__, "--serve", name, "--data", str(directory)], env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    if proc.stdout.readline().strip() != "ready":
        raise RuntimeError(f"the baseline worker for {name} did not start")
    return proc


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="/work/data/libsvm")
    p.add_argument("--sets", default="a9a,w8a,ijcnn1,ijcnn1:dense,reuters-lasvm",
                   help="comma-separated; NAME:dense trains on the set as a dense array")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--json", action="store_true")
    p.add_argument("--baseline", help="another checkout whose lbfgs fit is timed beside this one's")
    p.add_argument("--serve", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve:
        return serve(Path(args.data), args.serve)
    results = {}
    for name in args.sets.split(","):
        if not (Path(args.data) / name.split(":")[0]).exists():
            print(f"skipping {name}: not in {args.data}", file=sys.stderr)
            continue
        data = load(Path(args.data), name)
        baseline = start_baseline(str(Path(args.baseline).resolve()), Path(args.data), name) if args.baseline else None
        try:
            results[name] = compare(*data, args.rounds, baseline)
        finally:
            if baseline is not None:
                baseline.stdin.close()
                baseline.wait(timeout=60)
        if not args.json:
            r = results[name]
            print(f"{name}: n={r['rows']} d={r['features']} | accuracy sklearn LR {r['sklearn_lr_accuracy']:.4f} "
                  f"mpiml default ({r['mpiml_default_strategy']}) {r['mpiml_default_accuracy']:.4f} "
                  f"mpiml sync {r['mpiml_sync_default_accuracy']:.4f} sklearn SGD {r['sklearn_sgd_accuracy']:.4f} | "
                  f"lbfgs at C=1: iterations {r['mpiml_lbfgs_iterations']} vs {r['sklearn_iterations']}, "
                  f"objective gap {r['objective_gap']:.1e}, fit {r['mpiml_fit_seconds']:.3f} s vs "
                  f"{r['sklearn_fit_seconds']:.3f} s = {r['fit_ratio']:.2f}x | load {r['load_average']:.2f}",
                  flush=True)
            if baseline is not None:
                print(f"  baseline: iterations {r['baseline_iterations']}, objective gap "
                      f"{r['baseline_objective_gap']:.1e}, fit {r['baseline_fit_seconds']:.3f} s; "
                      f"this / baseline = {r['fit_ratio_to_baseline']:.2f}x (CPU time {r['cpu_ratio_to_baseline']:.2f}x)",
                      flush=True)
    if args.json:
        print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
