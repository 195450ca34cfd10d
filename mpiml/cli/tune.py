"""``mpiml tune``: calibrate the cost model on this machine and write a tuning file."""

from __future__ import annotations

import argparse

from mpiml.cli.output import emit_json, say, table
from mpiml.cli.parser import Parser, check_writable, comma_list, sizes

DEFAULT_SIZES = "8:64M:8"

EPILOG = """Measures: one-way latency and per-byte time by ping-pong within a node (intra_alpha,
intra_beta) and, when the ranks span several nodes, between nodes (alpha, beta: the link the
flat algorithms see; nodes as the collectives group them: Split_type, or MPIML_RANKS_PER_NODE
to emulate them), numpy's reduction and copy rates per dtype, and the
Python cost of one algorithm step and of one mpiml call. Then times every algorithm of
each collective on a size grid, at each rank count of --ranks (the first N ranks), and
writes the measured winners per size range and rank count, with the fitted parameters.
First (unless --no-compute), a few seconds of tiny trainings on every rank measure the
compute constants and memory baseline mpiml plan predicts jobs with (the file's "compute").

Use the file with MPIML_TUNING=FILE (every rank must read the same file), or
mpiml.collectives.select.set_tuning(FILE). Rank counts the file has no rules for use the
model with the file's parameters.

examples:
  mpiexec -n 2 mpiml tune --explain
  mpiexec -n 3 mpiml tune --collective allreduce,bcast --sizes 8:1M:8 --out small.json
  mpiexec -n 4 mpiml tune --ranks 2,3,4 --out cluster-tuning.json
"""


def build_parser():
    from mpiml.perf.workloads import COLLECTIVES

    parser = Parser(prog="mpiml tune", description=__doc__.split(":", 1)[1].strip(), epilog=EPILOG)
    parser.add_argument("--out", default="mpiml-tuning.json", help="tuning file to write (default %(default)s)")
    parser.add_argument("--sizes", default=DEFAULT_SIZES, type=sizes, help="size grid (default %(default)s)")
    parser.add_argument("--collective", default=",".join(COLLECTIVES), type=comma_list(choices=COLLECTIVES),
                        metavar="NAME[,NAME...]", help="the collectives to tune, a comma list (default: all)")
    parser.add_argument("--ranks", default=None, type=comma_list(int, minimum=1),
                        help="rank counts to measure (default: all ranks)")
    parser.add_argument("--dtype", default="float32", help="element type of the buffers")
    parser.add_argument("--min-time", type=float, default=0.05,
                        help="seconds per algorithm and size, over all passes (default 0.05)")
    parser.add_argument("--max-iters", type=int, default=200, help="cap on timed iterations per algorithm and size")
    parser.add_argument("--repeats", type=int, default=3,
                        help="passes over the grid; a size's time is the median over passes (default 3)")
    parser.add_argument("--compute", action=argparse.BooleanOptionalAction, default=True,
                        help="also measure the compute constants of mpiml plan's model and the sparse allreduce's "
                             "(a few seconds; the file's 'compute' section and params' 'sparse'; default: on)")
    parser.add_argument("--explain", action="store_true",
                        help="print predicted against measured time, and efficiency against the lower bound")
    parser.add_argument("--json", action="store_true", help="print the tuning document as one JSON object")
    parser.add_argument("--plot", metavar="FILE.png", help="draw measured against predicted time (needs "
                        "matplotlib: the plot extra)")
    parser.rename("--collectives", "--collective")  # the 0.1 spelling
    return parser


def _explain_table(rows):
    from mpiml.perf.sizes import format_bytes

    lines = []
    for row in rows:
        lines.append((row["collective"], row["ranks"], format_bytes(row["bytes"]), row["algorithm"],
                      f"{row['predicted_seconds'] * 1e6:.1f}", f"{row['time_median_seconds'] * 1e6:.1f}",
                      f"{row['measured_over_predicted']:.2f}",
                      "-" if row["efficiency"] is None else f"{row['efficiency']:.2f}"))
    return table(lines, ("collective", "ranks", "size", "algorithm", "predicted_us", "measured_us",
                         "measured/predicted", "efficiency"))


def main(argv=None) -> int:
    import numpy as np
    from mpi4py import MPI

    from mpiml.perf.harness import Schedule
    from mpiml.perf.sizes import format_bytes
    from mpiml.perf.tune import tune, write_tuning
    from mpiml.runtime.agree import raise_if_any
    from mpiml.runtime.progress import Phase, note
    from mpiml.errors import ArgumentError

    args = build_parser().parse_args(argv)
    comm = MPI.COMM_WORLD
    error = None
    try:
        sizes, collectives = args.sizes, args.collective
        ranks = sorted(args.ranks) if args.ranks else [comm.Get_size()]
        if not all(1 <= r <= comm.Get_size() for r in ranks):
            raise ArgumentError(f"--ranks must be between 1 and the job's {comm.Get_size()} ranks, got {ranks}")
        dtype = np.dtype(args.dtype)
        if not 0 < args.min_time < float("inf") or args.max_iters < 1 or args.repeats < 1:
            raise ArgumentError(f"--min-time must be a positive number (got {args.min_time}), --max-iters and "
                                f"--repeats at least 1 (got {args.max_iters}, {args.repeats})")
        check_writable(args.out, "--out")  # before minutes of measuring
        check_writable(args.plot, "--plot")
        if args.plot:
            from mpiml.cli import plots

            plots.require()
    except (ArgumentError, TypeError) as exc:
        error = exc if isinstance(exc, ArgumentError) else ArgumentError(str(exc))
    raise_if_any(error, comm)
    from mpiml.plan.guard import check_resources
    check_resources(comm)  # more ranks than cores: warn once (times measured so mislead)
    if not args.json:
        say(f"# mpiml tune: {comm.Get_size()} ranks, sizes {', '.join(format_bytes(s) for s in sizes)}, "
            f"rank counts {ranks}; this takes a while")
    compute = None
    if args.compute:  # first: its baseline memory is a rank's before the large buffers below
        from mpiml.plan.calibration import section_document
        from mpiml.plan.probe import measure as measure_compute

        with Phase("measuring compute"):
            compute = section_document(measure_compute(comm))
    schedule = Schedule(min_time=args.min_time / max(args.repeats, 1), max_iters=args.max_iters, min_iters=3)
    cells = len(ranks) * max(args.repeats, 1) * len(collectives) * len(sizes)
    with Phase("measuring", total=cells, unit="collective sizes") as phase:
        document = tune(comm, sizes, collectives, ranks, schedule, dtype=dtype, repeats=max(args.repeats, 1),
                        on_size=lambda _: phase.update(phase.done + 1))
    if compute is not None:
        document["compute"] = compute
        from mpiml.collectives.model import ModelParams
        from mpiml.collectives.sparse import calibrate as calibrate_sparse

        with Phase("measuring the sparse allreduce"):   # cold, as between two training steps (~2 s)
            params = ModelParams.from_dict(document["params"])
            document["params"]["sparse"] = calibrate_sparse(comm, params=params)
    error = None
    if comm.Get_rank() == 0:
        try:
            from mpiml.cli.outputs import rescue

            error = rescue(lambda path: write_tuning(path, document), args.out, "--out", "tuning file")
            if error is None:
                note(f"wrote {args.out}; use it with MPIML_TUNING={args.out}")
            if args.plot:
                from mpiml.cli import plots

                plots.tune(args.plot, {**document, "ranks": comm.Get_size()})
                note(f"wrote {args.plot}")
        except OSError as exc:  # the plot: a rescued tuning file's message comes first
            error = error or ArgumentError(f"cannot write {exc.filename or args.out}: {exc}")
        except ArgumentError as exc:
            error = exc
    raise_if_any(error, comm)
    if args.json:
        emit_json(document)
        return 0
    params = document["params"]
    say("# fitted parameters: " + ", ".join(
        f"{k}={v:.3g}" for k, v in params.items() if isinstance(v, float)))
    if not document["calibration"]["pairs"]:
        say("# one rank: no ping-pong, alpha and beta keep their defaults")
    for kind, pair in document["calibration"]["pairs"].items():   # intra_node, inter_node (several nodes)
        say(f"# {kind.replace('_', '-')} link (ranks {pair['ranks'][0]} and {pair['ranks'][1]}): latency "
            f"{pair['latency_seconds'] * 1e6:.2f} us, {1e-9 / max(pair['seconds_per_byte'], 1e-15):.2f} GB/s"
            + ("; alpha/beta" if kind == "inter_node" else "; intra_alpha/intra_beta"
               + ("" if "inter_node" in document["calibration"]["pairs"] else " and alpha/beta")))
    if args.explain:
        say(_explain_table(document["measurements"]))
        say("# efficiency = model lower bound (Chan et al. 2007, no Python costs) / measured time")
    say("# measured winners (from this size up):")
    for collective, by_p in document["rules"].items():
        for p, ranges in by_p.items():
            say(f"  {collective} p={p}: " + "; ".join(f"{format_bytes(r['min_bytes'])}: {r['algorithm']}"
                                                     for r in ranges))
    return 0
