"""Distributed SGD: epoch time at p=1 and p=2, communication share, time to a target loss.

Run from the repository root (scikit-learn from the ``bench`` extra)::

    python benchmarks/sgd_scaling.py [--rows 100000] [--features 1000] [--repeats 3] [--json]

The driver starts ``mpiexec -n 1`` and ``mpiexec -n 2`` workers alternately (A B A B ...,
so machine noise hits both alike) and reports medians:

1. scaling: ``sync`` SGD on a dense, compute-bound problem (global batch ``--batch``, 4096); the
   median epoch time at p=1 and p=2, the speedup and efficiency (speedup / 2), the
   communication share ``(comm + wait) / (compute + comm + wait)`` at p=2, and the
   compute time alone (slowest rank), which machine noise disturbs less.
2. time to target: the L2-regularized logistic objective of the same data, target =
   (1 + tolerance) x the optimum (found by mpiml ``lbfgs`` and checked against
   scikit-learn's ``LogisticRegression``). Seconds until each solver's training
   objective first reaches it: mpiml ``sync`` SGD and ``lbfgs`` at p=1 and p=2,
   scikit-learn ``SGDClassifier`` (epoch by epoch, objective measured between epochs
   and not timed; its default schedule and a constant step tuned to the data) and
   ``LogisticRegression``. Data generation is never timed. All single-threaded BLAS.

With ``--baseline DIR`` (another checkout, e.g. ``git archive main | tar -x -C DIR``) it
instead runs the same workers on both trees' mpiml, interleaved (this tree, baseline, this
tree, ...): the median ``sync`` epoch time and ``lbfgs`` fit time (``tol`` 1e-10) at p=1
and p=2, and their ratios (this tree / baseline): the regression check of a refactor.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
# MPIML_BENCH_TREE: the checkout whose mpiml a worker imports (--baseline runs another one)
sys.path.insert(0, os.environ.get("MPIML_BENCH_TREE") or str(REPO))


def spec(args):
    return f"synthetic:classification,n={args.rows},d={args.features},separation=4,seed=1"


# ---------------------------------------------------------------------------- workers (under mpiexec)
def worker(args):
    from mpi4py import MPI

    from mpiml.data import load_shard
    from mpiml.sgd import LinearModel

    comm = MPI.COMM_WORLD
    shard = load_shard(spec(args))
    out = {"ranks": comm.size}
    if args.worker == "lbfgs":
        def fit():
            return LinearModel("logistic", "lbfgs", comm=comm, alpha=args.alpha, tol=1e-10,
                               standardize=False).fit(shard.X, shard.y)

        fit()  # warm-up: imports and compiled kernels, outside the clock
        comm.Barrier()
        start = time.perf_counter()
        est = fit()
        out.update(fit_seconds=comm.allreduce(time.perf_counter() - start, op=MPI.MAX),
                   iterations=est.history_[-1]["lbfgs_iterations"], objective=est.history_[-1]["train_loss"])
    elif args.worker == "scaling":
        est = LinearModel("logistic", "sync", comm=comm, epochs=args.epochs, batch_size=args.batch, lr=1.0,
                          alpha=args.alpha, standardize=False).fit(shard.X, shard.y)
        t = est.result_.timings
        per_rank = comm.allgather((t.compute, t.comm, t.wait))
        out["epoch_seconds"] = [h["epoch_seconds"] for h in est.history_]
        out["compute_seconds_per_epoch"] = max(c for c, _, _ in per_rank) / len(est.history_)
        busy = [sum(r) for r in per_rank]
        out["comm_fraction"] = float(np.mean([(c + w) / b for (_, c, w), b in zip(per_rank, busy)]))
        out["wait_fraction"] = float(np.mean([w / b for (_, _, w), b in zip(per_rank, busy)]))
    else:
        runs = {}
        for name, strategy, settings in [
            ("sync", "sync", dict(epochs=args.epochs, batch_size=256, lr=1.0, schedule="inverse", lr_decay=0.01)),
            ("lbfgs", "lbfgs", dict(tol=1e-10)),
        ]:
            # raw features for both: the same objective, whose optimum is the target
            est = LinearModel("logistic", strategy, comm=comm, alpha=args.alpha, standardize=False,
                              **settings).fit(shard.X, shard.y)
            runs[name] = [(h["seconds"], h["train_loss"]) for h in est.history_]
            last = est.history_[-1]
            if "lbfgs_seconds" in last:  # every iteration's objective, not only the final one
                runs[name] = list(zip(last["lbfgs_seconds"], last["lbfgs_objective"]))
        out["runs"] = runs
    if comm.rank == 0:
        print("RESULT " + json.dumps(out), flush=True)


def launch(args, ranks, kind, tree=None):
    tree = str(tree or REPO)
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONPATH=tree, MPIML_BENCH_TREE=tree)
    mpiexec = Path(sys.executable).parent / "mpiexec"
    cmd = [str(mpiexec if mpiexec.exists() else "mpiexec"), "-n", str(ranks), sys.executable, __file__,
           "--worker", kind, "--rows", str(args.rows), "--features", str(args.features),
           "--epochs", str(args.epochs), "--alpha", str(args.alpha), "--batch", str(args.batch)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    line = next((x for x in proc.stdout.splitlines() if "RESULT " in x), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}")
    return json.loads(line.split("RESULT ", 1)[1])


# ---------------------------------------------------------------------------- scikit-learn baselines
def sklearn_runs(args, target_fn):
    from threadpoolctl import threadpool_limits
    from sklearn.linear_model import LogisticRegression, SGDClassifier

    from mpiml.data import synthetic

    kind, options = synthetic.parse_spec(spec(args))
    X, y = synthetic.generate(kind, options, 0, args.rows)
    out = {}
    with threadpool_limits(1):
        start = time.perf_counter()
        lr = LogisticRegression(C=1.0 / (args.alpha * args.rows), tol=1e-10, max_iter=2000).fit(X, y)
        out["LogisticRegression"] = [(time.perf_counter() - start, target_fn(X, y, lr.coef_[0], lr.intercept_[0]))]
        # default schedule ("optimal"), and a constant step tuned for this data (per-row steps
        # need eta * |x|^2 < 1, here |x|^2 ~ features)
        for label, settings in (("SGDClassifier", {}),
                                ("SGDClassifier_tuned", dict(learning_rate="constant", eta0=0.3 / args.features))):
            sgd = SGDClassifier(loss="log_loss", alpha=args.alpha, random_state=0, **settings)
            trace, spent = [], 0.0
            for _ in range(args.epochs):
                start = time.perf_counter()
                sgd.partial_fit(X, y, classes=np.array([0.0, 1.0]))
                spent += time.perf_counter() - start
                trace.append((spent, target_fn(X, y, sgd.coef_[0], sgd.intercept_[0])))
            out[label] = trace
    return out


def objective(alpha):
    def f(X, y, w, b):
        s = X @ w + b
        return float(np.mean(np.logaddexp(0, s) - y * s) + 0.5 * alpha * w @ w)
    return f


def first_reaching(trace, target):
    return next((sec for sec, loss in trace if loss <= target), None)


def compare_trees(args):
    """``sync`` epoch time and ``lbfgs`` fit time of this tree against ``args.baseline``, interleaved."""
    trees = {"this": REPO, "baseline": Path(args.baseline).resolve()}
    epoch = {(t, p): [] for t in trees for p in (1, 2)}
    lbfgs = {(t, p): [] for t in trees for p in (1, 2)}
    iterations, objective = {}, {}
    for _ in range(args.repeats):
        for ranks in (1, 2):
            for name, tree in trees.items():   # interleaved: this, baseline, this, ...
                epoch[name, ranks].append(statistics.median(launch(args, ranks, "scaling", tree)["epoch_seconds"]))
                r = launch(args, ranks, "lbfgs", tree)
                lbfgs[name, ranks].append(r["fit_seconds"])
                iterations[name, ranks], objective[name, ranks] = r["iterations"], r["objective"]
    report = {"rows": args.rows, "features": args.features, "repeats": args.repeats, "baseline": str(trees["baseline"]),
              "load_average": os.getloadavg()[0]}
    for p in (1, 2):
        for what, table in (("sync_epoch_seconds", epoch), ("lbfgs_fit_seconds", lbfgs)):
            mine, base = statistics.median(table["this", p]), statistics.median(table["baseline", p])
            report[f"{what}_p{p}"] = {"this": mine, "baseline": base, "ratio": mine / base}
        report[f"lbfgs_iterations_p{p}"] = {name: iterations[name, p] for name in trees}
        report[f"lbfgs_objective_p{p}"] = {name: objective[name, p] for name in trees}
    if args.json:
        print(json.dumps(report, indent=1))
        return
    print(f"data: {args.rows} x {args.features} dense; medians of {args.repeats}, interleaved; "
          f"baseline {report['baseline']}; load {report['load_average']:.2f}")
    for key, value in report.items():
        if isinstance(value, dict):
            print(f"  {key:<24} " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                              for k, v in value.items()))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--worker", choices=("scaling", "target", "lbfgs"))
    p.add_argument("--rows", type=int, default=100000)
    p.add_argument("--features", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch", type=int, default=4096, help="global batch of the scaling runs")
    p.add_argument("--alpha", type=float, default=1e-4)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--tolerance", type=float, default=0.01, help="target = (1 + tolerance) x optimum")
    p.add_argument("--json", action="store_true")
    p.add_argument("--baseline", help="another checkout to compare with (this tree / baseline ratios)")
    args = p.parse_args()
    if args.worker:
        return worker(args)
    if args.baseline:
        return compare_trees(args)

    epoch = {1: [], 2: []}
    compute = {1: [], 2: []}
    comm_fraction, wait_fraction, targets = [], [], {1: [], 2: []}
    for _ in range(args.repeats):
        for ranks in (1, 2):  # interleaved: A B A B ...
            r = launch(args, ranks, "scaling")
            epoch[ranks].append(statistics.median(r["epoch_seconds"]))
            compute[ranks].append(r["compute_seconds_per_epoch"])
            if ranks == 2:
                comm_fraction.append(r["comm_fraction"])
                wait_fraction.append(r["wait_fraction"])
            targets[ranks].append(launch(args, ranks, "target")["runs"])
    optimum = targets[1][0]["lbfgs"][-1][1]
    target = optimum * (1 + args.tolerance)
    f = objective(args.alpha)
    sk = [sklearn_runs(args, f) for _ in range(args.repeats)]
    t1, t2 = statistics.median(epoch[1]), statistics.median(epoch[2])
    time_to = {}
    for ranks in (1, 2):
        for name in ("sync", "lbfgs"):
            hits = [first_reaching(run[name], target) for run in targets[ranks]]
            time_to[f"mpiml_{name}_p{ranks}"] = statistics.median(h for h in hits if h is not None) \
                if any(h is not None for h in hits) else None
    for name in ("SGDClassifier", "SGDClassifier_tuned", "LogisticRegression"):
        hits = [first_reaching(run[name], target) for run in sk]
        time_to[f"sklearn_{name}"] = statistics.median(h for h in hits if h is not None) \
            if any(h is not None for h in hits) else None
    report = {
        "rows": args.rows, "features": args.features, "repeats": args.repeats,
        "epoch_seconds_p1": t1, "epoch_seconds_p2": t2, "speedup_p2": t1 / t2, "efficiency_p2": t1 / t2 / 2,
        "compute_seconds_per_epoch_p1": statistics.median(compute[1]),
        "compute_seconds_per_epoch_p2": statistics.median(compute[2]),
        "compute_speedup_p2": statistics.median(compute[1]) / statistics.median(compute[2]),
        "comm_fraction_p2": statistics.median(comm_fraction), "wait_fraction_p2": statistics.median(wait_fraction),
        "optimum_objective": optimum, "sklearn_logreg_objective": sk[0]["LogisticRegression"][-1][1],
        "target_objective": target, "seconds_to_target": time_to,
        "final_objective": {"mpiml_sync_p1": targets[1][0]["sync"][-1][1],
                            "sklearn_SGDClassifier": sk[0]["SGDClassifier"][-1][1],
                            "sklearn_SGDClassifier_tuned": sk[0]["SGDClassifier_tuned"][-1][1]},
    }
    if args.json:
        print(json.dumps(report, indent=1))
        return
    print(f"data: {args.rows} x {args.features} dense, logistic, alpha={args.alpha}; medians of {args.repeats}")
    print(f"epoch time (sync, global batch 4096): p=1 {t1:.3f} s, p=2 {t2:.3f} s -> speedup {t1 / t2:.2f}, "
          f"efficiency {t1 / t2 / 2:.0%}; communication share at p=2 {report['comm_fraction_p2']:.1%} "
          f"(of which waiting {report['wait_fraction_p2']:.1%})")
    print(f"compute alone (slowest rank): p=1 {report['compute_seconds_per_epoch_p1']:.3f} s/epoch, "
          f"p=2 {report['compute_seconds_per_epoch_p2']:.3f} s/epoch -> speedup {report['compute_speedup_p2']:.2f}")
    print(f"optimum {optimum:.6f} (scikit-learn LogisticRegression {report['sklearn_logreg_objective']:.6f}); "
          f"target {target:.6f}")
    for name, sec in time_to.items():
        print(f"  {name:<28} {'not reached' if sec is None else f'{sec:.3f} s'}")
    print("objective after the last epoch: " + ", ".join(f"{k} {v:.6f}" for k, v in report["final_objective"].items()))


if __name__ == "__main__":
    main()
