"""``mpiml model``: what the (calibrated) cost model predicts, far beyond this machine."""

from __future__ import annotations


from mpiml.cli.output import emit_json, say, table
from mpiml.cli.parser import Parser, check_writable, comma_list, sizes

EPILOG = """The alpha-beta-gamma model of mpiml.collectives.model, with the parameters of a
tuning file (mpiml tune) or the defaults measured on a 2-core node. "fastest" is the
model's best algorithm; "auto" is what algorithm="auto" would run without a tuning rule
for that rank count (native unless a hand-written algorithm is predicted more than 3% faster).
Assumptions and known errors: see the docstring of mpiml/collectives/model.py.

examples:
  mpiml model --ranks 2,64,1024,100000 --sizes 8:1G:8
  mpiml model --ranks 1000 --sizes 1M --tuning tuning.json --set alpha=5e-6,beta=1e-10
"""


def build_parser():
    from mpiml.perf.workloads import COLLECTIVES

    parser = Parser(prog="mpiml model", description=__doc__.split(":", 1)[1].strip(), epilog=EPILOG)
    parser.add_argument("--ranks", default="2,16,128,1024,100000", type=comma_list(int, minimum=1, maximum=100000),
                        help="comma list of rank counts")
    parser.add_argument("--sizes", default="8:1G:8", type=sizes, help="bytes: FROM:TO[:FACTOR] or a comma list")
    parser.add_argument("--collective", default="allreduce", choices=COLLECTIVES, help="the collective to predict")
    parser.add_argument("--tuning", metavar="FILE", help="use the calibrated parameters of a tuning file")
    parser.add_argument("--set", metavar="NAME=VALUE,...", help="override parameters (what-if), e.g. alpha=5e-6")
    parser.add_argument("--density", type=float, metavar="F", help="allreduce: also price sparse_allreduce with "
                        "this share of nonzeros per rank (0..1, float64 values at independent random places): columns "
                        "sparse (microseconds) and sparse_path (sparse_allgather, sparse, sparse+dense_allgather or dense)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--plot", metavar="FILE.png", help="draw time against size per algorithm, one panel per rank "
                        "count, crossovers marked (needs matplotlib: the plot extra)")
    return parser


def main(argv=None) -> int:
    from mpiml.collectives.model import DEFAULT_PARAMS
    from mpiml.collectives.registry import ALGORITHMS
    from mpiml.collectives.tuning import load_tuning
    from mpiml.perf.extrapolate import crossover_points, parse_overrides, predictions
    from mpiml.perf.sizes import format_bytes
    from mpiml.runtime.agree import raise_if_any
    from mpiml.cli import plots
    from mpiml.cli.output import is_root
    from mpiml.errors import ArgumentError
    from mpiml.runtime.progress import note

    args = build_parser().parse_args(argv)
    error = records = points = None
    params = DEFAULT_PARAMS
    try:
        ranks, sizes = args.ranks, args.sizes
        check_writable(args.plot, "--plot")
        if args.plot:
            plots.require()
        if args.tuning:
            params = load_tuning(args.tuning, ALGORITHMS).params or params
        params = parse_overrides(args.set, params)
        records = predictions(args.collective, ranks, sizes, params)
        if args.density is not None:   # the sparse allreduce beside the dense algorithms
            from mpiml.perf.extrapolate import add_sparse

            add_sparse(records, args.collective, args.density, params)
        points = [c for p in ranks for c in crossover_points(args.collective, p, 1, max(sizes), params)]
    except ArgumentError as exc:
        error = exc
    raise_if_any(error)  # the same on every rank: all exit cleanly
    source = f"parameters from {args.tuning}" if args.tuning else "default parameters"
    if args.set:
        source += f", with {args.set}"
    if args.plot:
        error = None
        if is_root():
            try:
                plots.model(args.plot, args.collective, records, points, source)
                note(f"wrote {args.plot}")
            except (ArgumentError, OSError) as exc:
                error = exc if isinstance(exc, ArgumentError) else ArgumentError(f"cannot write {args.plot}: {exc}")
        raise_if_any(error)
    if args.json:
        emit_json({"collective": args.collective, "params": params.to_dict(), "predictions": records,
                   "crossovers": points})
        return 0
    say(f"# mpiml model {args.collective}: predicted time per call in microseconds ({source})")
    names = list(records[0]["predicted_seconds"]) if records else []
    rows = []
    for rec in records:
        times = rec["predicted_seconds"]
        rows.append((rec["ranks"], format_bytes(rec["bytes"]),
                     *(f"{times[n] * 1e6:.1f}" + ("*" if n == rec["fastest"] else "") for n in names),
                     rec["auto"], f"{rec['lower_bound_seconds'] * 1e6:.1f}")
                    + ((f"{rec['sparse_seconds'] * 1e6:.1f}", rec["sparse_path"]) if "sparse_path" in rec else ()))
    sparse = ("sparse", "sparse_path") if args.density is not None else ()
    say(table(rows, ("ranks", "size", *names, "auto", "lower_bound", *sparse)))
    say("# * fastest predicted. Crossovers (fastest algorithm changes at):")
    for p in ranks:
        mine = [f"{format_bytes(c['bytes'])}: {c['from']} -> {c['to']}" for c in points if c["ranks"] == p]
        say(f"  p={p}: " + ("; ".join(mine) if mine else "none"))
    return 0
