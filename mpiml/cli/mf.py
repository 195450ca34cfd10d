"""``mpiml mf``: train a matrix factorization (ALS, implicit ALS or DSGD) on ratings.

Exit status: 0 done; 2 bad arguments or input, divergence or checkpoint trouble (one
``mpiml: error:`` line from rank 0, decided by every rank together before any work);
3 stopped on a signal with a checkpoint to ``--resume`` from.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from mpiml.cli.output import emit_json, say, table
from mpiml.data.ratings import FORMATS
from mpiml.errors import ArgumentError

EPILOG = """examples:
  mpiexec -n 4 mpiml mf --ratings ml-1m/ratings.dat --test-fraction 0.1 --json      (ALS, tuned defaults)
  mpiexec -n 4 mpiml mf --ratings ml-1m/ratings.dat --reg auto --test-fraction 0.1   (reg chosen on a held-out slice)
  mpiexec -n 4 mpiml mf --algorithm ials --ratings plays.csv --alpha 2 --test-fraction 0.2
  mpiexec -n 4 mpiml mf --algorithm dsgd --ratings synthetic:users=20000,items=5000,ratings=1e6,rank=16 \\
      --rank 16 --test-fraction 0.1 --checkpoint-dir ckpt --resume

defaults (chosen on MovieLens-100K and -1M; each flag overrides one):
  als   rank 50, reg 0.09 (x each row's rating count), 10 iterations, biases on
  ials  rank 100, reg 30, 15 iterations, alpha 0.5 (confidence 1 + alpha * r), cg solver (3 steps), float32
  dsgd  rank 50, reg 0.05, 20 epochs, lr 0.02 decaying as lr / (1 + 0.1 epoch), factors from N(0, 0.05), biases on
flags of one algorithm only (an error with another): --biases/--no-biases (als, dsgd); --alpha, --solver,
  --cg-steps, --dtype (ials); --lr, --step (dsgd). --reg auto: als and dsgd.

synthetic data: --ratings synthetic:users=U,items=I,ratings=N,rank=R,noise=S,skew=A,mean=M,seed=X
  (low-rank plus Gaussian noise; the best reachable test RMSE is about `noise`)
cold start (test users or items unseen in training): --cold-start drop (default) | nan | mean
"""

# flag (argparse dest) -> the algorithms it applies to
ONLY_FOR = {"biases": ("als", "dsgd"), "alpha": ("ials",), "solver": ("ials",), "cg_steps": ("ials",),
            "dtype": ("ials",), "lr": ("dsgd",), "step": ("dsgd",)}


class _Parser(argparse.ArgumentParser):
    """Raises :class:`ArgumentError` instead of printing and exiting, so the ranks can agree first."""

    def error(self, message):
        raise ArgumentError(f"{message} (see mpiml mf --help)")


def _reg(text: str):
    if text == "auto":
        return "auto"
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or auto, got {text!r}") from None


def build_parser():
    parser = _Parser(prog="mpiml mf", description=__doc__.split(": ", 1)[1].split("\n")[0],
                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algorithm", choices=("als", "ials", "dsgd"), default="als")
    parser.add_argument("--ratings", required=True, help="ratings file, or synthetic:KEY=VALUE,...")
    parser.add_argument("--format", default="auto", choices=FORMATS,
                        help="ratings layout (default: auto, from the suffix and the first line)")
    parser.add_argument("--rank", type=int, help="factor dimension (default: per algorithm, see below)")
    parser.add_argument("--reg", type=_reg, help="regularization lambda, or auto (als, dsgd) to choose it on a "
                                                 "held-out slice of the training ratings")
    parser.add_argument("--iters", type=int, help="iterations (dsgd: epochs)")
    parser.add_argument("--biases", action=argparse.BooleanOptionalAction,
                        help="als, dsgd: learn user and item biases (default on)")
    parser.add_argument("--alpha", type=float, help="ials: confidence 1 + alpha * rating")
    parser.add_argument("--solver", choices=("cholesky", "cg"), help="ials: row solver (default cg)")
    parser.add_argument("--cg-steps", type=int, help="ials --solver cg: steps per row (default 3)")
    parser.add_argument("--dtype", choices=("float32", "float64"), help="ials: factor precision (default float32)")
    parser.add_argument("--lr", type=float, help="dsgd: initial step size")
    parser.add_argument("--step", choices=("bold", "decay"), help="dsgd: step-size rule (default decay)")
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


def check(args) -> None:
    """Refuse flags that do not fit together; raises :class:`ArgumentError`."""
    wrong = [name for name, algorithms in ONLY_FOR.items()
             if getattr(args, name) is not None and args.algorithm not in algorithms]
    if wrong:
        flags = ", ".join("--" + name.replace("_", "-") + f" ({'/'.join(ONLY_FOR[name])} only)" for name in wrong)
        raise ArgumentError(f"--algorithm {args.algorithm} does not take {flags}")
    if args.cg_steps is not None and args.solver == "cholesky":
        raise ArgumentError("--cg-steps applies to --solver cg only")
    if args.reg == "auto" and args.algorithm == "ials":
        raise ArgumentError("--reg auto is for als and dsgd; give ials a number")
    if args.resume and not args.checkpoint_dir:
        raise ArgumentError("--resume needs --checkpoint-dir")
    if not 0.0 <= args.test_fraction < 1.0:
        raise ArgumentError("--test-fraction must be in [0, 1)")


def load(source: str, fmt: str, comm):
    """A rank's shard of a ratings file or of a synthetic data set."""
    from mpiml.data.ratings import read_ratings
    from mpiml.data.synthetic_ratings import parse_spec, synthetic_ratings

    if source.startswith("synthetic"):
        return synthetic_ratings(parse_spec(source), comm.Get_rank(), comm.Get_size())
    return read_ratings(source, fmt, comm)


def make_model(args, callback):
    """The estimator the arguments describe; unset flags keep the model's defaults."""
    from mpiml.mf import MODELS

    given = {"rank": args.rank, "reg": args.reg, "iters": args.iters, "biases": args.biases, "alpha": args.alpha,
             "solver": args.solver, "cg_steps": args.cg_steps, "dtype": args.dtype, "lr": args.lr,
             "step": args.step}
    return MODELS[args.algorithm](
        seed=args.seed, exchange=args.exchange, cold_start=args.cold_start, checkpoint_dir=args.checkpoint_dir,
        checkpoint_every=args.checkpoint_every, resume=args.resume, callback=callback,
        **{key: value for key, value in given.items() if value is not None})


def main(argv=None) -> int:
    from mpiml.data.ratings import split_fraction
    from mpiml.runtime.agree import raise_if_any
    from mpiml.runtime.comm import resolve_comm

    started = time.perf_counter()
    comm = resolve_comm(None)
    error = model = args = None
    try:
        args = build_parser().parse_args(argv)
        check(args)
    except ArgumentError as exc:
        error = exc
    raise_if_any(error, comm)  # every rank has the same arguments: one message, exit status 2
    stream = sys.stderr if args.json else sys.stdout

    def progress(record):
        extra = f"  train_rmse {record['train_rmse']:.5f}" if "train_rmse" in record else ""
        say(f"iteration {record['iteration']:4d}  objective {record['objective']:.6g}{extra}"
            f"  {record['seconds']:.3f} s  (compute {record['compute_seconds']:.3f} s, comm "
            f"{record['comm_seconds']:.3f} s, wait {record['wait_seconds']:.3f} s)", comm=comm, file=stream)

    try:
        model = make_model(args, progress)
    except ArgumentError as exc:
        error = exc
    raise_if_any(error, comm)
    ratings = load(args.ratings, args.format, comm)
    if args.test:
        train, test = ratings, load(args.test, args.format, comm)
    elif args.test_fraction > 0:
        train, test = split_fraction(ratings, args.test_fraction, args.split_seed)
    else:
        train, test = ratings, None
    load_seconds = time.perf_counter() - started
    model.fit(train, comm=comm)
    info = model.fit_info
    result = {"algorithm": args.algorithm, "rank": model.rank, "reg": info["reg"], "ranks": comm.Get_size(),
              "params": {k: v for k, v in model.params.items() if k not in ("exchange", "cold_start")},
              "load_seconds": load_seconds}
    for key in ("iterations", "fit_seconds", "setup_seconds", "objective", "train_ratings", "users", "items",
                "exchange", "train_rmse", "compute_imbalance", "compute_cpu_imbalance", "estimated_imbalance",
                "per_rank", "reg_search", "reg_search_seconds"):
        if key in info:
            result[key] = info[key]
    per_rank = info["per_rank"]
    for key in ("compute_seconds", "compute_cpu_seconds", "comm_seconds", "wait_seconds"):
        result[key] = sum(r[key] for r in per_rank) / len(per_rank)  # mean over ranks
    result["comm_fraction"] = result["comm_seconds"] / info["fit_seconds"] if info["fit_seconds"] > 0 else 0.0
    if test is not None:
        clock = time.perf_counter()
        scores = model.evaluate(test, comm=comm, k=args.k)
        result["test_ratings"] = int(comm.allreduce(len(test)))
        for key, value in scores.items():
            result["test_" + key if key in ("rmse", "mae", "count") else key] = value
        result["eval_seconds"] = time.perf_counter() - clock
    if args.out:
        clock = time.perf_counter()
        model.save(args.out, comm=comm)
        result["model_path"] = args.out
        result["save_seconds"] = time.perf_counter() - clock
    result["seconds"] = time.perf_counter() - started
    if args.json:
        emit_json(result, comm=comm)
    else:
        _print(result, comm)
    return 0


def _print(result, comm) -> None:
    rows = [(r["rank"], *(f"{r[k]:.3f}" for k in ("compute_seconds", "comm_seconds", "wait_seconds")))
            for r in result["per_rank"]]
    say(table(rows, ("rank", "compute_s", "comm_s", "wait_s")), comm=comm)
    for trial in result.get("reg_search", []):
        say(f"reg {trial['reg']:<8g} held-out rmse {trial['holdout_rmse']:.5f}  ({trial['iterations']} "
            f"iterations, {trial['seconds']:.2f} s)", comm=comm)
    skip = ("per_rank", "reg_search", "params")
    width = max(len(k) for k in result if k not in skip)
    say("\n".join(f"{k.ljust(width)}  {v}" for k, v in result.items() if k not in skip), comm=comm)
