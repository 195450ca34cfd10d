"""Top-level ``mpiml`` command: dispatches to one module per subcommand."""

from __future__ import annotations

import argparse
import importlib
import sys

from mpiml.runtime.abort import run_or_abort

# name -> (module, one-line summary); modules are imported only when their command runs.
SUBCOMMANDS = {
    "info": ("mpiml.cli.info", "MPI library, ranks, hosts, threads: what this job runs on"),
    "bench": ("mpiml.cli.bench", "time the collectives against the MPI library's own"),
    "tune": ("mpiml.cli.tune", "measure this machine, calibrate the cost model, write a tuning file"),
    "model": ("mpiml.cli.model", "predict collective times and crossovers for up to 100,000 ranks"),
    "slurm": ("mpiml.cli.slurm", "Slurm job scripts from templates, submission, and the job's view"),
    "mf": ("mpiml.cli.mf", "matrix factorization for recommendation: ALS, implicit ALS, DSGD"),
    "sgd": ("mpiml.cli.sgd", "train a linear model (logistic, softmax, SVM, least squares) by distributed SGD"),
    "datagen": ("mpiml.cli.datagen", "write synthetic data sets (classification, regression, ...)"),
}

EPILOG = """examples:
  mpiexec -n 4 mpiml info
  mpiexec -n 4 mpiml info --json
  mpiexec -n 4 mpiml bench allreduce --quick
  mpiexec -n 2 mpiml tune --explain
  mpiml model --ranks 2,64,1024,100000
  mpiml slurm render multi-node --nodes 2 -- mpiml info
  mpiexec -n 4 mpiml sgd --epochs 5
  mpiml COMMAND --help     (options of one command)
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mpiml",
        description="MPI toolkit for machine learning on CPU clusters. Run under mpiexec or srun.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"mpiml {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, summary) in SUBCOMMANDS.items():
        commands.add_parser(name, help=summary, add_help=False)
    return parser


def _version():
    from mpiml import __version__

    return __version__


def main(argv=None) -> int:
    """Run ``mpiml`` with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or argv[0].startswith("-"):
        parser.parse_args(argv)  # handles --help / --version, or errors
        parser.print_help()
        return 2
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        parser.error(f"unknown command {name!r} (choose from {', '.join(SUBCOMMANDS)})")
    module = importlib.import_module(SUBCOMMANDS[name][0])
    return module.main(rest) or 0


def entry_point() -> None:
    """Console-script entry: any uncaught exception on any rank ends the whole job."""
    sys.exit(run_or_abort(main))
