"""Real-data check of ``mpiml mf``: defaults vs Surprise and implicit, and load balance.

    PYTHONPATH=. python benchmarks/mf_movielens.py quality --ratings ml-1m/ratings.dat
    PYTHONPATH=. python benchmarks/mf_movielens.py quality --ratings ml-100k/u.data --tuned
    PYTHONPATH=. python benchmarks/mf_movielens.py balance --ratings ml-1m/ratings.dat --ranks 2,3,4,5

``quality`` (one process): a seeded 90/10 split (``split_fraction(shard, 0.1, seed)``);
mpiml ALS, DSGD and implicit ALS with their defaults; Surprise's ``SVD(random_state=0)``
(test RMSE on the held-out ratings whose user and item were seen in training, as mpiml's
``cold_start="drop"``); the ``implicit`` library's ``AlternatingLeastSquares()`` defaults
(``random_state=0``, one thread) with the training ratings as interaction strengths;
ranking metrics of both by :mod:`mpiml.mf.metrics` (relevant = the user's held-out items,
training items excluded). ``--tuned`` adds small grids of mpiml settings, for "the best
mpiml reaches tuned".

``balance``: each algorithm with its defaults (``--iters`` iterations) under
``mpiexec -n p``: per-rank compute seconds (wall and CPU), the compute imbalance
(max / mean), and the imbalance the cost model predicted. On a machine with fewer cores
than ranks, or shared with other work, the CPU-time imbalance is the meaningful one.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_var] = "1"

REPO = Path(__file__).resolve().parent.parent
K = 10
TUNED = {  # around the best settings found on MovieLens-100K and -1M (first half)
    "als": [dict(rank=r, reg=g) for r in (50, 100) for g in (0.07, 0.09, 0.11)],
    "dsgd": [dict(rank=r, reg=g) for r in (50, 100) for g in (0.05, 0.06, 0.08)],
    "ials": [dict(reg=g, alpha=a) for g in (20.0, 30.0, 50.0) for a in (0.25, 0.5, 1.0)],
}


def split(path, seed):
    from mpiml.data.ratings import read_ratings, split_fraction

    return split_fraction(read_ratings(path, "auto"), 0.1, seed)


def mpiml_run(algorithm, params, train, test):
    from mpiml.mf import MODELS
    from mpiml.mf.params import BY_NAME

    model = MODELS[algorithm](**params)
    start = time.perf_counter()
    model.fit(train)
    seconds = time.perf_counter() - start
    scores = model.evaluate(test, k=K)
    described = {k: v for k, v in model.get_params().items() if BY_NAME[k].model}
    return {"params": {**described, "reg_chosen": model.reg_}, "fit_seconds": seconds,
            **{k: scores[k] for k in ("rmse", f"ndcg_at_{K}", f"precision_at_{K}") if k in scores}}


def surprise_run(train, test):
    import numpy as np
    from surprise import SVD, Dataset, Reader, accuracy

    from mpiml.data.ratings import global_ids, lookup

    known = (lookup(global_ids(train.users), test.users) >= 0) & (lookup(global_ids(train.items), test.items) >= 0)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "train.tsv"
        np.savetxt(path, np.column_stack([train.users, train.items, train.values]), fmt=["%d", "%d", "%.6f"],
                   delimiter="\t")
        reader = Reader(line_format="user item rating", sep="\t",
                        rating_scale=(float(train.values.min()), float(train.values.max())))
        trainset = Dataset.load_from_file(str(path), reader).build_full_trainset()
    algo = SVD(random_state=0)
    start = time.perf_counter()
    algo.fit(trainset)
    seconds = time.perf_counter() - start
    pairs = zip(test.users[known].astype(str), test.items[known].astype(str), test.values[known])
    return {"fit_seconds": seconds, "rmse": accuracy.rmse(algo.test(list(pairs)), verbose=False)}


def implicit_run(train, test):
    import numpy as np
    import scipy.sparse
    from implicit.cpu.als import AlternatingLeastSquares

    from mpiml.data.ratings import global_ids, lookup
    from mpiml.mf.metrics import ranking_means, ranking_sums, top_k

    uid, iid = global_ids(train.users), global_ids(train.items)
    u, i = lookup(uid, train.users), lookup(iid, train.items)
    matrix = scipy.sparse.csr_matrix((train.values.astype(np.float32), (u, i)), shape=(uid.size, iid.size))
    model = AlternatingLeastSquares(random_state=0, num_threads=1)
    start = time.perf_counter()
    model.fit(matrix, show_progress=False)
    seconds = time.perf_counter() - start
    tu, ti = lookup(uid, test.users), lookup(iid, test.items)
    keep = (tu >= 0) & (ti >= 0) & (test.values > 0)
    tu, ti = tu[keep], ti[keep]
    users = np.unique(tu)
    relevant = [set(ti[tu == user].tolist()) for user in users]
    total = np.zeros(5)
    for lo in range(0, users.size, 512):
        batch = users[lo:lo + 512]
        scores = model.user_factors[batch] @ model.item_factors.T
        for row, user in enumerate(batch):
            scores[row, matrix.indices[matrix.indptr[user]:matrix.indptr[user + 1]]] = -np.inf
        total += ranking_sums(top_k(scores, K), relevant[lo:lo + 512], K)
    return {"fit_seconds": seconds, **ranking_means(total, K)}


def quality(args):
    import importlib.util

    train, test = split(args.ratings, args.seed)
    report = {"ratings": args.ratings, "seed": args.seed, "train": len(train), "test": len(test),
              "load_before": os.getloadavg()[0]}
    for algorithm in args.algorithms.split(","):
        report[f"mpiml_{algorithm}_defaults"] = mpiml_run(algorithm, {}, train, test)
        print(json.dumps({algorithm: report[f"mpiml_{algorithm}_defaults"]}), file=sys.stderr, flush=True)
        if args.tuned:
            runs = [mpiml_run(algorithm, params, train, test) for params in TUNED[algorithm]]
            metric = "rmse" if algorithm != "ials" else f"ndcg_at_{K}"
            best = (min if metric == "rmse" else max)(runs, key=lambda r: r[metric])
            report[f"mpiml_{algorithm}_tuned"] = {"best": best, "runs": runs}
    if importlib.util.find_spec("surprise"):
        report["surprise_svd_defaults"] = surprise_run(train, test)
    if importlib.util.find_spec("implicit"):
        report["implicit_als_defaults"] = implicit_run(train, test)
    report["load_after"] = os.getloadavg()[0]
    return report


def balance(args):
    sys.path.insert(0, str(REPO / "tests"))
    from mpirun import mpi_env, mpiexec_command

    rows = []
    for ranks in map(int, args.ranks.split(",")):
        for algorithm in args.algorithms.split(","):
            cmd = mpiexec_command(ranks, [sys.executable, __file__, "worker", "--ratings", args.ratings,
                                          "--algorithms", algorithm, "--iters", str(args.iters)])
            proc = subprocess.run(cmd, env=mpi_env(), capture_output=True, text=True, timeout=3600)
            lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
            row = json.loads(lines[-1][7:]) if lines else {"error": proc.stderr[-600:]}
            rows.append({"ranks": ranks, "algorithm": algorithm, **row})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return {"ratings": args.ratings, "rows": rows, "load": os.getloadavg()[0]}


def worker(args):
    from mpi4py import MPI

    from mpiml.data.ratings import read_ratings
    from mpiml.mf import MODELS

    comm = MPI.COMM_WORLD
    model = MODELS[args.algorithms](iters=args.iters)
    model.fit(read_ratings(args.ratings, "auto", comm), comm=comm)
    info = model.fit_info_
    if comm.rank == 0:
        keep = ("compute_imbalance", "compute_cpu_imbalance", "estimated_imbalance", "fit_seconds")
        per_rank = [{k: round(v, 3) for k, v in r.items()} for r in info["per_rank"]]
        print("RESULT " + json.dumps({**{k: info[k] for k in keep}, "per_rank": per_rank}), flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("quality", "balance", "worker"))
    parser.add_argument("--ratings", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--algorithms", default="als,dsgd,ials")
    parser.add_argument("--tuned", action="store_true")
    parser.add_argument("--ranks", default="2,3,4,5")
    parser.add_argument("--iters", type=int, default=3, help="balance: iterations per run")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))
    if args.mode == "worker":
        return worker(args)
    report = quality(args) if args.mode == "quality" else balance(args)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
