"""``mpiml datagen KIND``: write a synthetic data set, each rank making its own rows.

Generators are registered in :data:`GENERATORS` (name -> module, summary). A generator
module provides ``add_arguments(parser, kind)`` and ``run(args, kind, comm) -> dict``
(the summary printed or emitted as JSON); a new one is a module and one line here.
"""

from __future__ import annotations

import importlib

from mpiml.cli.output import emit_json, say, table
from mpiml.cli.parser import Parser

# Each kind's own examples (mpiml datagen KIND --help).
EXAMPLES = {
    "classification": ["mpiexec -n 4 mpiml datagen classification --n-samples 100000 --n-features 50 --out train.svm",
                       "mpiml datagen classification --classes 5 --density 0.1 --out data.npz --json"],
    "regression": ["mpiml datagen regression --n-samples 10000 --noise 0.5 --out data.csv"],
    "ratings": ["mpiexec -n 4 mpiml datagen ratings --users 100000 --items 20000 --ratings 1e6 --out ratings.csv",
                "mpiml datagen ratings --rank 16 --noise 0.2 --out ratings.npz --json"],
}

GENERATORS = {
    "classification": ("mpiml.cli.datagen_linear", "labelled rows from a random linear model (binary or K classes)"),
    "regression": ("mpiml.cli.datagen_linear", "real-valued targets of a random linear model plus noise"),
    "ratings": ("mpiml.cli.datagen_ratings", "user-item ratings: low rank plus noise, power-law popularity"),
}


def build_parser():
    parser = Parser(
        prog="mpiml datagen", description="Write a synthetic data set; each rank generates its own rows.",
        epilog="examples:\n  mpiexec -n 4 mpiml datagen classification --n-samples 100000 --n-features 50 "
               "--out train.svm\n  mpiml datagen regression --out data.csv --json\n"
               "  mpiexec -n 4 mpiml datagen ratings --users 100000 --items 20000 --ratings 1e7 --out ratings.csv")
    kinds = parser.add_subparsers(dest="kind", metavar="KIND", required=True)
    for name, (module, summary) in GENERATORS.items():
        sub = kinds.add_parser(name, help=summary, description=summary,
                               epilog="examples:\n" + "\n".join("  " + line for line in EXAMPLES.get(name, [])))
        importlib.import_module(module).add_arguments(sub, name)
        sub.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from mpi4py import MPI

    summary = importlib.import_module(GENERATORS[args.kind][0]).run(args, args.kind, MPI.COMM_WORLD)
    if args.json:
        emit_json(summary)
    else:
        say(table([(k, v) for k, v in summary.items()], ("item", "value")))
    return 0
