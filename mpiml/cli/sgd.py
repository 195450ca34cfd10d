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
import sys
import time

import numpy as np

from mpiml.cli.output import emit_json, say, table
from mpiml.cli.parser import Parser
from mpiml.collectives import ALGORITHMS

from mpiml.cli import timeout_option
from mpiml.runtime import watchdog
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


# Settings whose option is not their name: every command spells a penalty --reg and an
# iteration count --iters (the README's flag vocabulary).
FLAGS = {"alpha": "--reg", "max_iter": "--iters"}
# Spellings of version 0.1 still accepted, with a warning: old option -> setting.
RENAMED = {"--alpha": "alpha", "--max-iter": "max_iter", "--algorithm": "collective_algorithm"}


def build_parser():
    from mpiml.cli.parallel_options import add_arguments as add_parallel_arguments
    from mpiml.runtime.checkpoint_dir import from_environment
    from mpiml.train.config import DEFAULTS, settings_table

    p = Parser(prog="mpiml sgd", description="Train a linear model with distributed SGD or L-BFGS.", epilog=EPILOG)
    d = p.add_argument_group("data")
    d.add_argument("--data", default="synthetic:classification", help="training data (default: %(default)s)")
    d.add_argument("--format", choices=("svmlight", "csv", "npy", "npz"), help="default: from the file extension")
    d.add_argument("--test", help="held-out data (same format)")
    d.add_argument("--test-fraction", type=float, default=None,
                   help="hold out this share of the training rows (default 0.2 for built-in data, else 0)")
    d.add_argument("--n-features", type=int, help="svmlight: feature count (default: largest index seen)")
    d.add_argument("--zero-based", choices=("auto", "true", "false"), default="auto",
                   help="svmlight: feature indices start at 0 (true) or 1 (false); auto: 0 if any index 0 is in "
                        "the training data; --test is read the same way (default: auto)")
    d.add_argument("--label-column", default="0", metavar="N|NAME",
                   help="csv/npy: the label's column, by position or (csv) by its name in the header line "
                        "(default: 0)")
    d.add_argument("--header", choices=("auto", "yes", "no"), default="auto",
                   help="csv: each file's first line (not blank or a comment) is a header; auto: when every field "
                        "starts with a letter, _ or a quote (default: auto)")
    m = p.add_argument_group("model")
    m.add_argument("--model", choices=("logistic", "linear", "softmax", "svm"), default="logistic",
                   help="logistic regression, least squares, multinomial logistic or linear SVM")
    m.add_argument("--classes", type=int, help="softmax: number of classes (default: largest label + 1)")
    add_settings(m, "model")
    m.add_argument("--no-intercept", action="store_true", help="fit no bias term")
    m.add_argument("--standardize", action=argparse.BooleanOptionalAction,
                   help="train on standardized features (statistics over all ranks; sparse data is only scaled); "
                        "default: on for the SGD strategies, off for lbfgs")
    m.add_argument("--squared-hinge", action="store_true", help="svm: squared hinge loss")
    t = p.add_argument_group("training (a setting the strategy does not use is an error)")
    strategy = settings_table(with_strategy=True)["strategy"]
    t.add_argument("--strategy", choices=strategy.choices, default=DEFAULTS.strategy, help=strategy.help)
    add_settings(t, "training")
    t.add_argument("--collective-algorithm", default="auto",
                   choices=("auto",) + tuple(ALGORITHMS["allreduce"]) + ("sparse",),
                   help="allreduce algorithm that sums the gradients (default %(default)s); sparse: sync SGD sends "
                        "only the gradient's nonzeros (sparse_allreduce), which auto does where the model predicts "
                        "it cheaper (wide sparse data)")
    t.add_argument("--slow-ranks", metavar="R:F[,R:F]", help="experiments: rank R computes F times slower (it "
                   "sleeps (F-1)x each piece of compute); default: $MPIML_SLOW_RANKS")
    o = p.add_argument_group("checkpoints and output")
    o.add_argument("--checkpoint-dir", default=from_environment("sgd"),
                   help="rank 0 writes checkpoints here, locked for the run (default: $MPIML_CHECKPOINT_DIR/sgd); "
                        "with it, SIGUSR1/SIGTERM stop after the current update with a checkpoint and exit status 3")
    add_settings(o, "checkpoints")
    o.add_argument("--resume", action="store_true", help="continue from the latest checkpoint, if any (it must "
                   "have been written with the same settings and data)")
    o.add_argument("--overwrite", action="store_true", help="start afresh in a --checkpoint-dir that holds a "
                   "checkpoint, replacing it (without it or --resume, such a directory is an error)")
    o.add_argument("--stop-after-updates", type=int, help="checkpoint and exit (status 3) after N updates")
    o.add_argument("--out", help="write the trained model here (.npz)")
    o.add_argument("--json", action="store_true", help="print one JSON object at the end")
    o.add_argument("--plot", metavar="FILE.png", help="draw the loss per epoch and per second, and each rank's "
                   "compute/communication/wait time (needs matplotlib: the plot extra)")
    o.add_argument("--progress", choices=("auto", "always", "never"), default="auto",
                   help="progress bar on rank 0: auto = only if stdout is a terminal (under mpiexec it is "
                        "usually a pipe, so say 'always' for a bar in an interactive run)")
    timeout_option.add_argument(o)  # --timeout
    add_parallel_arguments(p)  # --parallel data|model|hybrid|auto --grid RxC --split --explain
    for old, name in RENAMED.items():
        p.rename(old, _flag(name))
    return p


def add_settings(group, section: str) -> None:
    """One option per training setting of ``section`` in the field table (:func:`mpiml.train.config.settings_table`).

    Flags are the names with dashes; the default is None, so that the settings given are
    told from the rest (:func:`mpiml.train.config.resolve` refuses the ones the strategy
    would not use); the help names the strategies that use a setting and its default.
    """
    from mpiml.train.config import DEFAULTS, settings_table

    for name, setting in settings_table().items():
        if setting.section != section:
            continue
        default = getattr(DEFAULTS, name)
        shown = f"{default:g}" if isinstance(default, float) else str(default)
        text = setting.help
        if setting.default_text is None:
            text += f" (default {shown})"
        elif setting.default_text:
            text += f" (default: {setting.default_text})"
        if setting.scope:
            text = f"{setting.scope}: {text}"
        if setting.type is bool:
            group.add_argument(_flag(name), dest=name, action="store_const", const=True, help=text)
        else:
            group.add_argument(_flag(name), dest=name, type=setting.type, choices=setting.choices, help=text,
                               metavar=None if setting.choices else name.upper())


def _epoch_row(record):
    def f(key):
        value = record.get(key)
        return "-" if value is None else f"{value:.4f}"
    return f"{record['epoch']:>5}  {f('train_loss'):>10}  {f('train_accuracy'):>9}  {f('test_loss'):>9}  " \
           f"{f('test_accuracy'):>8}"


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    watchdog.configure(args.timeout)
    from mpi4py import MPI

    from mpiml.errors import ArgumentError
    from mpiml.runtime.agree import raise_if_any
    from mpiml.runtime.preempt import PreemptionWatch
    from mpiml.runtime.progress import Phase, announce_resume, note
    from mpiml.train.progress import Progress

    comm = MPI.COMM_WORLD
    started = time.perf_counter()
    error = settings = None
    try:
        settings = check(args)
    except ArgumentError as exc:
        error = exc
    raise_if_any(error, comm)  # the same verdict on every rank: it is a pure function of argv
    if args.slow_ranks is not None:
        from mpiml.runtime import stragglers

        stragglers.install(args.slow_ranks)
    from mpiml.plan.guard import check_resources
    check_resources(comm, "sgd", args)  # more ranks than cores, or memory than the node has: warn once
    with Phase("loading data"):
        shard, test = _load(args, comm)
    load_seconds = time.perf_counter() - started
    if args.resume:
        announce_resume(args.checkpoint_dir, "updates", "update")

    say_rows = not args.json
    how = " (chosen by --strategy auto)" if args.strategy_requested == "auto" else ""
    if say_rows:
        say(f"mpiml sgd: {args.model} by {args.strategy}{how} on {comm.size} rank(s), data {args.data}")
    elif args.explain:  # stdout holds only the JSON object
        say(f"strategy: {args.strategy}{how}", file=sys.stderr)
    if say_rows:
        say(f"{'epoch':>5}  {'train_loss':>10}  {'train_acc':>9}  {'test_loss':>9}  {'test_acc':>8}")
    progress = None
    show = {"auto": None, "always": True, "never": False}[args.progress]
    bar = say_rows and (show if show is not None else sys.stdout.isatty())
    # Lines on stderr where no bar or epoch row shows how far training is (--json, a log file).
    phase = Phase("training", total=None if args.strategy == "lbfgs" else args.epochs, unit="epochs",
                  enabled=None if not bar and show is not False else False)
    if comm.rank == 0:
        def on_epoch(record):
            if say_rows:
                print(_epoch_row(record), flush=True)
            loss = record.get("train_loss")
            phase.update(record["epoch"], "" if loss is None else f"train_loss {loss:.4g}")

        progress = Progress(args.epochs if args.strategy != "lbfgs" else 1, enabled=bar, on_epoch=on_epoch)
    # The watch only records signals; the trainer carries each rank's vote in its next
    # allreduce, so all ranks stop after the same update without an extra collective.
    watch = PreemptionWatch(comm) if args.checkpoint_dir else None
    with watch or contextlib.nullcontext(), phase:
        stop_flag = (lambda: watch.requested) if watch else None
        est, fit_seconds = _fit(args, settings, comm, shard, test, progress, stop_flag)
    result = est.result_
    if progress is not None:
        progress.clear()
    if args.out and not result.interrupted:
        from mpiml.cli.outputs import write_result

        write_result(est.save, args.out, "--out", "trained model", comm, checkpoint_dir=args.checkpoint_dir)
        note(f"wrote {args.out}")
    summary = _summary(args, comm, est, result, load_seconds, fit_seconds, time.perf_counter() - started)
    if args.plot:
        _plot(args.plot, summary, result, comm)
    if args.json:
        emit_json(summary)
    else:
        _print_timings(summary)
        if result.interrupted:
            where = f"checkpoint in {args.checkpoint_dir} (rerun with --resume)" if args.checkpoint_dir \
                else "no --checkpoint-dir, so nothing was saved"
            say(f"stopped after {result.updates} updates; {where}")
    return EXIT_STOPPED if result.interrupted else 0


def check(args) -> dict:
    """Refuse options that do not fit together (:class:`ArgumentError`); the settings given (:func:`resolve_settings`).

    Pure: a function of the command line only, so every rank reaches the same verdict.
    """
    from mpiml.cli.outputs import check_output
    from mpiml.cli.parser import check_writable
    from mpiml.errors import ArgumentError

    if args.resume and not args.checkpoint_dir:
        raise ArgumentError("--resume needs --checkpoint-dir")
    if args.resume and args.overwrite:
        raise ArgumentError("give --resume or --overwrite, not both")
    if args.test and args.test_fraction:
        raise ArgumentError("give --test or --test-fraction, not both")
    if args.test_fraction is not None and not 0 <= args.test_fraction < 1:
        raise ArgumentError(f"--test-fraction must be in [0, 1), got {args.test_fraction}")
    for flag, value, least in (("--n-features", args.n_features, 1), ("--classes", args.classes, 2),
                               ("--stop-after-updates", args.stop_after_updates, 1)):
        if value is not None and value < least:
            raise ArgumentError(f"{flag} must be at least {least}, got {value}")
    if args.split == "classes" and args.model != "softmax":
        raise ArgumentError(f"--split classes splits the classes of --model softmax; --model {args.model} has "
                            "one output: use --split features")
    from mpiml.runtime import stragglers

    # the error names the part it cannot read
    stragglers.parse(args.slow_ranks) if args.slow_ranks is not None else stragglers.from_env()
    check_writable(args.out, "--out")
    check_writable(args.plot, "--plot")
    check_output(args.checkpoint_dir, "--checkpoint-dir", folder=True)
    if args.plot:
        from mpiml.cli import plots

        plots.require()  # before the training, not after
    try:
        return resolve_settings(args)
    except ArgumentError as exc:  # "alpha must be >= 0": name the option the user typed
        name, _, rest = str(exc).partition(" ")
        if name in FLAGS:
            raise ArgumentError(f"{FLAGS[name]} {rest}") from None
        raise


def check_args(argv) -> None:
    """Parse and check ``argv`` as :func:`main` would, without running (``mpiml slurm render`` calls it)."""
    check(build_parser().parse_args(argv))


def _load(args, comm):
    """This rank's training shard and held-out shard (or None)."""
    from mpiml.data import load_shard, split_holdout
    from mpiml.runtime.agree import raise_if_any
    from mpiml.errors import DataError

    base = {"auto": "auto", "true": True, "false": False}[args.zero_based]
    label = int(args.label_column) if args.label_column.strip().lstrip("-").isdigit() else args.label_column
    shard = load_shard(args.data, comm, args.format, args.n_features, label, zero_based=base, header=args.header)
    args.rows_read = int(comm.allreduce(shard.n_rows))
    fraction = args.test_fraction
    if fraction is None:
        fraction = 0.2 if args.data.startswith(("synthetic:", "sklearn:")) and not args.test else 0.0
    if fraction:
        return split_holdout(shard, fraction, args.seed, comm)
    if not args.test:
        return shard, None
    # The test file is read as the training file was: the same base, features, label column.
    test = load_shard(args.test, comm, args.format, args.n_features or shard.X.shape[1], label, allow_empty=True,
                      zero_based=base if shard.zero_based is None else shard.zero_based, header=args.header)
    args.test_rows_read = int(comm.allreduce(test.n_rows))
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
    from mpiml.errors import ArgumentError
    from mpiml.train.config import SETTINGS, resolve, resolve_strategy

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
    """The option of setting ``name``: ``--lr-decay`` for ``lr_decay``, else the command-line vocabulary's."""
    return FLAGS.get(name) or "--" + name.replace("_", "-")


def _fit(args, settings, comm, shard, test, progress, stop_flag):
    """The fitted estimator and the seconds of its ``fit`` (imports and set-up not included)."""
    from mpiml.cli.parallel_options import plan_layout
    from mpiml.sgd import LinearModel, kernels
    from mpiml.train import lbfgs_math

    layout = plan_layout(args, comm, shard.X, shard.y)  # prints the layout chosen (collective)
    est = LinearModel(
        args.model, args.strategy, **layout, comm=comm, algorithm=args.collective_algorithm, n_classes=args.classes,
        fit_intercept=not args.no_intercept, squared_hinge=args.squared_hinge, standardize=args.standardize,
        checkpoint_dir=args.checkpoint_dir, resume=args.resume, overwrite=args.overwrite,
        stop_at_update=args.stop_after_updates,
        progress=progress, stop_requested=stop_flag, **settings)
    kernels.load()  # compiled (or read from the cache) before the clock
    lbfgs_math.load()
    started = time.perf_counter()
    est.fit(shard.X, shard.y, None if test is None else test.X, None if test is None else test.y,
            where=shard.where, where_test=None if test is None else test.where)
    return est, time.perf_counter() - started


def _summary(args, comm, est, result, load_seconds, fit_seconds, seconds) -> dict:
    """The run's report; ``seconds`` (wall, from the start: loading, fitting, evaluating, saving) on rank 0."""
    from mpiml.runtime.rss import peak_rss_bytes

    per_rank = comm.allgather({**result.timings.as_dict(), "load_seconds": load_seconds, "fit_seconds": fit_seconds,
                               "peak_rss_bytes": peak_rss_bytes()})
    totals = {key: float(np.sum([r[key] for r in per_rank])) for key in result.timings.as_dict()}
    compute = np.array([r["compute_seconds"] for r in per_rank])
    last = result.history[-1] if result.history else {}
    out = {
        "model": args.model, "strategy": args.strategy, "strategy_requested": args.strategy_requested,
        "standardize": est.standardize_,
        "ranks": comm.size, "data": args.data,
        "epochs": len(result.history), "updates": result.updates, "interrupted": result.interrupted,
        "resumed_from_update": result.resumed_from, "seconds": seconds,
        "load_seconds": load_seconds, "fit_seconds": fit_seconds,  # this rank's, as "seconds" (per_rank: all)
        "compute_imbalance": float(compute.max() / compute.mean()) if compute.mean() > 0 else 1.0,
        "per_rank": [{"rank": r, **t} for r, t in enumerate(per_rank)],
        "history": [{k: v for k, v in rec.items() if k != "lbfgs_objective"}
                    for rec in result.history],
        "out": args.out if args.out and not result.interrupted else None,
        "rows_read": args.rows_read, "test_rows_read": getattr(args, "test_rows_read", None),
        # --compress / the sparse exchange: the bytes a rank sends per sync update of this launch (the ranks'
        # mean; None where nothing counted them: one rank, local/oneshot/lbfgs), and a dense allreduce's over them
        "compress": args.compress,
        "comm_bytes_per_update": _per_update(comm.allgather(result.bytes_moved), result),
        "compression_ratio": result.bytes_dense / result.bytes_moved if result.bytes_moved else None,
        "peak_rss_bytes": max(r["peak_rss_bytes"] for r in per_rank),  # the largest rank's, so far
    }
    out.update(est.layout_)  # parallel, grid, split (and estimates: mpiml.parallel.run)
    out.update(totals)  # compute_seconds, comm_seconds, wait_seconds, eval_seconds, ...: summed over ranks
    for key in ("train_loss", "train_accuracy", "test_loss", "test_accuracy", "lbfgs_iterations",
                "lbfgs_converged"):
        out[key] = last.get(key)
    return out


def _per_update(sent, result):
    """The ranks' mean bytes sent per update of this launch, or None."""
    updates = result.updates - (result.resumed_from or 0)
    return float(np.mean(sent)) / updates if any(sent) and updates > 0 else None


def _plot(path, summary, result, comm) -> None:
    """Rank 0 draws ``--plot`` (collective: a failure is every rank's error)."""
    from mpiml.cli import plots
    from mpiml.errors import ArgumentError, MpimlError
    from mpiml.runtime.agree import raise_if_any
    from mpiml.runtime.progress import note

    error = None
    if comm.rank == 0:
        first = result.history[0] if result.history else {}
        trace = (first["lbfgs_objective"], first["lbfgs_seconds"]) if "lbfgs_objective" in first else None
        try:
            plots.sgd(path, summary, trace)
            note(f"wrote {path}")
        except (MpimlError, OSError) as exc:
            error = exc if isinstance(exc, MpimlError) else ArgumentError(f"cannot write {path}: {exc}")
    raise_if_any(error, comm)


def _print_timings(summary):
    keys = ("compute_seconds", "comm_seconds", "wait_seconds", "eval_seconds", "checkpoint_seconds")
    rows = [(r["rank"], *(f"{r[k]:.3f}" for k in keys)) for r in summary["per_rank"]]
    rows.append(("sum", *(f"{summary[k]:.3f}" for k in keys)))
    say(table(rows, ("rank", "compute_s", "comm_s", "wait_s", "eval_s", "checkpoint_s")))
    say(f"total {summary['seconds']:.2f} s (load {summary['load_seconds']:.2f} s, fit {summary['fit_seconds']:.2f} s) "
        f"on {summary['ranks']} rank(s); compute imbalance (max/mean) {summary['compute_imbalance']:.2f}")
    if summary["resumed_from_update"] is not None:
        say(f"resumed from the checkpoint at update {summary['resumed_from_update']}")
