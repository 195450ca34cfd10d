"""Top-level ``mpiml`` command: dispatches to one module per subcommand."""

from __future__ import annotations

import importlib
import sys

from mpiml.cli.parser import Parser, UsageError, report, suggest
from mpiml.errors import ArgumentError
from mpiml.runtime.abort import run_or_abort

# name -> (module, one-line summary); modules are imported only when their command runs.
SUBCOMMANDS = {
    "info": ("mpiml.cli.info", "MPI library, ranks, hosts, threads: what this job runs on"),
    "bench": ("mpiml.cli.bench", "time the collectives against the MPI library's own"),
    "tune": ("mpiml.cli.tune", "measure this machine, calibrate the cost model, write a tuning file"),
    "model": ("mpiml.cli.model", "predict collective times and crossovers for up to 100,000 ranks"),
    "plan": ("mpiml.cli.plan", "how many nodes, ranks and threads to ask for: predicted time, cost, memory"),
    "slurm": ("mpiml.cli.slurm", "Slurm job scripts from templates, submission, and the job's view"),
    "mf": ("mpiml.cli.mf", "matrix factorization for recommendation: ALS, implicit ALS, DSGD"),
    "sgd": ("mpiml.cli.sgd", "train a linear model (logistic, softmax, SVM, least squares) by distributed SGD"),
    "datagen": ("mpiml.cli.datagen", "write synthetic data sets (classification, regression, ...)"),
    "run": ("mpiml.cli.run", "launch a job under mpiexec or srun; restart it from its checkpoint after a failure"),
}

# Commands whose ranks compute side by side: unless the user set OMP_NUM_THREADS (or the
# BLAS variables), each rank gets its share of the node's cores for BLAS threads.
SHARES_CORES = {"info", "bench", "tune", "sgd", "mf"}
# Commands whose collectives choose algorithms by MPIML_TUNING (algorithm="auto").
READS_TUNING = {"bench", "tune", "sgd", "mf"}

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


def build_parser() -> Parser:
    parser = Parser(
        prog="mpiml",
        description="MPI toolkit for machine learning on CPU clusters. Run under mpiexec or srun.",
        epilog=EPILOG,
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
    """Run ``mpiml`` with ``argv`` (default ``sys.argv[1:]``); returns the exit status.

    A command line that cannot run (:class:`~mpiml.cli.parser.UsageError`) is one
    ``mpiml: error:`` line on rank 0 and exit status 2, before any work.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return _dispatch(argv)
    except UsageError as exc:
        return report(exc)


def _dispatch(argv) -> int:
    parser = build_parser()
    if not argv or argv[0].startswith("-"):
        parser.parse_args(argv)  # handles --help / --version (rank 0 prints), or errors
        parser.print_help()
        return 2
    name, rest = argv[0], argv[1:]
    module = command_module(name)
    if name in SHARES_CORES and not any(arg in ("-h", "--help") for arg in rest):
        from mpiml.runtime.threads import limit_blas_threads

        limit_blas_threads()
    if name in READS_TUNING and not any(arg in ("-h", "--help", "--tuning") for arg in rest):
        from mpiml.collectives.tuning import check_environment

        try:
            check_environment()  # a bad MPIML_TUNING is one line and exit 2 now, not a traceback mid-run
        except ArgumentError as exc:
            raise UsageError(str(exc)) from None
    return module.main(rest) or 0


def command_module(name: str):
    """The module of subcommand ``name``; :class:`UsageError` (with suggestions) for an unknown one."""
    if name not in SUBCOMMANDS:
        raise UsageError(f"unknown command {name!r}{suggest(name, SUBCOMMANDS)} "
                         f"(choose from {', '.join(SUBCOMMANDS)})")
    return importlib.import_module(SUBCOMMANDS[name][0])


def check_command(argv) -> None:
    """Parse ``mpiml`` arguments ``argv`` as the command would, without running it.

    Raises :class:`UsageError` for a command line the command would refuse (``mpiml
    slurm render`` checks a job's command before it is queued).
    """
    if not argv or argv[0].startswith("-") or any(arg in ("-h", "--help", "--version") for arg in argv):
        return
    module = command_module(argv[0])
    try:
        if hasattr(module, "check_args"):
            module.check_args(argv[1:])
        else:
            module.build_parser().parse_args(argv[1:])
    except UsageError:
        raise
    except ArgumentError as exc:
        raise UsageError(f"mpiml {argv[0]}: {exc}") from None


def entry_point() -> None:
    """Console-script entry: any uncaught exception on any rank ends the whole job."""
    sys.exit(run_or_abort(main))
