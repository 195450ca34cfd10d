"""Full-batch L-BFGS on a wide sparse set: time to the optimum and memory per rank, data vs model parallelism.

Run from the repository root (it starts its own ``mpiexec`` runs; no MPI in the driver)::

    python benchmarks/lbfgs_layouts.py [--rows 50000 --features 2000000 --nnz 50] [--rounds 3] [--json]

The set: synthetic logistic regression, ``--rows`` x ``--features`` CSR with about
``--nnz`` nonzeros per row (:mod:`mpiml.data.synthetic`), L2 penalty ``--alpha``. Layouts,
each a separate ``mpiexec`` run, interleaved (A B C D E, A B C D E, ...) for ``--rounds``:

- ``data p=1 train``: the data-parallel trainer, :func:`mpiml.sgd.train` (the ``p x 1``
  layout: every rank holds the whole model; the L-BFGS of :mod:`mpiml.train.lbfgs_math`);
- ``data p=1 grid 1x1``: :func:`mpiml.parallel.train_grid` on a split 1 x 1 grid (the same
  algorithm and layout through the grid API: the two should agree);
- ``data p=2 train`` and ``data p=2 grid 2x1``: rows over 2 ranks, the whole model on each;
- ``model p=2 grid 1x2``: the features split over 2 ranks, every rank with every row.

Every run goes to the stopping rule (``--tol``, and the relative-reduction rule), and
records its objective after every iteration with the seconds since L-BFGS started. The
optimum ``f*`` is the lowest objective any run reached; a run's *time to optimum* is the
first time its objective is within ``--target`` (relative) of ``f*``. Reported per layout:
the median over rounds of that time, its ratio to ``data p=1 train``, iterations to the
target, seconds per iteration, and memory per rank: the peak resident set during training
(``VmHWM`` after resetting it once the data is in place, so data loading does not count)
and over the whole process. Layout set-up (the all-to-all of column blocks) is reported
apart. Threads are pinned to 1 per rank (``OMP_NUM_THREADS=1`` ...); quote ``uptime``.
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

LAYOUTS = [  # name, ranks, trainer, grid
    ("data p=1 train", 1, "data", None),
    ("data p=1 grid 1x1", 1, "grid", (1, 1)),
    ("data p=2 train", 2, "data", None),
    ("data p=2 grid 2x1", 2, "grid", (2, 1)),
    ("model p=2 grid 1x2", 2, "grid", (1, 2)),
]
THREADS = {name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")}


def _status(key: str) -> float:
    """A ``VmRSS``/``VmHWM`` line of /proc/self/status, in MiB (0 where unavailable)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


def _reset_peak() -> bool:
    """Reset this process's peak resident set (Linux: ``5`` into /proc/self/clear_refs)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def worker(args) -> None:
    """One layout under mpiexec: load this rank's rows, train to the stopping rule, print one JSON line."""
    import resource

    import numpy as np
    from mpi4py import MPI

    from mpiml.data import synthetic
    from mpiml.data.columns import to_grid
    from mpiml.data.shard import Shard
    from mpiml.parallel import GridComms, make_part, train_grid
    from mpiml.sgd import Group, TrainConfig, make_model, train

    comm = MPI.COMM_WORLD
    spec = f"synthetic:classification,n={args.rows},d={args.features},density={args.nnz / args.features!r},seed=7"
    kind, options = synthetic.parse_spec(spec)
    lo, hi = synthetic.row_block(options["n"], comm.rank, comm.size)
    X, y = synthetic.generate(kind, options, lo, hi)
    model = make_model("logistic", X.shape[1])
    y = model.encode_labels(y)
    config = TrainConfig(strategy="lbfgs", alpha=args.alpha, tol=args.tol, max_iter=args.max_iter)
    setup = 0.0
    comms = None
    if args.trainer == "grid":
        rows, cols = (int(v) for v in args.grid.split("x"))
        start = time.perf_counter()
        comms = GridComms.split(comm, rows, cols)
        part = make_part("features", model.n_features, model.k, cols, comms.col)
        mine = to_grid(Shard(X, y), comms, "features")
        X, y = mine.X, mine.y.astype(y.dtype)
        setup = comm.allreduce(time.perf_counter() - start, op=MPI.MAX)
    nnz_here = int(X.nnz)
    reset = _reset_peak()
    before = _status("VmRSS")
    comm.Barrier()
    start = time.perf_counter()
    if comms is None:
        result = train(model, X, y, config, Group.from_comm(comm))
    else:
        result = train_grid(model, part, X, y, config, comms)
        comms.free()
    comm.Barrier()
    seconds = time.perf_counter() - start
    memory = comm.gather({"rank": comm.rank, "rss_before_mib": before, "peak_training_mib": _status("VmHWM"),
                          "peak_process_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
                          "reset": reset, "nnz": nnz_here, **result.timings.as_dict()}, root=0)
    if comm.rank == 0:
        last = result.history[-1]
        print(json.dumps({"seconds": seconds, "setup_seconds": setup, "iterations": last["lbfgs_iterations"],
                          "message": last["lbfgs_message"], "train_loss": last["train_loss"],
                          "trace": last["lbfgs_objective"], "trace_seconds": last["lbfgs_seconds"],
                          "max_abs_theta": float(np.abs(result.theta).max()), "ranks": memory}), flush=True)


def run_layout(args, name, ranks, trainer, grid):
    """One mpiexec run of a layout; its JSON record."""
    sys.path.insert(0, str(ROOT / "tests"))
    from mpirun import mpiexec_command

    argv = [sys.executable, str(Path(__file__).resolve()), "--worker", "--trainer", trainer,
            "--rows", str(args.rows), "--features", str(args.features), "--nnz", str(args.nnz),
            "--alpha", repr(args.alpha), "--tol", repr(args.tol), "--max-iter", str(args.max_iter)]
    if grid:
        argv += ["--grid", f"{grid[0]}x{grid[1]}"]
    env = {**os.environ, **THREADS}
    done = subprocess.run(mpiexec_command(ranks, argv), capture_output=True, text=True, env=env,
                          timeout=args.timeout, cwd=ROOT)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{name}: exit {done.returncode}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return json.loads(lines[-1])


def time_to(record, best, target):
    """Seconds (and iterations) until the objective was within ``target`` of ``best``."""
    for i, (f, t) in enumerate(zip(record["trace"], record["trace_seconds"])):
        if f - best <= target * abs(best):
            return t, i + 1
    return float("nan"), None


def summarize(args, records, load):
    best = min(min(r["trace"] or [r["train_loss"]]) for rs in records.values() for r in rs)
    rows = []
    for name, ranks, _, _ in LAYOUTS:
        runs = records[name]
        reached = [time_to(r, best, args.target) for r in runs]
        per_iter = [r["seconds"] / max(r["iterations"], 1) for r in runs]
        rows.append({
            "layout": name, "ranks": ranks,
            "seconds_to_optimum": statistics.median(t for t, _ in reached),
            "iterations_to_optimum": statistics.median(i for _, i in reached if i is not None)
            if any(i is not None for _, i in reached) else None,
            "seconds_to_stop": statistics.median(r["seconds"] for r in runs),
            "iterations_to_stop": statistics.median(r["iterations"] for r in runs),
            "seconds_per_iteration": statistics.median(per_iter),
            "setup_seconds": statistics.median(r["setup_seconds"] for r in runs),
            "final_gap": statistics.median((r["train_loss"] - best) / abs(best) for r in runs),
            "rss_before_training_mib_per_rank": statistics.median(max(m["rss_before_mib"] for m in r["ranks"])
                                                                 for r in runs),
            "peak_training_mib_per_rank": statistics.median(max(m["peak_training_mib"] for m in r["ranks"])
                                                           for r in runs),
            "peak_reset": all(m["reset"] for r in runs for m in r["ranks"]),
            "peak_process_mib_per_rank": statistics.median(max(m["peak_process_mib"] for m in r["ranks"])
                                                          for r in runs),
            "comm_seconds_rank0": statistics.median(r["ranks"][0]["comm_seconds"] for r in runs),
            "wait_seconds_rank0": statistics.median(r["ranks"][0]["wait_seconds"] for r in runs),
            "messages": sorted({r["message"] for r in runs}),
            "rounds": len(runs),
        })
    base = rows[0]["seconds_to_optimum"]
    for row in rows:
        row["ratio_to_data_p1"] = row["seconds_to_optimum"] / base if base else float("nan")
    return {"problem": {"rows": args.rows, "features": args.features, "nnz_per_row": args.nnz, "alpha": args.alpha,
                        "tol": args.tol, "target": args.target, "f_star": best}, "load": load, "layouts": rows}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=50000)
    parser.add_argument("--features", type=int, default=2_000_000)
    parser.add_argument("--nnz", type=float, default=50.0, help="nonzeros per row (about)")
    parser.add_argument("--alpha", type=float, default=1e-5)
    parser.add_argument("--tol", type=float, default=1e-12, help="tol of every run (default %(default)s: to the end)")
    parser.add_argument("--max-iter", type=int, default=1000)
    parser.add_argument("--target", type=float, default=1e-6, help="relative gap that counts as the optimum")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--layouts", help="comma-separated subset of the layout names")
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--trainer", default="grid", help=argparse.SUPPRESS)
    parser.add_argument("--grid", default="1x1", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    global LAYOUTS
    if args.layouts:
        wanted = [w.strip() for w in args.layouts.split(",")]
        LAYOUTS = [layout for layout in LAYOUTS if layout[0] in wanted]
    load = [os.getloadavg()]
    records = {name: [] for name, *_ in LAYOUTS}
    for round_ in range(args.rounds):
        for name, ranks, trainer, grid in LAYOUTS:
            record = run_layout(args, name, ranks, trainer, grid)
            records[name].append(record)
            if not args.json:
                print(f"round {round_ + 1} {name}: {record['seconds']:.1f} s, {record['iterations']} iterations, "
                      f"f={record['train_loss']:.10g}, load {os.getloadavg()[0]:.1f}", flush=True)
    load.append(os.getloadavg())
    summary = summarize(args, records, load)
    if args.json:
        print(json.dumps(summary))
        return
    p = summary["problem"]
    print(f"\nlogistic, {p['rows']} rows x {p['features']} features, ~{p['nnz_per_row']:g} nonzeros/row, "
          f"alpha={p['alpha']:g}; f*={p['f_star']:.12g}; optimum = within {p['target']:g} (relative)")
    print(f"{'layout':<20} {'s to opt':>9} {'ratio':>6} {'it to opt':>9} {'s/it':>7} {'s to stop':>9} {'it':>5} "
          f"{'setup s':>7} {'MiB/rank: data in':>17} {'peak in training':>16} {'process peak':>12}")
    for r in summary["layouts"]:
        print(f"{r['layout']:<20} {r['seconds_to_optimum']:>9.2f} {r['ratio_to_data_p1']:>6.2f} "
              f"{r['iterations_to_optimum'] or '-':>9} {r['seconds_per_iteration']:>7.3f} {r['seconds_to_stop']:>9.2f} "
              f"{r['iterations_to_stop']:>5} {r['setup_seconds']:>7.2f} {r['rss_before_training_mib_per_rank']:>17.0f} "
              f"{r['peak_training_mib_per_rank']:>16.0f} {r['peak_process_mib_per_rank']:>12.0f}")
    print(f"medians of {args.rounds} interleaved rounds; load average before {load[0][0]:.1f}, after {load[1][0]:.1f}")


if __name__ == "__main__":
    main()
