"""``mpiml mf``: train a matrix factorization (ALS, implicit ALS, DSGD or NOMAD) on ratings.

Exit status: 0 done; 2 bad arguments or input, divergence or checkpoint trouble (one
``mpiml: error:`` line from rank 0, decided by every rank together before any work);
3 stopped on a signal with a checkpoint to ``--resume`` from.
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
import time
from collections.abc import Mapping

from mpiml.cli.output import emit_json, say, table
from mpiml.cli.outputs import check_output
from mpiml.cli.parser import Parser, check_writable, comma_list
from mpiml.data.ratings import FORMATS
from mpiml.errors import ArgumentError
from mpiml.mf import params
from mpiml.cli import timeout_option
from mpiml.runtime import watchdog

EXAMPLES = """examples:
  mpiexec -n 4 mpiml mf --ratings ml-1m/ratings.dat --test-fraction 0.1 --json      (ALS, tuned defaults)
  mpiexec -n 4 mpiml mf --ratings ml-1m/ratings.dat --reg auto --test-fraction 0.1   (reg chosen on a held-out slice)
  mpiexec -n 4 mpiml mf --algorithm ials --ratings plays.csv --confidence 2 --test-fraction 0.2
  mpiexec -n 4 mpiml mf --algorithm dsgd --ratings synthetic:users=20000,items=5000,ratings=1e6,rank=16 \\
      --rank 16 --test-fraction 0.1 --checkpoint-dir ckpt --resume
"""

NOTES = """
synthetic data: --ratings synthetic:users=U,items=I,ratings=N,rank=R,noise=S,skew=A,mean=M,seed=X
  (low-rank plus Gaussian noise; the best reachable test RMSE is about `noise`)
"""

# The model's options: the parameter table, less what the command line sets itself.
MODEL_FLAGS = tuple(p for p in params.PARAMS if p.flag)
CHECKPOINT_ENV = "MPIML_CHECKPOINT_DIR"


def epilog() -> str:
    """Examples, each algorithm's defaults and the flags of one algorithm only: from the parameter table."""
    lines = [EXAMPLES, "defaults (chosen on MovieLens-100K and -1M; each flag overrides one):"]
    for algorithm in params.ALGORITHMS:
        shown = []
        for p in params.of(algorithm):
            default = p.default_for(algorithm)
            specific = isinstance(p.default, Mapping) or p.algorithms != params.ALGORITHMS
            if p.flag and specific and params.in_effect(p, {}, algorithm) and default is not None:
                shown.append(_as_flag(p, default))
        lines.append(textwrap.fill(" ".join(shown), 100, initial_indent=f"  {algorithm:<5} ",
                                   subsequent_indent=" " * 8, break_on_hyphens=False))
    groups: dict = {}
    for p in MODEL_FLAGS:
        if p.algorithms != params.ALGORITHMS:
            groups.setdefault(p.algorithms, []).append(p.option)
    only = "; ".join(f"{', '.join(flags)} ({'/'.join(algorithms)})" for algorithms, flags in groups.items())
    lines.append(textwrap.fill(f"flags of one algorithm only (an error with another): {only}. --reg auto: "
                               f"{' and '.join(params.AUTO)}.", 100, subsequent_indent="  ",
                               break_on_hyphens=False))
    return "\n".join(lines) + "\n" + NOTES


def _as_flag(p: params.Param, value) -> str:
    if p.kind == "bool":
        return p.option if value else "--no-" + p.option[2:]
    return f"{p.option} {value:g}" if isinstance(value, float) else f"{p.option} {value}"


def _reg(text: str):
    if text == "auto":
        return "auto"
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or auto, got {text!r}") from None


TYPES = {"int": int, "float": float, "reg": _reg, "grid": comma_list(float), "path": str, "choice": str}


def _add_model_option(parser, p: params.Param) -> None:
    """The option of parameter ``p``: None unless given, so that the model's own default applies."""
    scope = "" if p.algorithms == params.ALGORITHMS else "/".join(p.algorithms) + ": "
    default = params.default_text(p)
    text = f"{scope}{p.help}" + (f" (default: {default})" if p.default is not None else "")
    if p.name == "checkpoint_dir":
        text += f"; default ${CHECKPOINT_ENV}/mf"
    if p.kind == "bool":
        action = "store_true" if p.name in ("resume", "overwrite") else argparse.BooleanOptionalAction
        parser.add_argument(p.option, dest=p.name, action=action, default=None, help=text)
    else:
        parser.add_argument(p.option, dest=p.name, type=TYPES[p.kind], choices=p.choices or None, default=None,
                            help=text,
                            metavar=None if p.choices else p.option[2:].upper().replace("-", "_"))


def build_parser():
    parser = Parser(prog="mpiml mf", description=__doc__.split(": ", 1)[1].split("\n")[0], epilog=epilog())
    parser.add_argument("--algorithm", choices=params.ALGORITHMS, default="als",
                        help="als (explicit ratings), ials (implicit feedback), dsgd (stochastic gradient) or nomad "
                             "(asynchronous dsgd: no barrier between sub-epochs)")
    parser.add_argument("--ratings", required=True, help="ratings file, or synthetic:KEY=VALUE,...")
    parser.add_argument("--format", default="auto", choices=FORMATS,
                        help="ratings layout (default: auto, from the suffix and the first line)")
    parser.add_argument("--header", default="auto", choices=("auto", "yes", "no"),
                        help="text: the first line (not blank or a comment) is a header; auto: when every field "
                             "starts with a letter, _ or a quote (default: auto)")
    model = parser.add_argument_group("model (unset: the algorithm's default)")
    for p in MODEL_FLAGS:
        _add_model_option(model, p)
    split = parser.add_mutually_exclusive_group()
    split.add_argument("--test", help="held-out ratings file (same layout)")
    split.add_argument("--test-fraction", type=float, default=0.0, help="hold out this fraction, seeded")
    parser.add_argument("--split-seed", type=int, default=0, help="seed of the --test-fraction split")
    parser.add_argument("--k", type=int, default=10, help="cut-off of the ranking metrics")
    parser.add_argument("--out", help="write the model here (.npz; with --factors partitioned a directory: each rank "
                        "writes its blocks, FactorModel.load reads it at any number of ranks)")
    parser.add_argument("--json", action="store_true", help="print one JSON object (progress goes to stderr)")
    parser.add_argument("--plot", metavar="FILE.png", help="draw the objective and training RMSE per iteration and "
                        "per second, and each rank's time (needs matplotlib: the plot extra)")
    timeout_option.add_argument(parser)  # --timeout
    parser.add_argument("--slow-ranks", metavar="R:F[,R:F]", help="experiments: rank R computes F times slower (it "
                        "sleeps (F-1)x each piece of compute; dsgd and nomad); default: $MPIML_SLOW_RANKS")
    parser.rename("--alpha", "--confidence")  # 0.1 spellings
    parser.rename("--exchange", "--collective-algorithm")
    return parser


def given(args) -> dict:
    """The model parameters set on the command line (``--checkpoint-dir`` also from the environment)."""
    values = {p.name: getattr(args, p.name) for p in MODEL_FLAGS if getattr(args, p.name) is not None}
    if "checkpoint_dir" not in values and os.environ.get(CHECKPOINT_ENV):
        from mpiml.runtime.checkpoint_dir import from_environment

        values["checkpoint_dir"] = from_environment("mf")  # DIR/mf: sgd's checkpoints go to DIR/sgd
    return values


def check(args) -> None:
    """Refuse flags that do not fit together or values out of range; raises :class:`ArgumentError`."""
    algorithm, values = args.algorithm, given(args)
    wrong = [p for p in MODEL_FLAGS if p.name in values and algorithm not in p.algorithms]
    if wrong:
        flags = ", ".join(f"{p.option} ({'/'.join(p.algorithms)} only)" for p in wrong)
        raise ArgumentError(f"--algorithm {algorithm} does not take {flags}")
    if values.get("reg") == "auto" and algorithm not in params.AUTO:
        raise ArgumentError(f"--reg auto is for {' and '.join(params.AUTO)}; give {algorithm} a number")
    for p in MODEL_FLAGS:
        if p.name in values and not params.in_effect(p, values, algorithm):
            other, needed = p.only_with
            raise ArgumentError(f"{p.option} applies to {params.BY_NAME[other].option} {needed} only")
    if values.get("resume") and not values.get("checkpoint_dir"):
        raise ArgumentError("--resume needs --checkpoint-dir")
    if values.get("resume") and values.get("overwrite"):
        raise ArgumentError("give --resume or --overwrite, not both")
    if not 0.0 <= args.test_fraction < 1.0:
        raise ArgumentError("--test-fraction must be in [0, 1)")
    if args.k < 1:
        raise ArgumentError(f"--k must be at least 1, got {args.k}")
    params.validate(algorithm, values, labels={p.name: p.option for p in MODEL_FLAGS})
    for source in (args.ratings, args.test):
        if source and source.startswith("synthetic"):
            from mpiml.data.synthetic_ratings import parse_spec

            parse_spec(source)  # a bad spec is an error now, on every rank, not in the middle of loading
    if args.slow_ranks is not None:
        from mpiml.runtime import stragglers

        stragglers.parse(args.slow_ranks)
    if values.get("factors") == "partitioned":
        check_output(args.out, "--out", folder=True)   # a directory of blocks (FactorModel.save)
    else:
        check_writable(args.out, "--out")
    check_writable(args.plot, "--plot")
    check_output(values.get("checkpoint_dir"), "--checkpoint-dir", folder=True)
    if args.plot:
        from mpiml.cli import plots

        plots.require()  # before the training, not after


def check_args(argv) -> None:
    """Parse and check ``argv`` as :func:`main` would, without running (``mpiml slurm render`` calls it)."""
    check(build_parser().parse_args(argv))


def load(source: str, fmt: str, comm, header: str = "auto"):
    """A rank's shard of a ratings file or of a synthetic data set."""
    from mpiml.data.ratings import read_ratings
    from mpiml.data.synthetic_ratings import parse_spec, synthetic_ratings

    from mpiml.runtime.progress import Phase

    if source.startswith("synthetic"):
        with Phase("generating ratings", unit="ratings on rank 0") as phase:  # rank 0's share stands for all
            return synthetic_ratings(parse_spec(source), comm.Get_rank(), comm.Get_size(), progress=phase.advance)
    with Phase(f"reading {source}"):
        return read_ratings(source, fmt, comm, header=header)


def make_model(args, callback):
    """The estimator the arguments describe; unset flags keep the model's defaults."""
    from mpiml.mf import MODELS

    return MODELS[args.algorithm](callback=callback, **given(args))


def main(argv=None) -> int:
    from mpiml.data.ratings import split_fraction
    from mpiml.runtime.agree import raise_if_any
    from mpiml.runtime.comm import resolve_comm
    from mpiml.runtime.progress import Phase, announce_resume, note

    started = time.perf_counter()
    comm = resolve_comm(None)
    args = build_parser().parse_args(argv)  # a UsageError here is the same on every rank
    watchdog.configure(args.timeout)
    error = model = None
    try:
        check(args)
    except ArgumentError as exc:
        error = exc
    raise_if_any(error, comm)  # every rank has the same arguments: one message, exit status 2
    if args.slow_ranks is not None:
        from mpiml.runtime import stragglers

        stragglers.install(args.slow_ranks)
    from mpiml.plan.guard import check_resources
    check_resources(comm, "mf", args)  # more ranks than cores, or memory than the node has: warn once
    stream = sys.stderr if args.json else sys.stdout

    iterations = []

    def progress(record):
        iterations.append(record)
        extra = f"  train_rmse {record['train_rmse']:.5f}" if "train_rmse" in record else ""
        say(f"iteration {record['iteration']:4d}  objective {record['objective']:.6g}{extra}"
            f"  {record['seconds']:.3f} s  (compute {record['compute_seconds']:.3f} s, comm "
            f"{record['comm_seconds']:.3f} s, wait {record['wait_seconds']:.3f} s)", comm=comm, file=stream)

    model = make_model(args, progress)  # its parameters were checked above, on every rank
    ratings = load(args.ratings, args.format, comm, args.header)
    if args.test:
        train, test = ratings, load(args.test, args.format, comm, args.header)
    elif args.test_fraction > 0:
        train, test = split_fraction(ratings, args.test_fraction, args.split_seed)
    else:
        train, test = ratings, None
    load_seconds = time.perf_counter() - started
    if model.resume:
        announce_resume(model.checkpoint_dir, "step", "iteration")
    model.fit(train, comm=comm)
    info = model.fit_info_
    settings = model.get_params()
    described = {k: v for k, v in settings.items()
                 if params.BY_NAME[k].model and params.in_effect(params.BY_NAME[k], settings, args.algorithm)}
    result = {"algorithm": args.algorithm, "rank": model.rank, "reg": info["reg"], "ranks": comm.Get_size(),
              "params": {k: v for k, v in described.items() if k not in ("exchange", "cold_start")},
              "load_seconds": load_seconds, "ratings_read": int(comm.allreduce(len(ratings)))}
    if args.test:
        result["test_ratings_read"] = int(comm.allreduce(len(test)))
    for key in ("iterations", "fit_seconds", "setup_seconds", "objective", "train_ratings", "users", "items",
                "exchange", "train_rmse", "compute_imbalance", "compute_cpu_imbalance", "estimated_imbalance",
                "factors_layout",
                "per_rank", "reg_search", "reg_search_seconds",
                "overlap_chunks", "overlapped_half_steps", "exchange_exposed_seconds", "comm_hidden_fraction",
                "transfer_hidden_fraction"):
        if key in info:
            result[key] = info[key]
    per_rank = info["per_rank"]
    for key in ("compute_seconds", "compute_cpu_seconds", "comm_seconds", "wait_seconds"):
        result[key] = sum(r[key] for r in per_rank) / len(per_rank)  # mean over ranks
    result["comm_fraction"] = result["comm_seconds"] / info["fit_seconds"] if info["fit_seconds"] > 0 else 0.0
    for key in ("model_bytes", "bytes_per_iteration"):
        result[key] = info["max_" + key]  # the largest rank's (each rank's in per_rank)
    from mpiml.runtime.rss import peak_rss_bytes

    result["iteration_seconds"] = [record["seconds"] for record in iterations]
    result["peak_rss_bytes"] = max(comm.allgather(peak_rss_bytes()))  # the largest rank's, after the fit
    if test is not None:
        clock = time.perf_counter()
        with Phase("evaluating"):
            scores = model.evaluate(test, comm=comm, k=args.k)
        result["test_ratings"] = int(comm.allreduce(len(test)))
        for key, value in scores.items():
            result["test_" + key if key in ("rmse", "mae", "count") else key] = value
        result["eval_seconds"] = time.perf_counter() - clock
    if args.out:
        clock = time.perf_counter()
        save_model(model, args.out, comm)
        note(f"wrote {args.out}")
        result["model_path"] = args.out
        result["save_seconds"] = time.perf_counter() - clock
    result["seconds"] = time.perf_counter() - started
    if args.plot:
        error = None
        if comm.Get_rank() == 0:
            from mpiml.cli import plots

            try:
                plots.mf(args.plot, result, iterations)
                note(f"wrote {args.plot}")
            except (ArgumentError, OSError) as exc:
                error = exc if isinstance(exc, ArgumentError) else ArgumentError(f"cannot write {args.plot}: {exc}")
        raise_if_any(error, comm)
    if args.json:
        emit_json(result, comm=comm)
    else:
        _print(result, comm)
    return 0


def save_model(model, path, comm) -> None:
    """Write ``--out``: rank 0 the file of replicated factors, every rank its blocks of partitioned ones.

    Either way a write that fails goes to a fallback next to ``path`` (then, for replicated
    factors, the temporary folder), and one agreed error says where the model is.
    """
    from mpi4py import MPI

    from mpiml.cli.outputs import fallback_paths, write_result
    from mpiml.errors import DataError

    if getattr(model, "factors_layout_", None) != "partitioned":
        write_result(lambda where: model.save(where, comm=MPI.COMM_SELF), path, "--out", "model", comm,
                     checkpoint_dir=model.checkpoint_dir)
        return
    try:
        model.save(path, comm=comm)   # collective; its errors are agreed
        return
    except DataError as exc:
        failure = str(exc)
    spare = fallback_paths(path)[0]   # next to the target: a folder every rank sees, as the target's
    spare = comm.bcast(None if spare.exists() or not spare.parent.is_dir() else str(spare), root=0)
    if spare is not None:
        try:
            model.save(spare, comm=comm)
            raise ArgumentError(f"cannot write --out {path} ({failure}); the model is in {spare} instead",
                                collective=True)
        except DataError:
            pass
    where = f"the checkpoint in {model.checkpoint_dir}" if model.checkpoint_dir else "lost"
    raise ArgumentError(f"cannot write --out {path} ({failure}), nor a fallback next to it; the model is {where}",
                        collective=True)


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
