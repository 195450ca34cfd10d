"""``mpiml mf``: train a matrix factorization (ALS, implicit ALS or DSGD) on ratings."""

from __future__ import annotations

import argparse
import os
import sys

from mpiml.cli.output import emit_json, say
from mpiml.data.ratings import FORMATS
from mpiml.runtime.errors import ArgumentError

EPILOG = """examples:
  mpiexec -n 4 mpiml mf --algorithm als --ratings ml-1m/ratings.dat --rank 32 --reg 0.05 --iters 10 \\
      --test-fraction 0.1 --out model.npz --json
  mpiexec -n 4 mpiml mf --algorithm ials --ratings plays.csv --alpha 40 --rank 64 --iters 15 --test-fraction 0.2
  mpiexec -n 4 mpiml mf --algorithm dsgd --ratings synthetic:users=20000,items=5000,ratings=1e6,rank=16 \\
      --rank 16 --iters 20 --test-fraction 0.1 --checkpoint-dir ckpt --resume

synthetic data: --ratings synthetic:users=U,items=I,ratings=N,rank=R,noise=S,skew=A,mean=M,seed=X
  (low-rank plus Gaussian noise; the best reachable test RMSE is about `noise`)
cold start (test users or items unseen in training): --cold-start drop (default) | nan | mean
"""


def build_parser():
    parser = argparse.ArgumentParser(prog="mpiml mf", description=__doc__.split(": ", 1)[1],
                                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algorithm", choices=("als", "ials", "dsgd"), default="als")
    parser.add_argument("--ratings", required=True, help="ratings file, or synthetic:KEY=VALUE,...")
    parser.add_argument("--format", default="auto", choices=FORMATS,
                        help="ratings layout (default: auto, from the suffix and the first line)")
    parser.add_argument("--rank", type=int, default=10, help="factor dimension (default 10)")
    parser.add_argument("--reg", type=float, default=None,
                        help="regularization lambda (default 0.05 als/dsgd, 0.1 ials)")
    parser.add_argument("--iters", type=int, default=10, help="iterations (DSGD: epochs)")
    parser.add_argument("--alpha", type=float, default=10.0, help="ials confidence weight (default 10)")
    parser.add_argument("--solver", choices=("cholesky", "cg"), default="cholesky", help="ials row solver")
    parser.add_argument("--cg-steps", type=int, default=3)
    parser.add_argument("--biases", action="store_true", help="als: learn user and item biases")
    parser.add_argument("--lr", type=float, default=0.05, help="dsgd initial step size")
    parser.add_argument("--step", choices=("bold", "decay"), default="bold", help="dsgd step-size rule")
    parser.add_argument("--exchange", choices=("auto", "ring", "native"), default="auto",
                        help="allgather algorithm that shares the factors (default auto)")
    split = parser.add_mutually_exclusive_group()
    split.add_argument("--test", help="held-out ratings file (same layout)")
    split.add_argument("--test-fraction", type=float, default=0.0, help="hold out this fraction, seeded")
    parser.add_argument("--split-seed", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0, help="initialization and shuffling seed")
    parser.add_argument("--k", type=int, default=10, help="cut-off of the ranking metrics")
    parser.add_argument("--cold-start", choices=("drop", "nan", "mean"), default="drop")
    parser.add_argument("--out", help="write the model here (.npz)")
    parser.add_argument("--checkpoint-dir", default=os.environ.get("MPIML_CHECKPOINT_DIR") or None,
                        help="checkpoint here (default: $MPIML_CHECKPOINT_DIR); with it, SIGUSR1/SIGTERM "
                             "checkpoint and exit with status 3")
    parser.add_argument("--checkpoint-every", type=int, default=1)
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint in --checkpoint-dir")
    parser.add_argument("--json", action="store_true", help="print one JSON object (progress goes to stderr)")
    return parser


def load(source: str, fmt: str, comm):
    """A rank's shard of a ratings file or of a synthetic data set."""
    from mpiml.data.ratings import read_ratings
    from mpiml.data.synthetic_ratings import parse_spec, synthetic_ratings

    if source.startswith("synthetic"):
        return synthetic_ratings(parse_spec(source), comm.Get_rank(), comm.Get_size())
    return read_ratings(source, fmt, comm)


def make_model(args, callback):
    from mpiml.mf import ALS, DSGD, ImplicitALS

    common = dict(rank=args.rank, iters=args.iters, seed=args.seed, exchange=args.exchange,
                  cold_start=args.cold_start, checkpoint_dir=args.checkpoint_dir,
                  checkpoint_every=args.checkpoint_every, resume=args.resume, callback=callback)
    if args.algorithm == "als":
        return ALS(reg=0.05 if args.reg is None else args.reg, biases=args.biases, **common)
    if args.algorithm == "ials":
        return ImplicitALS(reg=0.1 if args.reg is None else args.reg, alpha=args.alpha, solver=args.solver,
                           cg_steps=args.cg_steps, **common)
    return DSGD(reg=0.05 if args.reg is None else args.reg, lr=args.lr, step=args.step, **common)


def main(argv=None) -> int:
    from mpiml.data.ratings import split_fraction
    from mpiml.runtime.comm import resolve_comm

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.resume and not args.checkpoint_dir:
        parser.error("--resume needs --checkpoint-dir")
    if not 0.0 <= args.test_fraction < 1.0:
        parser.error("--test-fraction must be in [0, 1)")
    comm = resolve_comm(None)
    stream = sys.stderr if args.json else sys.stdout

    def progress(record):
        extra = f"  train_rmse {record['train_rmse']:.5f}" if "train_rmse" in record else ""
        say(f"iteration {record['iteration']:4d}  objective {record['objective']:.6g}{extra}"
            f"  {record['seconds']:.3f} s  (comm {record['comm_seconds']:.3f} s)", comm=comm, file=stream)

    try:
        model = make_model(args, progress)
        ratings = load(args.ratings, args.format, comm)
    except ArgumentError as exc:
        parser.error(str(exc))
    if args.test:
        train, test = ratings, load(args.test, args.format, comm)
    elif args.test_fraction > 0:
        train, test = split_fraction(ratings, args.test_fraction, args.split_seed)
    else:
        train, test = ratings, None
    model.fit(train, comm=comm)
    info = model.fit_info
    result = {"algorithm": args.algorithm, "rank": args.rank, "ranks": comm.Get_size(),
              "iterations": info["iterations"], "seconds": info["seconds"], "comm_seconds": info["comm_seconds"],
              "comm_fraction": info["comm_fraction"], "setup_seconds": info["setup_seconds"],
              "objective": info["objective"], "train_ratings": info["train_ratings"], "users": info["users"],
              "items": info["items"], "exchange": args.exchange}
    if "train_rmse" in info:
        result["train_rmse"] = info["train_rmse"]
    if test is not None:
        scores = model.evaluate(test, comm=comm, k=args.k)
        result["test_ratings"] = int(comm.allreduce(len(test)))
        for key, value in scores.items():
            result["test_" + key if key in ("rmse", "mae", "count") else key] = value
    if args.out:
        model.save(args.out, comm=comm)
        result["model_path"] = args.out
    if args.json:
        emit_json(result, comm=comm)
    else:
        width = max(len(k) for k in result)
        say("\n".join(f"{k.ljust(width)}  {v}" for k, v in result.items()), comm=comm)
    return 0
