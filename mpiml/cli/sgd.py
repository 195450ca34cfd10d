"""``mpiml sgd``: train a linear model on data sharded over the ranks.

Exit status: 0 done; 2 bad input, arguments, divergence or checkpoint trouble (the same
message from every rank, nothing half-written); 3 (:data:`mpiml.runtime.preempt.EXIT_PREEMPTED`)
stopped early with a checkpoint to ``--resume`` from: after ``--stop-after-updates``, or, with
a checkpoint directory, on SIGUSR1/SIGTERM (what the Slurm templates send before a time
limit, and requeue on).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time

import numpy as np

from mpiml.cli.output import emit_json, say, table
from mpiml.collectives import ALGORITHMS

from mpiml.runtime.preempt import EXIT_PREEMPTED as EXIT_STOPPED

EPILOG = """examples:
  mpiexec -n 4 mpiml sgd                                   (synthetic data, logistic, L-BFGS by --strategy auto)
  mpiexec -n 4 mpiml sgd --data synthetic:classification,n=200000,d=100 --epochs 5
  mpiexec -n 2 mpiml sgd --data sklearn:breast_cancer --standardize --epochs 20   (needs scikit-learn)
  mpiexec -n 4 mpiml sgd --data train.svm --test test.svm --model logistic --strategy lbfgs
  mpiexec -n 8 mpiml sgd --data shards/ --strategy local --sync-every 16 --optimizer adam --lr 0.01
  mpiexec -n 4 mpiml sgd --data train.csv --test-fraction 0.2 --checkpoint-dir ckpt --resume --out model.npz --json

data: a file (.svm/.libsvm/.txt svmlight, .csv/.tsv, .npy, .npz), a directory of such files
(taken in name order), synthetic:classification|regression[,n=N,d=D,classes=K,density=F,
separation=S,noise=E,seed=S], or sklearn:breast_cancer|iris|wine|digits|diabetes (bundled with
scikit-learn, if installed). Each rank reads only its own part.
"""


def build_parser():
    from mpiml.sgd.config import DEFAULTS as D, STRATEGIES
    from mpiml.sgd.optim import OPTIMIZERS, SCHEDULES

    p = argparse.ArgumentParser(prog="mpiml sgd", description="Train a linear model with distributed SGD or L-BFGS.",
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = p.add_argument_group("data")
    d.add_argument("--data", default="synthetic:classification", help="training data (default: %(default)s)")
    d.add_argument("--format", choices=("svmlight", "csv", "npy", "npz"), help="default: from the file extension")
    d.add_argument("--test", help="held-out data (same format)")
    d.add_argument("--test-fraction", type=float, default=None,
                   help="hold out this share of the training rows (default 0.2 for built-in data, else 0)")
    d.add_argument("--n-features", type=int, help="svmlight: feature count (default: largest index seen)")
    d.add_argument("--label-column", type=int, default=0, help="csv/npy: column of the label (default 0)")
    m = p.add_argument_group("model")
    m.add_argument("--model", choices=("logistic", "linear", "softmax", "svm"), default="logistic")
    m.add_argument("--classes", type=int, help="softmax: number of classes (default: largest label + 1)")
    m.add_argument("--alpha", type=float, help=f"penalty strength (default {D.alpha:g})")
    m.add_argument("--l1-ratio", type=float, help="L1 share of the penalty: 0 ridge (default) .. 1 lasso")
    m.add_argument("--no-intercept", action="store_true")
    m.add_argument("--standardize", action=argparse.BooleanOptionalAction,
                   help="train on standardized features (statistics over all ranks; sparse data is only scaled); "
                        "default: on for the SGD strategies, off for lbfgs")
    m.add_argument("--squared-hinge", action="store_true", help="svm: squared hinge loss")
    t = p.add_argument_group("training (a setting the strategy does not use is an error)")
    t.add_argument("--strategy", choices=STRATEGIES, default="auto",
                   help="auto (default): lbfgs for a smooth objective (logistic, linear, softmax, svm with "
                        "--squared-hinge; no L1) unless SGD settings are given, else sync")
    t.add_argument("--sync-every", type=int, help=f"local: updates between model averages (H, default {D.sync_every})")
    t.add_argument("--epochs", type=int, help=f"SGD: passes over the data (default {D.epochs})")
    t.add_argument("--batch-size", type=int,
                   help=f"SGD: sync: global batch; local/oneshot: per-rank batch (default {D.batch_size})")
    t.add_argument("--accumulate", type=int, help="SGD: micro-batches per update (gradient accumulation)")
    t.add_argument("--optimizer", choices=OPTIMIZERS, help=f"SGD: default {D.optimizer}")
    t.add_argument("--lr", type=float, help=f"SGD: learning rate (default {D.lr:g})")
    t.add_argument("--schedule", choices=SCHEDULES, help=f"SGD: learning-rate schedule (default {D.schedule})")
    t.add_argument("--lr-decay", type=float, help="SGD: inverse/sqrt schedules: decay per update")
    t.add_argument("--momentum", type=float, help="SGD: momentum of the sgd optimizer")
    t.add_argument("--nesterov", action="store_const", const=True, help="SGD: Nesterov momentum")
    t.add_argument("--max-iter", type=int, help=f"lbfgs: iteration limit (default {D.max_iter})")
    t.add_argument("--tol", type=float,
                   help=f"lbfgs: stop when no gradient component exceeds this (default {D.tol:g}, as scikit-learn)")
    t.add_argument("--warm-start-epochs", type=int, help="lbfgs: averaged SGD epochs first")
    t.add_argument("--seed", type=int, help=f"the seed of every random choice (default {D.seed})")
    t.add_argument("--algorithm", default="auto", choices=("auto",) + tuple(ALGORITHMS["allreduce"]),
                   help="allreduce algorithm (default %(default)s)")
    o = p.add_argument_group("checkpoints and output")
    o.add_argument("--checkpoint-dir", default=os.environ.get("MPIML_CHECKPOINT_DIR") or None,
                   help="rank 0 writes checkpoints here (default: $MPIML_CHECKPOINT_DIR); with it, SIGUSR1/SIGTERM "
                        "stop after the current update with a checkpoint and exit status 3")
    o.add_argument("--checkpoint-every", type=int, help="SGD: also every N updates (default: epochs only)")
    o.add_argument("--resume", action="store_true", help="continue from the latest checkpoint, if any")
    o.add_argument("--stop-after-updates", type=int, help="checkpoint and exit (status 3) after N updates")
    o.add_argument("--out", help="write the trained model here (.npz)")
    o.add_argument("--json", action="store_true", help="print one JSON object at the end")
    o.add_argument("--progress", choices=("auto", "always", "never"), default="auto",
                   help="progress bar on rank 0: auto = only if stdout is a terminal (under mpiexec it is "
                        "usually a pipe, so say 'always' for a bar in an interactive run)")
    from mpiml.cli.parallel_options import add_arguments as add_parallel_arguments

    add_parallel_arguments(p)  # --parallel data|model|hybrid|auto --grid RxC --split --explain
    return p


def _epoch_row(record):
    def f(key):
        value = record.get(key)
        return "-" if value is None else f"{value:.4f}"
    return f"{record['epoch']:>5}  {f('train_loss'):>10}  {f('train_accuracy'):>9}  {f('test_loss'):>9}  " \
           f"{f('test_accuracy'):>8}"


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from mpi4py import MPI

    from mpiml.runtime.agree import raise_if_any
    from mpiml.runtime.errors import ArgumentError
    from mpiml.sgd.progress import Progress
    from mpiml.runtime.preempt import PreemptionWatch

    comm = MPI.COMM_WORLD
    started = time.perf_counter()
    error = None
    if args.resume and not args.checkpoint_dir:
        error = ArgumentError("--resume needs --checkpoint-dir")
    if args.test and args.test_fraction:
        error = ArgumentError("give --test or --test-fraction, not both")
    try:
        settings = resolve_settings(args)
    except ArgumentError as exc:
        error = error or exc
    raise_if_any(error, comm)  # the same verdict on every rank: it is a pure function of argv
    shard, test = _load(args, comm)
    load_seconds = time.perf_counter() - started

    say_rows = not args.json
    how = " (chosen by --strategy auto)" if args.strategy_requested == "auto" else ""
    if say_rows:
        say(f"mpiml sgd: {args.model} by {args.strategy}{how} on {comm.size} rank(s), data {args.data}")
    elif args.explain:
        say(f"strategy: {args.strategy}{how}")
    if say_rows:
        say(f"{'epoch':>5}  {'train_loss':>10}  {'train_acc':>9}  {'test_loss':>9}  {'test_acc':>8}")
    progress = None
    if comm.rank == 0:
        show = {"auto": None, "always": True, "never": False}[args.progress]
        progress = Progress(args.epochs if args.strategy != "lbfgs" else 1, enabled=show if say_rows else False,
                            on_epoch=(lambda r: print(_epoch_row(r), flush=True)) if say_rows else None)
    # The watch only records signals; the trainer carries each rank's vote in its next
    # allreduce, so all ranks stop after the same update without an extra collective.
    watch = PreemptionWatch(comm) if args.checkpoint_dir else None
    with watch or contextlib.nullcontext():
        stop_flag = (lambda: watch.requested) if watch else None
        est, fit_seconds = _fit(args, settings, comm, shard, test, progress, stop_flag)
    result = est.result_
    if progress is not None:
        progress.clear()
    if args.out and not result.interrupted:
        est.save(args.out)
    summary = _summary(args, comm, est, result, load_seconds, fit_seconds, time.perf_counter() - started)
    if args.json:
        emit_json(summary)
    else:
        _print_timings(summary)
        if result.interrupted:
            where = f"checkpoint in {args.checkpoint_dir} (rerun with --resume)" if args.checkpoint_dir \
                else "no --checkpoint-dir, so nothing was saved"
            say(f"stopped after {result.updates} updates; {where}")
        elif args.out:
            say(f"model written to {args.out}")
    return EXIT_STOPPED if result.interrupted else 0


def _load(args, comm):
    """This rank's training shard and held-out shard (or None)."""
    from mpiml.data import load_shard, split_holdout
    from mpiml.runtime.agree import raise_if_any
    from mpiml.runtime.errors import DataError

    shard = load_shard(args.data, comm, args.format, args.n_features, args.label_column)
    fraction = args.test_fraction
    if fraction is None:
        fraction = 0.2 if args.data.startswith(("synthetic:", "sklearn:")) and not args.test else 0.0
    if fraction:
        return split_holdout(shard, fraction, args.seed, comm)
    if not args.test:
        return shard, None
    test = load_shard(args.test, comm, args.format, args.n_features or shard.X.shape[1], args.label_column,
                      allow_empty=True)
    error = None
    if test.X.shape[1] != shard.X.shape[1]:
        error = DataError(f"test data has {test.X.shape[1]} features, training data {shard.X.shape[1]}", args.test)
    raise_if_any(error, comm)
    return shard, test


def resolve_settings(args) -> dict:
    """The training settings given on the command line, with ``--strategy auto`` resolved.

    Pure (the same on every rank). Raises ArgumentError for a setting the strategy would
    not use. Afterwards ``args`` holds the resolved strategy (``args.strategy_requested``
    the one asked for) and every setting, given or default, for code reading ``args``.
    """
    from mpiml.runtime.errors import ArgumentError
    from mpiml.sgd.config import SETTINGS, resolve, resolve_strategy

    settings = {name: getattr(args, name) for name in SETTINGS if getattr(args, name) is not None}
    strategy = args.strategy
    if strategy == "auto" and args.stop_after_updates is not None:  # counts updates: an SGD setting
        strategy = resolve_strategy(args.model, settings.get("l1_ratio", 0.0), args.squared_hinge,
                                    [*settings, "epochs"])
    config = resolve(strategy, args.model, args.squared_hinge, settings, spell=_flag)
    if config.strategy == "lbfgs" and args.stop_after_updates is not None:
        raise ArgumentError("--stop-after-updates not used by strategy lbfgs: --stop-after-updates is for "
                            "sync, local, oneshot")
    args.strategy_requested, args.strategy = args.strategy, config.strategy
    for name in SETTINGS:
        setattr(args, name, getattr(config, name))
    return settings


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _fit(args, settings, comm, shard, test, progress, stop_flag):
    """The fitted estimator and the seconds of its ``fit`` (imports and set-up not included)."""
    from mpiml.runtime.agree import raise_if_any
    from mpiml.runtime.errors import ArgumentError
    from mpiml.sgd import LinearModel

    error = est = None
    try:
        est = LinearModel(
            args.model, args.strategy, comm=comm, algorithm=args.algorithm, n_classes=args.classes,
            fit_intercept=not args.no_intercept, squared_hinge=args.squared_hinge,
            checkpoint_dir=args.checkpoint_dir, resume=args.resume, stop_at_update=args.stop_after_updates,
            progress=progress, stop_requested=stop_flag, standardize=args.standardize, **settings)
    except ArgumentError as exc:
        error = exc
    raise_if_any(error, comm)  # settings that cannot work: one clean message, exit status 2
    from mpiml.cli.parallel_options import fit_function

    fit = fit_function(est, args, comm, shard.X, shard.y)  # est.fit, or training on a model-split grid
    started = time.perf_counter()
    est = fit(shard.X, shard.y, None if test is None else test.X, None if test is None else test.y,
              where=shard.where, where_test=None if test is None else test.where)
    return est, time.perf_counter() - started


def _summary(args, comm, est, result, load_seconds, fit_seconds, seconds) -> dict:
    """The run's report; ``seconds`` (wall, from the start: loading, fitting, evaluating, saving) on rank 0."""
    per_rank = comm.allgather({**result.timings.as_dict(), "load_seconds": load_seconds, "fit_seconds": fit_seconds})
    totals = {key: float(np.sum([r[key] for r in per_rank])) for key in result.timings.as_dict()}
    compute = np.array([r["compute_seconds"] for r in per_rank])
    last = result.history[-1] if result.history else {}
    out = {
        "model": args.model, "strategy": args.strategy, "strategy_requested": args.strategy_requested,
        "standardize": bool(getattr(est, "standardize", False)),
        "ranks": comm.size, "data": args.data,
        "epochs": len(result.history), "updates": result.updates, "interrupted": result.interrupted,
        "resumed_from_update": result.resumed_from, "seconds": seconds,
        "load_seconds": load_seconds, "fit_seconds": fit_seconds,  # this rank's, as "seconds" (per_rank: all)
        "compute_imbalance": float(compute.max() / compute.mean()) if compute.mean() > 0 else 1.0,
        "per_rank": [{"rank": r, **t} for r, t in enumerate(per_rank)],
        "history": [{k: v for k, v in rec.items() if k not in ("lbfgs_objective", "lbfgs_seconds")}
                    for rec in result.history],
        "out": args.out if args.out and not result.interrupted else None,
    }
    out.update(getattr(est, "layout_", {"parallel": "data"}))  # parallel, grid, split (mpiml.parallel.run)
    out.update(totals)  # compute_seconds, comm_seconds, wait_seconds, eval_seconds, ...: summed over ranks
    for key in ("train_loss", "train_accuracy", "test_loss", "test_accuracy", "lbfgs_iterations",
                "lbfgs_converged"):
        out[key] = last.get(key)
    return out


def _print_timings(summary):
    keys = ("compute_seconds", "comm_seconds", "wait_seconds", "eval_seconds", "checkpoint_seconds")
    rows = [(r["rank"], *(f"{r[k]:.3f}" for k in keys)) for r in summary["per_rank"]]
    rows.append(("sum", *(f"{summary[k]:.3f}" for k in keys)))
    say(table(rows, ("rank", "compute_s", "comm_s", "wait_s", "eval_s", "checkpoint_s")))
    say(f"total {summary['seconds']:.2f} s (load {summary['load_seconds']:.2f} s, fit {summary['fit_seconds']:.2f} s) "
        f"on {summary['ranks']} rank(s); compute imbalance (max/mean) {summary['compute_imbalance']:.2f}")
    if summary["resumed_from_update"] is not None:
        say(f"resumed from the checkpoint at update {summary['resumed_from_update']}")
