"""Partitioned against replicated factors (issue 16): per-rank model memory, bytes and seconds per ALS iteration.

    PYTHONPATH=. python benchmarks/mf_partitioned.py            # ~2.5 min on a 2-core machine
    PYTHONPATH=. python benchmarks/mf_partitioned.py --quick    # a smoke run
    PYTHONPATH=. python benchmarks/mf_partitioned.py --json

Two synthetic power-law rating sets (seeded numpy: user activity and item popularity
both Zipf-like, ids shuffled so that blocks of ids mix popular and rare rows, as real ids
do): far more users than items, and the reverse. Explicit ALS, rank 32, at p = 1, 2, 4
(each run its own ``mpiexec``), replicated and partitioned factors; the partitioned run at
the largest p also with ids ordered by popularity (``--order popularity``: blocks of
similar rows, so each block's ratings reference fewer rows of the other side).

Reported per run (the largest rank's): ``model_bytes`` (factor rows held at the peak of a
half-step: blocks or full matrices, rows received, the block being solved),
``bytes_per_iteration`` (bytes the rank sent per iteration), seconds per iteration (median),
peak RSS. Verdicts: model memory at the largest p <= 0.35x p = 1, and bytes per ALS
iteration <= 0.5x the replicated allgather's, on each set. The issue's scale (2M users x
100k items x 50M ratings and the reverse) does not fit this machine; the defaults are
scaled down (~35x in rows, ~115x in ratings: ~8 ratings a user instead of 25). The shares
of routed and held rows at p = 4, 16, 64 are also computed from the routing plans alone
(no training) on this set and on one drawn at the issue's density (25 / 500 ratings a row),
and the last line predicts the issue's sizes from those (an estimate, not a measurement).
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

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_var] = "1"

ROOT = Path(__file__).resolve().parent.parent
MEMORY_GOAL, BYTES_GOAL = 0.35, 0.5
ISSUE = {"users>>items": (2_000_000, 100_000, 50_000_000), "items>>users": (100_000, 2_000_000, 50_000_000)}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--many", type=int, default=60000, help="rows of the larger side")
    parser.add_argument("--few", type=int, default=3000, help="rows of the smaller side")
    parser.add_argument("--ratings", type=int, default=600000)
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--ranks", default="1,2,4")
    parser.add_argument("--quick", action="store_true", help="small data")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--shape", default="users>>items", help=argparse.SUPPRESS)
    parser.add_argument("--factors", default="replicated", help=argparse.SUPPRESS)
    parser.add_argument("--order", default="shuffled", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.many, args.few, args.ratings, args.rank = 6000, 400, 40000, 8
    return args


def power_law(args, shape: str, order: str, rank: int, size: int):
    """This rank's share of the seeded power-law ratings (every rank draws all, keeps every size-th)."""
    import numpy as np

    from mpiml.data.ratings import RatingsShard

    rng = np.random.default_rng(16)
    nu, ni = (args.many, args.few) if shape == "users>>items" else (args.few, args.many)

    def draw(n, exponent):
        weights = 1.0 / np.arange(1, n + 1) ** exponent
        return np.searchsorted(np.cumsum(weights) / weights.sum(), rng.random(args.ratings)).clip(0, n - 1)

    u, i = draw(nu, 0.9), draw(ni, 0.9)   # index = popularity rank (0: the most active / popular)
    pairs = np.unique(u * ni + i)
    u, i = pairs // ni, pairs % ni
    if order == "shuffled":   # ids that say nothing about popularity
        u, i = rng.permutation(nu)[u], rng.permutation(ni)[i]
    values = rng.integers(1, 6, pairs.size).astype(np.float64)
    mine = np.arange(pairs.size) % size == rank
    return RatingsShard.from_arrays(u[mine], i[mine], values[mine], np.arange(pairs.size)[mine])


CONFIGS = (("partitioned", "shuffled"), ("partitioned", "popularity"), ("replicated", "shuffled"))


def worker(args) -> None:
    """Every set and layout at this p under one mpiexec (partitioned first: peak RSS only grows);
    rank 0 prints one JSON line per fit."""
    from mpi4py import MPI

    from mpiml.mf import ALS

    comm = MPI.COMM_WORLD
    warm = power_law(argparse.Namespace(many=300, few=50, ratings=2000), "users>>items", "shuffled", comm.rank,
                     comm.size)
    ALS(rank=args.rank, iters=1, factors="partitioned").fit(warm, comm=comm)   # kernels loaded before timing
    for shape in ISSUE:
        for factors, order in CONFIGS:
            if comm.size == 1 and factors == "partitioned":
                continue  # one rank: the same arrays either way
            data = power_law(args, shape, order, comm.rank, comm.size)
            model = ALS(rank=args.rank, reg=0.05, iters=args.iters, factors=factors).fit(data, comm=comm)
            info = model.fit_info_
            if comm.rank == 0:
                out = {k: info[k] for k in ("factors_layout", "users", "items", "train_ratings", "ranks")}
                out.update({k: info["max_" + k] for k in ("model_bytes", "bytes_per_iteration", "peak_rss_bytes")})
                out.update(shape=shape, order=order, width=args.rank + 2,
                           seconds_per_iteration=statistics.median(h["seconds"] for h in model.history_))
                print(json.dumps(out), flush=True)
            del model, data


def run(args, ranks: int) -> list:
    """The worker under ``mpiexec -n ranks``; its JSON lines."""
    sys.path.insert(0, str(ROOT / "tests"))
    from mpirun import mpi_env, mpiexec_command

    argv = [sys.executable, str(Path(__file__).resolve()), "--worker", "--many", str(args.many), "--few",
            str(args.few), "--ratings", str(args.ratings), "--rank", str(args.rank), "--iters", str(args.iters)]
    done = subprocess.run(mpiexec_command(ranks, argv), capture_output=True, text=True, timeout=600, cwd=ROOT,
                          env=mpi_env({"MPIML_GUARD": "off"}))
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"exit {done.returncode}: {' '.join(argv)}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return [json.loads(line) for line in lines]


def plan_shares(args, shape: str, ps) -> dict:
    """``{p: (sent, held)}`` from the plans alone (no training run), with the hot-row thresholds
    the run would choose: the most bytes a rank receives per ALS iteration over the fewest an
    allgather brings it (``sent``), and the most factor rows (partial sums counted as the rows
    of their bytes) a rank holds at a half-step's peak over the full factors' rows (``held``)."""
    import numpy as np

    from mpiml.mf import hot_rows, routing
    from mpiml.mf.estimator import cost_model
    from mpiml.mf.partition import balanced_blocks, row_costs

    data = power_law(args, shape, "shuffled", 0, 1)
    u, i = np.unique(data.users, return_inverse=True)[1], np.unique(data.items, return_inverse=True)[1]
    nu, ni = int(u.max()) + 1, int(i.max()) + 1
    counts = (np.bincount(u, minlength=nu), np.bincount(i, minlength=ni))
    costs = [row_costs(c, args.rank + 1, model=cost_model("als")) for c in counts]
    row, partial = (args.rank + 2) * 8, 8 * hot_rows.packed_width(args.rank + 1)
    out = {}
    for p in ps:
        bounds = (balanced_blocks(costs[0], p), balanced_blocks(costs[1], p))
        owners = (np.searchsorted(bounds[0], u, side="right") - 1, np.searchsorted(bounds[1], i, side="right") - 1)
        received, held = np.zeros(p), np.zeros((2, p))
        for side, (own, other) in enumerate(((u, i), (i, u))):
            b, ob, mine, theirs = bounds[side], bounds[1 - side], owners[side], owners[1 - side]
            grid = hot_rows.candidates(int(counts[side].max()))
            per_rank = [hot_rows.threshold_costs(counts[side][b[r]:b[r + 1]], own[mine == r] - b[r],
                                                 other[mine == r], theirs[mine == r], r, grid, row, partial)
                        for r in range(p)]
            pick = int(np.argmin(np.max(per_rank, axis=0)))
            cold = counts[side][own] <= grid[pick]
            for r in range(p):
                received[r] += per_rank[r][pick]
                needed = routing.referenced(other[(mine == r) & cold]).size
                parts = np.unique(own[(theirs == r) & ~cold]).size  # hot rows this rank's raters add to
                held[side, r] = int(b[r + 1] - b[r]) + needed + parts * partial / row
        own_rows = [int(bounds[0][r + 1] - bounds[0][r] + bounds[1][r + 1] - bounds[1][r]) for r in range(p)]
        least = min(nu + ni - own_rows[r] for r in range(p))
        peak = max(own_rows[r] + max(held[0, r], held[1, r]) for r in range(p))
        out[p] = (received.max() / row / least, peak / (nu + ni))
    return out


def allgather_bytes(r: dict, p: int) -> float:
    """What a rank sends per ALS iteration allgathering both sides (ring: all rows but its own block's)."""
    return (r["users"] + r["items"]) * (p - 1) / p * r["width"] * 8


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    ranks = [int(p) for p in args.ranks.split(",")]
    top, start = max(ranks), time.perf_counter()
    rows = {}
    for p in ranks:
        for r in run(args, p):
            rows[r["shape"], p, r["factors_layout"], r["order"]] = r
    lines, verdicts = [], []
    for shape in ISSUE:
        base = rows[shape, 1, "replicated", "shuffled"]
        rep = rows[shape, top, "replicated", "shuffled"]
        lines.append(f"{shape}: {base['users']} users x {base['items']} items x {base['train_ratings']} ratings, "
                     f"rank {args.rank}")
        lines.append(f"  {'p':>2} {'factors':<12} {'ids':<10} {'model MiB':>9} {'MiB/iter sent':>13} "
                     f"{'s/iter':>7} {'peak RSS MiB':>12}")
        for (s, p, factors, order), r in sorted(rows.items()):
            if s == shape:
                lines.append(f"  {p:>2} {factors:<12} {order:<10} {r['model_bytes'] / 2**20:9.2f} "
                             f"{r['bytes_per_iteration'] / 2**20:13.2f} {r['seconds_per_iteration']:7.2f} "
                             f"{r['peak_rss_bytes'] / 2**20:12.0f}")
        for order in ("shuffled", "popularity"):
            part = rows[shape, top, "partitioned", order]
            memory = part["model_bytes"] / base["model_bytes"]
            sent = part["bytes_per_iteration"] / allgather_bytes(rep, top)
            verdicts.append(f"{shape} ({order} ids): model memory p={top} / p=1 = {memory:.2f} "
                            f"({'PASS' if memory <= MEMORY_GOAL else 'MISS'} <= {MEMORY_GOAL}); bytes per iteration / "
                            f"replicated allgather = {sent:.2f} ({'PASS' if sent <= BYTES_GOAL else 'MISS'} <= "
                            f"{BYTES_GOAL}); s/iter partitioned / replicated = "
                            f"{part['seconds_per_iteration'] / rep['seconds_per_iteration']:.2f}")
        shares = plan_shares(args, shape, (top, 16, 64))
        lines.append("  from the plans alone (no run), shuffled ids: received / allgathered bytes " +
                     ", ".join(f"p={p} {v[0]:.2f}" for p, v in shares.items()))
        # the issue's density (ratings per row) on a set scaled down to draw in seconds
        nu, ni, n = ISSUE[shape]
        scale = argparse.Namespace(many=80000, few=4000, ratings=2_000_000, rank=args.rank)
        dense = plan_shares(scale, shape, (top, 16, 64))
        lines.append(f"  at the issue's density ({n // nu} and {n // ni} ratings a row; 80000 x 4000 x 2M drawn, "
                     "plans alone): received / allgathered bytes " +
                     ", ".join(f"p={p} {v[0]:.2f}" for p, v in dense.items()))
        row = (args.rank + 2) * 8
        full = (nu + ni) * row
        replicated = full + (max(nu, ni) + max(nu, ni) / top) * row
        alone = full + 2 * max(nu, ni) * row   # p = 1: both sides, and a side's new copy
        lines.append(f"  predicted at the issue's {nu} x {ni} x {n}, rank {args.rank}, p={top} (row counts x "
                     f"{row} B, shares at the issue's density): replicated model {replicated / 2**30:.2f} GiB and "
                     f"{full * (top - 1) / top / 2**30:.2f} GiB sent per iteration per rank; partitioned "
                     f"{dense[top][1] * full / 2**30:.2f} GiB ({dense[top][1] * full / alone:.2f}x p=1's "
                     f"{alone / 2**30:.2f} GiB) and {dense[top][0] * full * (top - 1) / top / 2**30:.2f} GiB "
                     f"({dense[top][0]:.2f}x the allgather)")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    if args.json:
        print(json.dumps({"runs": list(rows.values()), "verdicts": verdicts, "seconds": time.perf_counter() - start,
                          "load": load}, indent=1))
    else:
        print("\n".join(lines + verdicts))
        print(f"({time.perf_counter() - start:.0f} s, load average {load:.1f}; peak RSS is the process's, which ran "
              "the partitioned fits first)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
