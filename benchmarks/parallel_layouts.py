"""Data vs model vs hybrid parallelism per SGD update, and what ``--parallel auto`` picks.

Run under mpiexec from the repository root (p <= 4 on a small machine)::

    mpiexec -n 2 python benchmarks/parallel_layouts.py [--steps 40] [--rounds 5] [--json]

Two problems, in one run:

- ``wide``: sparse logistic regression, 1,000,000 features, about 20 nonzeros per row,
  global batch 64. Data parallelism allreduces a 1M-float gradient and updates 1M
  weights per step on every rank; a features split allreduces 64 partial margins.
- ``narrow``: dense logistic regression, 10 features, global batch 4096. Data
  parallelism allreduces 13 + p floats; a features split allreduces 4096 margins and
  every rank computes the loss derivative of all 4096 rows.

For every layout (``p x 1`` data, ``1 x p`` model, and the hybrid grids of p), the same
``sync`` SGD updates run from the same seed (the models agree to rounding, checked
here). Layouts are interleaved (A B C A B C ...) for ``--rounds`` rounds; each round
times ``--steps`` updates of the first epoch (barrier to barrier, the slowest rank; the
set-up of a run, e.g. the epoch's batch permutation, is included, per-epoch evaluation is not). Reported: the median
seconds per update, the payload bytes each rank hands to allreduce per update
(counted by wrapping the injected allreduce), the cost model's estimate of bytes sent
and seconds per update, and the layout ``--parallel auto`` chooses from the estimate
versus the measured fastest.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mpi4py import MPI  # noqa: E402

import mpiml  # noqa: E402
from mpiml.data import synthetic  # noqa: E402
from mpiml.data.columns import to_grid  # noqa: E402
from mpiml.data.shard import Shard  # noqa: E402
from mpiml.parallel import GridComms, cost, factorizations, make_part, train_grid  # noqa: E402
from mpiml.sgd import Group, TrainConfig, make_model, train  # noqa: E402

PROBLEMS = {
    "wide": ("synthetic:classification,n=16384,d=1000000,density=0.00002,seed=1", 64),
    "narrow": ("synthetic:classification,n=262144,d=10,seed=1", 4096),
}


class Counter:
    """Wraps an allreduce callable over ``size`` ranks; counts the payload bytes passed in (none alone)."""

    def __init__(self, fn, size):
        self.fn, self.size, self.bytes = fn, size, 0

    def __call__(self, x, out=None, **kwargs):
        self.bytes += x.nbytes if self.size > 1 else 0
        return self.fn(x, out=out, **kwargs)


def layouts(comm, X, y, model, config):
    """name -> (runner(steps) -> (TrainResult, payload bytes), estimate grid)."""
    out = {}
    for rows, cols in factorizations(comm.size):
        if cols == 1:
            counter = Counter(lambda x, out=None: mpiml.allreduce(x, out=out, comm=comm), comm.size)
            group = Group(comm.rank, comm.size, counter, comm)

            def run(steps, group=group, counter=counter):
                counter.bytes = 0
                result = train(model, X, y, config, group, stop_at_update=steps)
                return result, counter.bytes

            out[f"data {rows}x{cols}"] = (run, (rows, cols))
            continue
        comms = GridComms.split(comm, rows, cols)
        counters = [Counter(comms.row_sum, cols), Counter(comms.row_max, cols), Counter(comms.col_sum, rows)]
        comms.row_sum, comms.row_max, comms.col_sum = counters
        part = make_part("features", model.n_features, model.k, cols, comms.col)
        mine = to_grid(Shard(X, y), comms, "features")

        def run(steps, comms=comms, counters=counters, part=part, mine=mine):
            for c in counters:
                c.bytes = 0
            result = train_grid(model, part, mine.X, mine.y, config, comms, stop_at_update=steps)
            return result, sum(c.bytes for c in counters)

        out[f"{'model' if rows == 1 else 'hybrid'} {rows}x{cols}"] = (run, (rows, cols))
    return out


def measure(comm, name, args):
    spec, batch = PROBLEMS[name]
    kind, options = synthetic.parse_spec(spec)
    lo, hi = synthetic.row_block(options["n"], comm.rank, comm.size)
    X, y = synthetic.generate(kind, options, lo, hi)
    model = make_model("logistic", X.shape[1])
    y = model.encode_labels(y)
    config = TrainConfig(strategy="sync", epochs=100, batch_size=batch, lr=0.5, seed=3)
    nnz = comm.allreduce(X.nnz if hasattr(X, "nnz") else X.size)
    problem = cost.Problem(options["n"], X.shape[1], nnz, 1, batch, comm.size)
    runs = layouts(comm, X, y, model, config)
    steps = min(args.steps, -(-options["n"] // batch) - 1)  # inside the first epoch: no evaluation timed
    times = {key: [] for key in runs}
    payload, thetas = {}, {}
    runs[next(iter(runs))][0](2)  # warm-up (imports, first allocations)
    for _ in range(args.rounds):
        for key, (run, _) in runs.items():
            comm.Barrier()
            start = time.perf_counter()
            result, moved = run(steps)
            comm.Barrier()
            times[key].append(comm.allreduce(time.perf_counter() - start, op=MPI.MAX) / steps)
            payload[key] = moved / steps
            thetas[key] = result.theta
    reference = thetas[next(iter(thetas))]
    rows = []
    for key, (_, (r, c)) in runs.items():
        est = cost.estimate(problem, r, c, "features")
        rows.append({"problem": name, "layout": key, "seconds_per_step": statistics.median(times[key]),
                     "payload_bytes_per_step": payload[key], "estimated_bytes_per_step": est.bytes_per_step,
                     "estimated_seconds_per_step": est.seconds_per_step,
                     "max_model_diff_vs_data": float(np.max(np.abs(thetas[key] - reference)))})
    chosen = cost.choose(problem)
    fastest = min(rows, key=lambda row: row["seconds_per_step"])
    summary = {"problem": name, "spec": spec, "batch": batch, "ranks": comm.size,
               "auto_choice": f"{chosen.parallel} {chosen.grid}", "measured_fastest": fastest["layout"],
               "auto_is_fastest": f"{chosen.parallel} {chosen.grid}" == fastest["layout"]}
    return rows, summary


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40, help="updates timed per round (default %(default)s)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default %(default)s)")
    parser.add_argument("--problems", default="wide,narrow")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    comm = MPI.COMM_WORLD
    results = [measure(comm, name, args) for name in args.problems.split(",")]
    if comm.rank != 0:
        return
    if args.json:
        print(json.dumps({"rows": [r for rows, _ in results for r in rows], "summary": [s for _, s in results]}))
        return
    for rows, summary in results:
        print(f"\n{summary['problem']}: {summary['spec']}, global batch {summary['batch']}, p={summary['ranks']}")
        print(f"  {'layout':<12} {'ms/step':>9} {'payload B/step':>15} {'est. B/step':>12} {'est. ms/step':>13} "
              f"{'max |dtheta|':>12}")
        for r in rows:
            print(f"  {r['layout']:<12} {1e3 * r['seconds_per_step']:>9.3f} {r['payload_bytes_per_step']:>15.0f} "
                  f"{r['estimated_bytes_per_step']:>12.0f} {1e3 * r['estimated_seconds_per_step']:>13.3f} "
                  f"{r['max_model_diff_vs_data']:>12.1e}")
        print(f"  --parallel auto picks: {summary['auto_choice']}; measured fastest: {summary['measured_fastest']}"
              f" ({'agree' if summary['auto_is_fastest'] else 'DISAGREE'})")


if __name__ == "__main__":
    main()
