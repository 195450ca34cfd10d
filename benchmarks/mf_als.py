"""Distributed ALS: seconds per iteration at p=1 and p=2, communication fraction, and a
comparison with single-node libraries on the same synthetic data, in one run.

    PYTHONPATH=. python benchmarks/mf_als.py            # ~1M ratings, rank 32
    PYTHONPATH=. python benchmarks/mf_als.py --quick    # a small smoke run

The driver writes the data set once (``.npz``), then starts every measured run as its own
process, interleaved over ``--repeats`` rounds so slow phases of a shared machine hit
all variants alike:

* mpiml explicit ALS under ``mpiexec -n 1`` and ``-n 2`` (at p=2 with the factor exchange
  done by mpiml's ring allgather and by the MPI library's own), one BLAS thread per rank;
* Surprise's SVD (biased MF by SGD) on the same train/test split: test RMSE and time;
* mpiml implicit ALS (CG solver) against the ``implicit`` library's ALS (CG, one thread),
  same confidences ``1 + alpha * r``: seconds per iteration and precision/nDCG@10.

Reported per-iteration times are medians over iterations and rounds. Libraries that
are not installed are reported as missing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

REPO = Path(__file__).resolve().parent.parent
TEST_FRACTION, SPLIT_SEED, K = 0.1, 7, 10


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=20000)
    parser.add_argument("--items", type=int, default=5000)
    parser.add_argument("--ratings", type=float, default=1.05e6)
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--reg", type=float, default=0.05)
    parser.add_argument("--alpha", type=float, default=2.0)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--surprise-epochs", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="small data, one round")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--exchange", default="auto", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.users, args.items, args.ratings, args.rank, args.iters, args.repeats = 2000, 500, 6e4, 8, 3, 1
        args.surprise_epochs = 5
    return args


# ------------------------------------------------------------------ workers
def _split(data_path, comm=None, rank=0, size=1):
    from mpiml.data.ratings import read_ratings, split_fraction

    shard = read_ratings(data_path, comm=comm) if comm is not None else _whole(data_path)
    return split_fraction(shard, TEST_FRACTION, SPLIT_SEED)


def _whole(data_path):
    import numpy as np

    from mpiml.data.ratings import RatingsShard

    with np.load(data_path) as f:
        return RatingsShard.from_arrays(f["users"], f["items"], f["ratings"])


def _implicit_strength(shard, mean):
    """Interaction strength for the implicit models: how far a rating is above the mean."""
    import numpy as np

    keep = shard.values > mean
    out = shard.subset(keep)
    out.values = np.round(out.values - mean, 3)
    return out


def worker_mpiml(args) -> dict:
    from mpi4py import MPI

    from mpiml.mf import ALS, ImplicitALS

    comm = MPI.COMM_WORLD
    train, test = _split(args.data, comm=comm)
    records = []
    if args.worker == "als":
        model = ALS(rank=args.rank, reg=args.reg, iters=args.iters, exchange=args.exchange, callback=records.append)
        model.fit(train, comm=comm)
        scores = model.evaluate(test, comm=comm)
    else:
        mean = comm.allreduce(float(train.values.sum())) / comm.allreduce(len(train))
        train, test = _implicit_strength(train, mean), _implicit_strength(test, mean)
        model = ImplicitALS(rank=args.rank, reg=args.reg, alpha=args.alpha, iters=args.iters, solver="cg",
                            cg_steps=3, exchange=args.exchange, callback=records.append)
        model.fit(train, comm=comm)
        scores = model.evaluate(test, comm=comm, k=K)
    return {"iteration_seconds": [r["seconds"] for r in records], "comm_seconds": [r["comm_seconds"] for r in records],
            "setup_seconds": model.fit_info_["setup_seconds"], "train_ratings": model.fit_info_["train_ratings"],
            **{k: v for k, v in scores.items()}}


def worker_surprise(args) -> dict:
    import numpy as np
    from surprise import SVD, Dataset, Reader, accuracy

    train, test = _split(args.data)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "train.tsv"
        np.savetxt(path, np.column_stack([train.users, train.items, train.values]), fmt=["%d", "%d", "%.6f"],
                   delimiter="\t")
        reader = Reader(line_format="user item rating", sep="\t",
                        rating_scale=(float(train.values.min()), float(train.values.max())))
        trainset = Dataset.load_from_file(str(path), reader).build_full_trainset()
    algo = SVD(n_factors=args.rank, n_epochs=args.surprise_epochs, random_state=0)
    start = time.perf_counter()
    algo.fit(trainset)
    seconds = time.perf_counter() - start
    predictions = algo.test(list(zip(test.users.astype(str), test.items.astype(str), test.values)))
    return {"fit_seconds": seconds, "epochs": args.surprise_epochs, "test_rmse": accuracy.rmse(predictions, verbose=False)}


def worker_implicit(args) -> dict:
    import numpy as np
    import scipy.sparse
    from implicit.cpu.als import AlternatingLeastSquares

    from mpiml.data.ratings import global_ids, lookup
    from mpiml.mf.metrics import ranking_means, ranking_sums, top_k

    train, test = _split(args.data)
    mean = train.values.mean()
    train, test = _implicit_strength(train, mean), _implicit_strength(test, mean)
    uid, iid = global_ids(train.users), global_ids(train.items)
    u, i = lookup(uid, train.users), lookup(iid, train.items)
    # implicit uses confidence alpha * value; this gives the same 1 + alpha * r as mpiml.
    conf = (1.0 + args.alpha * train.values) / args.alpha
    matrix = scipy.sparse.csr_matrix((conf, (u, i)), shape=(uid.size, iid.size))
    model = AlternatingLeastSquares(factors=args.rank, regularization=args.reg, alpha=args.alpha,
                                    iterations=args.iters, use_cg=True, num_threads=1, dtype=np.float64,
                                    random_state=0, calculate_training_loss=False)
    start = time.perf_counter()
    model.fit(matrix, show_progress=False)
    seconds = time.perf_counter() - start
    tu, ti = lookup(uid, test.users), lookup(iid, test.items)
    keep = (tu >= 0) & (ti >= 0)
    tu, ti = tu[keep], ti[keep]
    users = np.unique(tu)
    relevant = [set(ti[tu == user].tolist()) for user in users]
    scores = model.user_factors[users] @ model.item_factors.T
    for row, user in enumerate(users):
        scores[row, matrix.indices[matrix.indptr[user]:matrix.indptr[user + 1]]] = -np.inf
    metrics = ranking_means(ranking_sums(top_k(scores, K), relevant, K), K)
    return {"iteration_seconds": seconds / args.iters, **metrics}


WORKERS = {"als": worker_mpiml, "ials": worker_mpiml, "surprise": worker_surprise, "implicit": worker_implicit}


# ------------------------------------------------------------------- driver
def make_data(args, directory) -> tuple[str, dict]:
    import numpy as np

    sys.path.insert(0, str(REPO))
    from mpiml.data.synthetic_ratings import SyntheticSpec, synthetic_ratings

    spec = SyntheticSpec(users=args.users, items=args.items, ratings=int(args.ratings), rank=16, noise=0.5, seed=1)
    shard = synthetic_ratings(spec)
    path = str(Path(directory) / "ratings.npz")
    np.savez(path, users=shard.users, items=shard.items, ratings=shard.values)
    return path, {"users": spec.users, "items": spec.items, "ratings": len(shard), "true_rank": spec.rank,
                  "noise": spec.noise}


def run_worker(kind, data, args, ranks=None, exchange="auto"):
    cmd = [sys.executable, __file__, "--worker", kind, "--data", data, "--exchange", exchange,
           "--users", str(args.users), "--items", str(args.items), "--ratings", str(args.ratings),
           "--rank", str(args.rank), "--iters", str(args.iters), "--reg", str(args.reg),
           "--alpha", str(args.alpha), "--surprise-epochs", str(args.surprise_epochs)]
    if args.quick:
        cmd.append("--quick")
    if ranks is not None:
        sys.path.insert(0, str(REPO / "tests"))
        from mpirun import mpiexec_command, mpi_env

        cmd, env = mpiexec_command(ranks, cmd), mpi_env()
    else:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    lines = [line for line in proc.stdout.splitlines() if "RESULT " in line]
    if proc.returncode != 0 or not lines:
        return {"error": (proc.stderr or proc.stdout)[-800:]}
    # raw_decode: a launcher may append a rank tag after the object
    return json.JSONDecoder().raw_decode(lines[-1].split("RESULT ", 1)[1])[0]


def driver(args):
    import importlib.util

    have = {name: importlib.util.find_spec(name) is not None for name in ("surprise", "implicit")}
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        data, facts = make_data(args, tmp)
        variants = [("als", 1, "auto"), ("als", 2, "ring"), ("als", 2, "native")]
        runs = {v: [] for v in variants}
        extra = {}
        for round_ in range(args.repeats):
            for variant in variants:
                runs[variant].append(run_worker(variant[0], data, args, ranks=variant[1], exchange=variant[2]))
            if round_ == 0:
                extra["mpiml_ials_p1"] = run_worker("ials", data, args, ranks=1)
                extra["implicit_als"] = run_worker("implicit", data, args) if have["implicit"] else \
                    {"error": "the implicit library is not installed"}
                extra["surprise_svd"] = run_worker("surprise", data, args) if have["surprise"] else \
                    {"error": "scikit-surprise is not installed"}
    report = {"data": {**facts, "rank": args.rank, "iters": args.iters, "reg": args.reg, "test_fraction": TEST_FRACTION},
              # a shared machine: the 1-minute load average around the run says how noisy it was
              "machine": {"cpus": os.cpu_count(), "load_before": load_before, "load_after": os.getloadavg()[0]}}
    for (kind, ranks, exchange), results in runs.items():
        errors = [r["error"] for r in results if "error" in r]
        if errors:
            report[f"als_p{ranks}_{exchange}"] = {"error": errors[0]}
            continue
        per_iter = [s for r in results for s in r["iteration_seconds"]]
        comm = [c for r in results for c in r["comm_seconds"]]
        report[f"als_p{ranks}_{exchange}"] = {
            "ranks": ranks, "exchange": exchange, "seconds_per_iteration": statistics.median(per_iter),
            "comm_fraction": sum(comm) / sum(per_iter), "setup_seconds": statistics.median(r["setup_seconds"] for r in results),
            "test_rmse": results[-1]["rmse"], "runs": len(results)}
    report.update(extra)
    base = report.get("als_p1_auto", {}).get("seconds_per_iteration")
    for key in ("als_p2_ring", "als_p2_native"):
        if base and "seconds_per_iteration" in report.get(key, {}):
            report[key]["speedup_vs_p1"] = base / report[key]["seconds_per_iteration"]
    ials, lib = report["mpiml_ials_p1"], report["implicit_als"]
    if "iteration_seconds" in ials and "iteration_seconds" in lib:
        ials["seconds_per_iteration"] = statistics.median(ials.pop("iteration_seconds"))
        ials.pop("comm_seconds", None)
        report["ials_time_ratio_mpiml_over_implicit"] = ials["seconds_per_iteration"] / lib["iteration_seconds"]
    return report


def print_table(report):
    print(f"data: {report['data']}")
    for key, value in report.items():
        if key != "data":
            print(f"{key}: {json.dumps(value)}")


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        sys.path.insert(0, str(REPO))
        result = WORKERS[args.worker](args)
        if args.worker not in ("als", "ials"):
            print("RESULT " + json.dumps(result), flush=True)
        else:
            from mpi4py import MPI

            if MPI.COMM_WORLD.rank == 0:
                print("RESULT " + json.dumps(result), flush=True)
        return 0
    report = driver(args)
    print(json.dumps(report, indent=1) if args.json else "", end="\n" if args.json else "")
    if not args.json:
        print_table(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
