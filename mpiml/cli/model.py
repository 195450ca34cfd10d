"""``mpiml model``: what the (calibrated) cost model predicts, far beyond this machine."""

from __future__ import annotations


from mpiml.cli.output import emit_json, say, table
from mpiml.cli.parser import Parser, check_writable, comma_list, sizes

EPILOG = """The alpha-beta-gamma model of mpiml.collectives.model, with the parameters of a
tuning file (mpiml tune) or the defaults measured on a 2-core node. "fastest" is the
model's best algorithm; "auto" is what algorithm="auto" would run without a tuning rule
for that rank count (native unless a hand-written algorithm is predicted more than 3% faster).
Assumptions and known errors: see the docstring of mpiml/collectives/model.py.

With --nodes N --ranks-per-node K the ranks are N nodes of K (N x K ranks, consecutive ranks
per node) and the node-aware algorithms (allreduce hierarchical, hierarchical_slices,
shared_memory; bcast, allgather, reduce_scatter hierarchical) are priced beside the flat
ones (mpiml.collectives.model_nodes): inside a node at intra_alpha/intra_beta, between
nodes at alpha/beta (what mpiml tune measures on a job of several nodes; set them with
--set for a what-if). Flat algorithms see the between-node link for all of their steps.
"best" is the model's pick on that layout (native unless beaten by 3%): what algorithm="auto"
runs on a communicator of that layout when the tuning file in use has two links (intra_alpha
set: mpiml tune on several nodes) and no measured rule for that rank count.

examples:
  mpiml model --ranks 2,64,1024,100000 --sizes 8:1G:8
  mpiml model --ranks 1000 --sizes 1M --tuning tuning.json --set alpha=5e-6,beta=1e-10
  mpiml model --nodes 2,16,128 --ranks-per-node 8 --sizes 64K:256M:16 --set alpha=5e-6,beta=1e-10
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
    parser.add_argument("--nodes", type=comma_list(int, minimum=1, maximum=100000), metavar="N[,N...]",
                        help="price on N nodes of --ranks-per-node ranks each, node-aware algorithms included "
                             "(replaces --ranks)")
    parser.add_argument("--ranks-per-node", type=comma_list(int, minimum=1, maximum=4096), metavar="K[,K...]",
                        help="ranks per node with --nodes (default 1)")
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
    if args.nodes or args.ranks_per_node:
        return nodes_main(args)
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


def _params(args):
    """The parameters a run of ``mpiml model`` prices with: the tuning file's, ``--set`` over them."""
    from mpiml.collectives.model import DEFAULT_PARAMS
    from mpiml.collectives.registry import ALGORITHMS
    from mpiml.collectives.tuning import load_tuning
    from mpiml.perf.extrapolate import parse_overrides

    from mpiml.collectives import model_nodes

    params = DEFAULT_PARAMS
    if args.tuning:
        params = load_tuning(args.tuning, ALGORITHMS).params or params
    # the intra-node link made explicit first, so that --set alpha=,beta= changes the network only
    alpha, beta = model_nodes.intra_link(params)
    rates = dict(params.rates_by_size)
    if params.intra_beta is None and "beta" in rates:   # one link measured: its points are the node's too
        rates["intra_beta"] = rates["beta"]
    params = params.from_dict(dict(params.to_dict(), intra_alpha=alpha, intra_beta=beta, rates_by_size=rates))
    return parse_overrides(args.set, params)


def node_records(collective, node_counts, per_node, sizes, params) -> list[dict]:
    """One record per (nodes, ranks per node, size): predicted seconds of every algorithm on that layout,
    the fastest and the model's pick (native unless beaten by the margin)."""
    from mpiml.collectives import model, model_nodes
    from mpiml.errors import ArgumentError
    from mpiml.perf.extrapolate import MAX_RANKS

    records = []
    for nodes in node_counts:
        for k in per_node:
            if nodes * k > MAX_RANKS:
                raise ArgumentError(f"--nodes x --ranks-per-node must be at most {MAX_RANKS} ranks, got {nodes} x {k}")
            layout = (k,) * nodes
            for nbytes in sizes:
                times = model_nodes.predictions(collective, nbytes, layout, params)
                records.append({"collective": collective, "nodes": nodes, "ranks_per_node": k, "ranks": nodes * k,
                                "bytes": nbytes, "predicted_seconds": times,
                                "fastest": model.fastest(times),
                                "best": model_nodes.winner(collective, nbytes, layout, params)})
    return records


def nodes_main(args) -> int:
    """``mpiml model --nodes N --ranks-per-node K``: flat and node-aware algorithms on N nodes of K ranks."""
    from mpiml.errors import ArgumentError
    from mpiml.perf.sizes import format_bytes
    from mpiml.runtime.agree import raise_if_any

    error = records = None
    try:
        if args.plot or args.density is not None:
            raise ArgumentError("--plot and --density do not go with --nodes/--ranks-per-node")
        params = _params(args)
        records = node_records(args.collective, args.nodes or [1], args.ranks_per_node or [1], args.sizes, params)
    except ArgumentError as exc:
        error = exc
    raise_if_any(error)
    if args.json:
        emit_json({"collective": args.collective, "params": params.to_dict(), "predictions": records})
        return 0
    from mpiml.collectives import model_nodes

    intra, inter = model_nodes.intra_link(params), model_nodes.inter_link(params)
    source = f"parameters from {args.tuning}" if args.tuning else "default parameters"
    say(f"# mpiml model {args.collective} on nodes: predicted time per call in microseconds ({source}"
        + (f", with {args.set}" if args.set else "") + f"); inside a node alpha {intra[0] * 1e6:.2g} us, "
        f"beta {intra[1]:.3g} s/B; between nodes alpha {inter[0] * 1e6:.2g} us, beta {inter[1]:.3g} s/B")
    names = list(dict.fromkeys(n for rec in records for n in rec["predicted_seconds"]))
    rows = []
    for rec in records:
        times = rec["predicted_seconds"]
        rows.append((rec["nodes"], rec["ranks_per_node"], format_bytes(rec["bytes"]),
                     *(f"{times[n] * 1e6:.1f}" + ("*" if n == rec["fastest"] else "") if n in times else "-"
                       for n in names), rec["best"]))
    say(table(rows, ("nodes", "per_node", "size", *names, "best")))
    say("# * fastest predicted; best: the model's pick on the layout (native unless beaten by 3%), what "
        "algorithm=\"auto\" runs on such a job with a tuning file of two links (mpiml tune on several nodes) "
        "and no measured rule for its rank count")
    return 0
