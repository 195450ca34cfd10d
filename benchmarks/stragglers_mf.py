"""DSGD (bulk-synchronous) against NOMAD (asynchronous) matrix factorization under stragglers.

    PYTHONPATH=. python benchmarks/stragglers_mf.py                       # ml-1m if present, p = 2, 3, 4
    PYTHONPATH=. python benchmarks/stragglers_mf.py --ratings /work/data/ml-100k/u.data --ranks 4 --repeats 3

For each rank count p (one ``mpiexec -n p`` launch), on the same ratings: DSGD and NOMAD
with their defaults (rank 50, lr 0.02 decaying, ...), with no straggler, with rank p-1 two
times slower and four times slower (``mpiml.runtime.stragglers``: after each piece of
compute of t seconds it sleeps (f-1) t). The target is the training RMSE DSGD reaches
without a straggler after ``--target-epoch`` epochs at that p; each run records its
cumulative fit seconds per epoch and the time at the first epoch whose training RMSE is
at or below the target (runs stop there, or at ``--max-epochs``). The two algorithms alternate within
each setting (``--repeats`` times, medians reported), so that drifting load hits both alike.

Verdicts (issue 14): with one rank 2x slower at p = 4, NOMAD reaches the target in at most
0.7x DSGD's time; without stragglers in at most 1.2x. On a machine with fewer cores than
ranks the straggler's sleep frees a core for the others, which favours neither algorithm;
the load average is printed with the results.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_var] = "1"

REPO = Path(__file__).resolve().parent.parent
DATA = (Path("/work/data/ml-1m/ratings.dat"), Path("/work/data/ml-100k/u.data"))
SYNTHETIC = "synthetic:users=6000,items=3000,ratings=600000,rank=8,noise=0.5,seed=1"
FACTORS = (1.0, 2.0, 4.0)
ALGORITHMS = ("dsgd", "nomad", "nomad-work")


class Reached(Exception):
    """Raised by the callback on every rank once the target is reached: the rest of the fit is not needed."""


def time_to_target(history, target):
    """Cumulative seconds at the first epoch whose training RMSE is <= target (None: never)."""
    total = 0.0
    for record in history:
        total += record["seconds"]
        if record["train_rmse"] <= target:
            return total
    return None


def median(values):
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else 0.5 * (values[mid - 1] + values[mid])


def worker(args):
    """One rank count: every setting, both algorithms alternating; rank 0 prints RESULT lines."""
    from mpi4py import MPI

    from mpiml.cli.mf import load
    from mpiml.mf import DSGD, NOMAD
    from mpiml.runtime import stragglers

    comm = MPI.COMM_WORLD
    ratings = load(args.ratings, "auto", comm)
    slow = comm.size - 1
    reference = DSGD(iters=args.target_epoch).fit(ratings, comm=comm)
    target = reference.history_[-1]["train_rmse"]
    if comm.rank == 0:
        print("TARGET " + json.dumps({"ranks": comm.size, "target": target}), flush=True)
    for factor in FACTORS:
        for repeat in range(args.repeats):
            variants = [("dsgd", DSGD, {}), ("nomad", NOMAD, {}), ("nomad-work", NOMAD, {"epoch_end": "work"})]
            for name, cls, extra in variants if repeat % 2 == 0 else variants[::-1]:
                stragglers.install({slow: factor} if factor > 1 else {})
                history = []

                def record(entry):
                    history.append(entry)
                    if entry["train_rmse"] <= target:  # allreduced: every rank stops after the same epoch
                        raise Reached

                comm.Barrier()
                try:
                    cls(iters=args.max_epochs, callback=record, **extra).fit(ratings, comm=comm)
                except Reached:
                    pass
                stragglers.install(None)
                reached = time_to_target(history, target)
                if comm.rank == 0:
                    row = {"ranks": comm.size, "factor": factor, "algorithm": name, "repeat": repeat,
                           "target": target, "seconds_to_target": reached,
                           "epochs_to_target": next((h["iteration"] for h in history if h["train_rmse"] <= target),
                                                    None),
                           "epoch_seconds": median([h["seconds"] for h in history]),
                           "final_train_rmse": history[-1]["train_rmse"],
                           "visits_per_epoch": median([h.get("visits") for h in history])}
                    print("RESULT " + json.dumps(row), flush=True)


def run(args):
    sys.path.insert(0, str(REPO / "tests"))
    from mpirun import mpi_env, mpiexec_command

    rows, targets = [], {}
    for ranks in map(int, args.ranks.split(",")):
        cmd = mpiexec_command(ranks, [sys.executable, __file__, "worker", "--ratings", args.ratings,
                                      "--target-epoch", str(args.target_epoch), "--max-epochs", str(args.max_epochs),
                                      "--repeats", str(args.repeats)])
        start = time.perf_counter()
        proc = subprocess.run(cmd, env=mpi_env(), capture_output=True, text=True, timeout=args.timeout)
        got = [json.loads(line[7:]) for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        for line in proc.stdout.splitlines():
            if line.startswith("TARGET "):
                targets[ranks] = json.loads(line[7:])["target"]
        if proc.returncode != 0 or not got:
            print(f"p={ranks}: failed ({proc.returncode}): {proc.stderr[-800:]}", file=sys.stderr)
        rows += got
        print(f"p={ranks}: {len(got)} runs in {time.perf_counter() - start:.1f} s, load {os.getloadavg()[0]:.1f}",
              file=sys.stderr, flush=True)
    return rows, targets


def summary(rows, targets):
    """``{(ranks, factor): {algorithm: median seconds_to_target, ...}, "ratio": nomad / dsgd}``."""
    out = {}
    for ranks, factor in sorted({(r["ranks"], r["factor"]) for r in rows}):
        cell = {}
        for algorithm in ALGORITHMS:
            mine = [r for r in rows if (r["ranks"], r["factor"], r["algorithm"]) == (ranks, factor, algorithm)]
            cell[algorithm] = median([r["seconds_to_target"] for r in mine])
            cell[algorithm + "_epochs"] = median([r["epochs_to_target"] for r in mine])
            cell[algorithm + "_epoch_seconds"] = median([r["epoch_seconds"] for r in mine])
            cell[algorithm + "_reached"] = sum(r["seconds_to_target"] is not None for r in mine)
            cell[algorithm + "_runs"] = len(mine)
        for algorithm in ALGORITHMS[1:]:
            ratio = cell[algorithm] / cell["dsgd"] if cell[algorithm] and cell["dsgd"] else None
            cell["ratio" if algorithm == "nomad" else "ratio_work"] = ratio
        cell["target"] = targets.get(ranks)
        out[ranks, factor] = cell
    return out


def table(cells) -> str:
    def fmt(v, spec):
        return format(v, spec) if v is not None else "-"

    lines = [f"{'p':>2} {'slow':>5} {'target':>7} {'dsgd s':>7} {'ep':>3} {'nomad s':>7} {'ep':>3} "
             f"{'work s':>7} {'ep':>3} {'nomad/dsgd':>10} {'work/dsgd':>9}"]
    for (ranks, factor), c in cells.items():
        lines.append(f"{ranks:>2} {factor:>4g}x {fmt(c['target'], '7.4f')} {fmt(c['dsgd'], '7.2f')} "
                     f"{fmt(c['dsgd_epochs'], '3g')} {fmt(c['nomad'], '7.2f')} {fmt(c['nomad_epochs'], '3g')} "
                     f"{fmt(c['nomad-work'], '7.2f')} {fmt(c['nomad-work_epochs'], '3g')} "
                     f"{fmt(c['ratio'], '10.2f')} {fmt(c['ratio_work'], '9.2f')}")
    return "\n".join(lines)


def verdicts(cells) -> list[str]:
    out = []
    for factor, limit, what in ((2.0, 0.7, "one rank 2x slower"), (1.0, 1.2, "no straggler")):
        cell = cells.get((4, factor))
        for key, name in (("ratio", "nomad"), ("ratio_work", "nomad --epoch-end work")):
            if cell is None or cell[key] is None:
                out.append(f"verdict: p=4, {what}, {name}: no measurement (run with --ranks including 4)")
                continue
            ok = cell[key] <= limit
            out.append(f"verdict: p=4, {what}: {name} reaches the target in {cell[key]:.2f}x dsgd's time "
                       f"(goal <= {limit}): {'PASS' if ok else 'FAIL'}")
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", nargs="?", default="run", choices=("run", "worker"))
    default = next((str(p) for p in DATA if p.exists()), SYNTHETIC)
    parser.add_argument("--ratings", default=default, help=f"ratings file or synthetic spec (default: {default})")
    parser.add_argument("--ranks", default="2,3,4")
    parser.add_argument("--target-epoch", type=int, default=6,
                        help="the target: DSGD's training RMSE after this many epochs, no straggler")
    parser.add_argument("--max-epochs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per mpiexec launch")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON too")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))
    if args.mode == "worker":
        return worker(args)
    load = os.getloadavg()[0]
    start = time.perf_counter()
    rows, targets = run(args)
    cells = summary(rows, targets)
    print(f"{args.ratings}: time to the training RMSE DSGD reaches in {args.target_epoch} epochs (median of "
          f"{args.repeats}), slowed rank p-1; load {load:.1f} before, {os.getloadavg()[0]:.1f} after, "
          f"{time.perf_counter() - start:.0f} s")
    print(table(cells))
    for line in verdicts(cells):
        print(line)
    if args.json:
        print(json.dumps({"rows": rows, "targets": targets}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
