"""``mpiml slurm``: job scripts from the templates in ``slurm/``, submission, the job's view.

``list``, ``render``, ``submit`` and ``gather`` run on a login node (no launcher needed);
``env`` runs inside a job, under ``srun`` or ``mpiexec``, to show where every rank landed.
"""

from __future__ import annotations


from mpiml.cli.output import emit_json, say, table
from mpiml.cli.parser import Parser, UsageError, report, split_command
from mpiml.errors import MpimlError

EPILOG = """examples:
  mpiml slurm list
  mpiml slurm render single-node --ntasks-per-node 8 --time 1:00:00 -- mpiml info > job.sbatch
  mpiml slurm submit preemptible --time 4:00:00 --venv $PWD/.venv -- mpiml sgd --data train.svm --resume
  mpiml slurm gather sweep-1234
  srun mpiml slurm env            (inside a job: which node, task and threads every rank got)
"""

# sbatch long options offered directly (most jobs need no others; --sbatch adds any).
HEADER_OPTIONS = {
    "nodes": "number of nodes",
    "ntasks": "total MPI ranks (a template's --ntasks-per-node then caps the ranks per node)",
    "ntasks-per-node": "MPI ranks per node",
    "cpus-per-task": "cores (threads) per rank",
    "time": "time limit: M, M:S, H:M:S, D-H, D-H:M or D-H:M:S",
    "partition": "partition (queue)",
    "account": "account charged",
    "qos": "quality of service",
    "job-name": "job name",
    "output": "log file pattern (%%x name, %%j job id, %%A array job, %%a array task)",
    "mem": "memory per node, e.g. 16G",
    "array": "array indices, e.g. 0-9%%4",
    "dependency": "e.g. afterok:1234",
    "signal": "e.g. B:USR1@120",
}


def _add_render_arguments(parser):
    parser.add_argument("template", help="template name (see `mpiml slurm list`) or a template file")
    group = parser.add_argument_group("#SBATCH options (override the template's)")
    for name, text in HEADER_OPTIONS.items():
        group.add_argument(f"--{name}", dest=name.replace("-", "_"), metavar="VALUE", help=text)
    group.add_argument("--sbatch", action="append", default=[], metavar="NAME[=VALUE]",
                       help="any other sbatch long option, e.g. --sbatch exclusive --sbatch mail-type=END")
    parser.add_argument("--venv", metavar="DIR", help="virtual environment the job activates (unless MPIML_VENV "
                        "is set when submitting)")
    parser.add_argument("--out", metavar="FILE", help="write the script to FILE (render: instead of stdout)")


def build_parser():
    parser = Parser(
        prog="mpiml slurm", description="Slurm job scripts from mpiml's templates, and submitting them. "
        "Put the command every rank runs after `--`.",
        epilog=EPILOG)
    commands = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    def action(name, text, *examples):
        return commands.add_parser(name, help=text, description=text,
                                   epilog="examples:\n" + "\n".join("  " + line for line in examples))

    action("list", "the templates and what each is for", "mpiml slurm list")
    render = action("render", "print (or --out) a ready job script: TEMPLATE [options] -- COMMAND",
                    "mpiml slurm render single-node --ntasks-per-node 8 -- mpiml info > job.sbatch",
                    "mpiml slurm render multi-node --nodes 4 --time 2:00:00 --venv .venv --out job.sbatch -- "
                    "mpiml sgd --data train.svm")
    _add_render_arguments(render)
    submit = action("submit", "render, then sbatch it; prints the job id",
                    "mpiml slurm submit preemptible --time 4:00:00 -- mpiml sgd --data train.svm --resume",
                    "mpiml slurm submit evaluate --after 1234 -- python examples/preemptible_job.py --evaluate --json")
    _add_render_arguments(submit)
    submit.add_argument("--after", metavar="JOBID", help="start only after job JOBID succeeded (afterok)")
    submit.add_argument("--json", action="store_true", help='print {"job_id": ...}')
    gather = action("gather", "one table of a sweep's results (the sweep template's folder)",
                    "mpiml slurm gather sweep-1234", "mpiml slurm gather sweep-1234 --json")
    gather.add_argument("directory", help="the sweep's results folder (sweep-<array job id>)")
    gather.add_argument("--json", action="store_true", help="print one JSON object with the rows")
    env = action("env", "inside a job: every rank's Slurm task, node and threads", "srun mpiml slurm env",
                 "srun mpiml slurm env --json")
    env.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def _options(args) -> dict:
    options = {name: getattr(args, name.replace("-", "_")) for name in HEADER_OPTIONS}
    options = {name: value for name, value in options.items() if value is not None}
    for item in args.sbatch:
        name, sep, value = item.lstrip("-").partition("=")
        options[name] = value if sep else None
    if getattr(args, "after", None):
        options["dependency"] = f"afterok:{args.after}"
    return options


def _render(args, command) -> str:
    import os

    from mpiml.runtime.files import atomic_write
    from mpiml.slurm import templates
    from mpiml.slurm.render import render_script

    from mpiml.cli.outputs import check_output

    check_output(args.out, "--out")
    path = templates.find(args.template)
    _check_job_command(command, path.read_text())
    # The job may start in another folder: make the environment's path absolute, ~ expanded.
    venv = os.path.abspath(os.path.expanduser(args.venv)) if args.venv else None
    script = render_script(path.read_text(), _options(args), command or None, venv)
    if args.out:
        with atomic_write(args.out, "w") as handle:
            handle.write(script)
    return script


def mpiml_arguments(command):
    """The arguments after ``mpiml`` when ``command`` runs mpiml (``mpiml ...``, ``python -m mpiml ...``), else None."""
    import os

    if command and os.path.basename(command[0]) == "mpiml":
        return command[1:]
    if len(command) >= 3 and os.path.basename(command[0]).startswith("python") and command[1:3] == ["-m", "mpiml"]:
        return command[3:]
    return None


def _check_job_command(command, template: str) -> None:
    """Refuse, before it is queued, an mpiml command line that would fail at once in the job."""
    import os

    from mpiml.cli.main import check_command

    arguments = mpiml_arguments(command)
    if arguments is None:
        return
    # A template that exports the checkpoint folder gives the command one in the job.
    lend = "export MPIML_CHECKPOINT_DIR=" in template and not os.environ.get("MPIML_CHECKPOINT_DIR")
    if lend:
        os.environ["MPIML_CHECKPOINT_DIR"] = "checkpoints"
    try:
        check_command(arguments)
    except UsageError as exc:
        raise UsageError(f"the job's command would fail: {exc}") from None
    finally:
        if lend:
            del os.environ["MPIML_CHECKPOINT_DIR"]


def _list() -> None:
    from mpiml.slurm import templates

    found = templates.available()
    if not found:
        say("no templates found: reinstall mpiml, or set MPIML_SLURM_TEMPLATES to a folder of *.sbatch files")
        return
    say(table([(name, templates.summary(path)) for name, path in found.items()], ("template", "what it is for")))


def _gather(args) -> None:
    from mpiml.slurm.gather import cell, columns, gather

    rows = gather(args.directory)
    if args.json:
        emit_json({"rows": rows})
    else:
        keys = columns(rows)
        say(table([[cell(row.get(key)) for key in keys] for row in rows], keys))


def _env(args) -> None:
    import os

    from mpi4py import MPI

    from mpiml.slurm.env import slurm_env

    from mpiml.cli.info import blas_threads

    comm = MPI.COMM_WORLD
    mine = {"rank": comm.rank, "host": MPI.Get_processor_name(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "blas_threads": max(blas_threads().values(), default=None), **slurm_env().as_dict()}
    everyone = comm.gather(mine, root=0)
    if comm.rank != 0:
        return
    if args.json:
        emit_json({"size": comm.size, "ranks": everyone})
        return
    keys = ["rank", "host", "nodename", "nodeid", "procid", "localid", "ntasks", "cpus_per_task",
            "omp_num_threads", "blas_threads", "run_id", "restart_count"]
    say(table([["-" if row[key] is None else row[key] for key in keys] for row in everyone], keys))


def main(argv=None) -> int:
    argv, command = split_command(argv)
    args = build_parser().parse_args(argv)
    try:
        if args.action == "list":
            _list()
        elif args.action == "render":
            script = _render(args, command)
            if not args.out:
                say(script.rstrip("\n"))
        elif args.action == "submit":
            from mpiml.slurm.submit import sbatch

            job_id = sbatch(_render(args, command))
            if args.json:
                emit_json({"job_id": job_id})
            else:
                say(job_id)
        elif args.action == "gather":
            _gather(args)
        else:
            _env(args)
    except MpimlError as exc:
        return report(exc if isinstance(exc, UsageError) else f"mpiml slurm {args.action}: {exc}")
    return 0
