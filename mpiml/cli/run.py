"""``mpiml run``: launch a job under mpiexec (or srun in a Slurm allocation) and restart it after a failure.

``mpiml run --restarts N [--min-ranks M] [-n P] -- mpiml sgd ... --checkpoint-dir DIR`` starts
the job; when it ends with a status other than 0, 2 (usage or data error: rerunning cannot
help) or 3 (stopped with a checkpoint on a signal: the Slurm template requeues it), it starts
it again, up to N times, with ``--resume`` added (and a ``--overwrite`` of the first attempt
dropped), so the job continues from its last good checkpoint. An ``mpiml`` command that
can resume needs a checkpoint directory for that (``--checkpoint-dir`` or
``$MPIML_CHECKPOINT_DIR``); any other command is rerun unchanged and must resume by itself.

Rank count of a restart: under srun, what the allocation's nodes still up can hold (never
more than before); under mpiexec, the same, or with ``--min-ranks M`` one rank fewer per
failure, down to M. The jobs resume at any rank count (bitwise only at the same one).

Exit status: 0 the job finished; 2 this command line or the job's cannot run, or the job
ended with 2; 3 the job stopped with a checkpoint (preempted); else the last attempt's status
(128 + N for a launcher killed by signal N) once the restarts are spent.

The decisions (:func:`plan`, :func:`outcome`, :func:`next_ranks`, :func:`job_command`,
:func:`launch_command`, :func:`attempt_env`) are pure functions; :func:`main` runs them.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from mpiml.cli.parser import Parser, UsageError
from mpiml.runtime.launcher import MISSING, find_mpiexec

EXIT_USAGE = 2
EXIT_PREEMPTED = 3  # mpiml.runtime.preempt.EXIT_PREEMPTED (not imported: it would start nothing, but keep this light)
FAULT_ATTEMPTS = "MPIML_FAULT_ATTEMPTS"  # test-only: the attempts that keep MPIML_FAULT (default: the first)
# Set in every rank a launcher started: mpiml run must not itself run as one.
LAUNCHED = ("PMI_RANK", "PMIX_RANK", "OMPI_COMM_WORLD_RANK")
# Forwarded to the launcher, which passes them on to every rank (SIGUSR1/SIGTERM: checkpoint and stop).
FORWARDED = ("SIGTERM", "SIGUSR1", "SIGUSR2", "SIGHUP")
# sinfo node states (lower case, without the flags * ~ # ! % $ @ ^ - +) where no rank can run.
GONE = ("down", "drain", "drained", "draining", "fail", "failing", "future", "not_responding", "power_down",
        "powered_down", "powering_down", "reboot", "unknown")

EPILOG = """examples:
  mpiml run -n 4 --restarts 2 -- mpiml sgd --data train.svm --checkpoint-dir ckpt --out model.npz
  mpiml run -n 8 --restarts 3 --min-ranks 4 -- mpiml mf --ratings r.csv --checkpoint-dir ckpt
  mpiml run --restarts 2 --mpi pmi2 -- mpiml sgd ...      (in a Slurm job: srun, $SLURM_NTASKS ranks)

Each attempt is logged on stderr: its number, rank count, the checkpoint step it resumes
from, and how it ended. The job's exit status 2 (bad input) and 3 (checkpointed on a signal)
are never retried. SIGTERM, SIGUSR1, SIGUSR2 and SIGHUP are passed on to the job and end
the supervision (the job's status is this command's).
"""


def build_parser():
    parser = Parser(prog="mpiml run", usage="%(prog)s [-n P] [--restarts N] [--min-ranks M] [--launcher NAME] "
                    "[--mpi PLUGIN] -- COMMAND ...", description="Run a job under mpiexec or srun; restart it from its last "
                    "checkpoint when a rank dies. Put the job's command after `--`.", epilog=EPILOG)
    parser.add_argument("-n", "--ranks", type=int, metavar="P",
                        help="ranks of the first attempt (default: $SLURM_NTASKS in a Slurm job; needed otherwise)")
    parser.add_argument("--restarts", type=int, default=0, metavar="N",
                        help="restarts after a failure, each from the last checkpoint (default 0: run once)")
    parser.add_argument("--min-ranks", type=int, metavar="M",
                        help="a restart may run on as few as M ranks (default: P, the same count)")
    parser.add_argument("--launcher", choices=("auto", "mpiexec", "srun"), default="auto",
                        help="auto: srun inside a Slurm allocation (SLURM_JOB_ID set), else mpiexec "
                             "($MPIML_MPIEXEC, else the one beside this Python, else on PATH)")
    parser.add_argument("--mpi", metavar="PLUGIN", help="srun --mpi=PLUGIN (pmi2 for MPICH, pmix for Open MPI)")
    return parser


@dataclass(frozen=True)
class Plan:
    """What :func:`main` runs: the job, its launcher and the restart policy."""

    command: tuple            # the job's argv, as given
    ranks: int                # of the first attempt
    min_ranks: int
    restarts: int
    launcher: str             # "mpiexec" or "srun"
    resumable: bool           # an mpiml command that takes --resume: restarts add it
    checkpoint_dir: str | None
    mpi: str | None = None    # srun's --mpi plugin


def split_command(argv) -> tuple[list, list]:
    """``(options, command)``: the words before and after the first ``--``."""
    argv = list(argv)
    if "--" not in argv:
        return argv, []
    cut = argv.index("--")
    return argv[:cut], argv[cut + 1:]


def plan(args, command, environ) -> Plan:
    """Check the options and the job's command line; the :class:`Plan`, or :class:`UsageError`."""
    from mpiml.cli.slurm import mpiml_arguments

    if not command:
        raise UsageError("mpiml run: give the job's command after `--`, e.g. mpiml run -n 4 -- mpiml sgd ...")
    if args.restarts < 0:
        raise UsageError(f"mpiml run: --restarts must be at least 0, got {args.restarts}")
    launcher = args.launcher
    if launcher == "auto":
        launcher = "srun" if environ.get("SLURM_JOB_ID") else "mpiexec"
    ranks = args.ranks
    if ranks is None and launcher == "srun" and environ.get("SLURM_NTASKS", "").isdigit():
        ranks = int(environ["SLURM_NTASKS"])
    if ranks is None:
        raise UsageError("mpiml run: give the rank count with -n P (outside a Slurm job there is no default)")
    if ranks < 1:
        raise UsageError(f"mpiml run: -n must be at least 1, got {ranks}")
    min_ranks = ranks if args.min_ranks is None else args.min_ranks
    if not 1 <= min_ranks <= ranks:
        raise UsageError(f"mpiml run: --min-ranks must be between 1 and -n {ranks}, got {min_ranks}")
    if args.mpi is not None and launcher != "srun":
        raise UsageError("mpiml run: --mpi is srun's option; this job runs under mpiexec")
    arguments = mpiml_arguments(list(command))
    resumable, checkpoint_dir = False, None
    if arguments is not None:
        resumable, checkpoint_dir = _check_job(arguments, environ)
        if resumable and args.restarts > 0 and not checkpoint_dir:
            raise UsageError(f"mpiml run: --restarts needs a job that checkpoints: give mpiml {arguments[0]} "
                             "--checkpoint-dir DIR (or set MPIML_CHECKPOINT_DIR)")
    if any(name in environ for name in LAUNCHED):
        raise UsageError("mpiml run starts the ranks itself: run it without mpiexec or srun in front "
                         "(in a Slurm job script: mpiml run ... -- COMMAND)")
    return Plan(tuple(command), ranks, min_ranks, args.restarts, launcher, resumable, checkpoint_dir, args.mpi)


def _check_job(arguments, environ) -> tuple[bool, str | None]:
    """Refuse an mpiml command line that would fail at once; (takes --resume, its checkpoint directory)."""
    from mpiml.cli.main import check_command, command_module

    try:
        check_command(arguments)
    except UsageError as exc:
        raise UsageError(f"mpiml run: the job's command would fail: {exc}") from None
    if not arguments or arguments[0].startswith("-") or "--help" in arguments or "-h" in arguments:
        return False, None
    parser = command_module(arguments[0]).build_parser()
    options = {option for action in parser._actions for option in action.option_strings}
    if "--resume" not in options:
        return False, None
    namespace = parser.parse_args(arguments[1:])
    return True, getattr(namespace, "checkpoint_dir", None) or environ.get("MPIML_CHECKPOINT_DIR") or None


def outcome(status: int) -> str:
    """How an attempt that exited with ``status`` ended: done, usage, preempted or failed (retry)."""
    if status == 0:
        return "done"
    if status == EXIT_USAGE:
        return "usage"
    if status == EXIT_PREEMPTED:
        return "preempted"
    return "failed"


def exit_status(returncode: int) -> int:
    """A launcher's return code as a shell reports it (128 + N when signal N ended it)."""
    return 128 - returncode if returncode < 0 else returncode


def next_ranks(plan: Plan, ranks: int, available: int | None = None) -> int | None:
    """The rank count of the attempt after one of ``ranks`` that failed, or None if none can run.

    ``available``: the ranks the allocation's nodes still up can hold (srun), or None when
    unknown (mpiexec: a rank fewer while ``--min-ranks`` allows it, else the same count).
    """
    if available is None:
        return max(ranks - 1, plan.min_ranks)
    following = min(ranks, available)
    return following if following >= plan.min_ranks else None


def job_command(plan: Plan, attempt: int) -> list:
    """The job's argv for ``attempt`` (1-based): a restart of an mpiml job resumes, never overwrites."""
    command = list(plan.command)
    if attempt == 1 or not plan.resumable:
        return command
    command = [word for word in command if word != "--overwrite"]
    return command if "--resume" in command else [*command, "--resume"]


def launch_command(plan: Plan, ranks: int, command, mpiexec: str = "mpiexec", exclude=()) -> list:
    """The launcher line that runs ``command`` on ``ranks`` ranks (``exclude``: srun nodes to avoid)."""
    if plan.launcher == "srun":
        # --kill-on-bad-exit: a rank that dies ends the step, instead of leaving the others
        # blocked in a collective until the time limit (srun's default).
        line = ["srun"] + ([f"--mpi={plan.mpi}"] if plan.mpi else []) + [f"--ntasks={ranks}", "--kill-on-bad-exit=1"]
        if exclude:
            line.append("--exclude=" + ",".join(sorted(exclude)))
        return [*line, *command]
    return [mpiexec, "-n", str(ranks), *command]


def attempt_env(environ, attempt: int) -> dict:
    """The job's environment for ``attempt`` (``MPIML_RUN_ATTEMPT``); a test's ``MPIML_FAULT`` only on the
    attempts it names.

    ``MPIML_FAULT_ATTEMPTS`` (a comma list, default ``1``) names them, so an injected fault
    happens once, as a real one would, unless a test asks for more.
    """
    env = dict(environ)
    env["MPIML_RUN_ATTEMPT"] = str(attempt)   # a restart takes over the checkpoint lock of an earlier attempt
    wanted = env.get(FAULT_ATTEMPTS, "1")
    if "MPIML_FAULT" in env and str(attempt) not in {item.strip() for item in wanted.split(",")}:
        del env["MPIML_FAULT"]
    return env


def tasks_per_node(environ) -> int | None:
    """Ranks per node of the Slurm allocation (``SLURM_NTASKS_PER_NODE``, else tasks over nodes)."""
    text = environ.get("SLURM_NTASKS_PER_NODE", "")
    if text.isdigit():
        return int(text)
    tasks, nodes = environ.get("SLURM_NTASKS", ""), environ.get("SLURM_JOB_NUM_NODES", environ.get("SLURM_NNODES", ""))
    if tasks.isdigit() and nodes.isdigit() and int(nodes) > 0:
        return math.ceil(int(tasks) / int(nodes))
    return None


def nodes_gone(sinfo_text: str) -> set:
    """Nodes that can run nothing, from ``sinfo -h -N -o "%N %T"`` lines (node name, long state)."""
    gone = set()
    for line in sinfo_text.splitlines():
        words = line.split()
        if len(words) >= 2:
            state = words[1].lower().rstrip("*~#!%$@^-+")
            if any(state.startswith(word) for word in GONE):
                gone.add(words[0])
    return gone


def latest_step(checkpoint_dir) -> tuple[int, str] | None:
    """``(step, manifest path)`` of the newest checkpoint under ``checkpoint_dir`` (or a subdirectory)."""
    if not checkpoint_dir:
        return None
    root = Path(checkpoint_dir)
    found = []
    for manifest in [root / "manifest.json", *root.glob("*/manifest.json")]:
        try:
            found.append((manifest.stat().st_mtime, int(json.loads(manifest.read_text())["step"]), str(manifest)))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    if not found:
        return None
    _, step, path = max(found)
    return step, path


def log(text: str) -> None:
    print(f"mpiml run: {text}", file=sys.stderr, flush=True)


def _mpiexec(environ) -> str:
    found = find_mpiexec(environ)
    if not found:
        raise UsageError(f"mpiml run: {MISSING}")
    return found


def job_allocation(scontrol_text: str) -> tuple[str, int] | None:
    """``(NodeList, NumNodes)`` from ``scontrol -o show job`` (a failed node leaves a ``--no-kill`` job's list)."""
    fields = dict(word.split("=", 1) for word in scontrol_text.split() if "=" in word)
    count = fields.get("NumNodes", "").split("-")[0]
    if not fields.get("NodeList") or not count.isdigit():
        return None
    return fields["NodeList"], int(count)


def slurm_step_env(environ, nodelist: str, count: int) -> dict:
    """The environment of a restart's srun after the allocation changed to ``nodelist`` (``count`` nodes).

    srun refuses a step whose ``SLURM_JOB_NUM_NODES`` differs from the job's allocation.
    """
    env = dict(environ)
    env.update(SLURM_JOB_NODELIST=nodelist, SLURM_NODELIST=nodelist, SLURM_JOB_NUM_NODES=str(count),
               SLURM_NNODES=str(count))
    for stale in ("SLURM_TASKS_PER_NODE", "SLURM_NTASKS", "SLURM_NPROCS"):  # --ntasks says it now
        env.pop(stale, None)
    return env


def _run_quietly(argv) -> str | None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def _slurm_state(environ) -> tuple[dict, set, int | None]:
    """After a failed step: (the next step's environment, nodes to exclude, ranks the nodes left can hold)."""
    per_node = tasks_per_node(environ)
    text = _run_quietly(["scontrol", "-o", "show", "job", environ.get("SLURM_JOB_ID", "")])
    allocation = job_allocation(text) if text else None
    if allocation is None:
        return environ, set(), None
    nodelist, _ = allocation
    names = (_run_quietly(["scontrol", "show", "hostnames", nodelist]) or "").split()
    gone = nodes_gone(_run_quietly(["sinfo", "-h", "-N", "-n", nodelist, "-o", "%N %T"]) or "") & set(names)
    alive = len(names) - len(gone) if names else None
    env = slurm_step_env(environ, nodelist, len(names)) if names else environ
    return env, gone, None if per_node is None or alive is None else per_node * alive


class _Forwarder:
    """Passes the signals of :data:`FORWARDED` on to the running launcher; remembers that one came."""

    def __init__(self):
        self.child = None
        self.received = None
        self._previous = {}

    def __enter__(self):
        for name in FORWARDED:
            number = getattr(signal, name, None)
            if number is not None:
                self._previous[number] = signal.signal(number, self._forward)
        return self

    def __exit__(self, *exc):
        for number, handler in self._previous.items():
            signal.signal(number, handler)

    def _forward(self, number, frame):
        self.received = signal.Signals(number).name
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(number)


def main(argv=None) -> int:
    """Run ``mpiml run`` with ``argv``; returns the exit status (see the module docstring)."""
    options, command = split_command(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(options)
    environ = dict(os.environ)
    job = plan(args, command, environ)
    mpiexec = _mpiexec(environ) if job.launcher == "mpiexec" else "srun"
    if job.launcher == "srun" and not shutil.which("srun"):
        raise UsageError("mpiml run: srun is not on PATH (use --launcher mpiexec)")
    attempts = job.restarts + 1
    ranks, status, gone, step_env = job.ranks, 0, set(), environ
    with _Forwarder() as forwarder:
        for attempt in range(1, attempts + 1):
            line = launch_command(job, ranks, job_command(job, attempt), mpiexec, gone)
            resumed = latest_step(job.checkpoint_dir) if attempt > 1 and job.resumable else None
            where = f", resuming from step {resumed[0]} ({resumed[1]})" if resumed else (
                ", resuming (no checkpoint yet: from the start)" if attempt > 1 and job.resumable else "")
            log(f"attempt {attempt}/{attempts}: {ranks} rank(s) under {job.launcher}{where}")
            started = time.monotonic()
            try:
                forwarder.child = subprocess.Popen(line, env=attempt_env(step_env, attempt))
            except OSError as exc:
                raise UsageError(f"mpiml run: cannot start {line[0]}: {exc.strerror or exc}") from None
            while True:
                try:
                    returncode = forwarder.child.wait()
                    break
                except KeyboardInterrupt:  # Ctrl-C reached the job too (one process group): wait for it
                    forwarder.received = "SIGINT"
            status = exit_status(returncode)
            ended = outcome(status)
            seconds = time.monotonic() - started
            text = f"attempt {attempt}/{attempts} ended with exit status {status} after {seconds:.1f} s"
            if ended == "done":
                log(text + ": done")
                return 0
            if ended == "usage":
                log(text + " (bad input or arguments): not retried")
                return status
            if ended == "preempted":
                log(text + " (stopped with a checkpoint): not retried; resume it later (the Slurm template "
                    "requeues the job)")
                return status
            if forwarder.received:
                log(text + f" after {forwarder.received}: not retried")
                return status
            if attempt == attempts:
                log(text + (f": no restarts left (--restarts {job.restarts})" if job.restarts else ""))
                return status
            if job.launcher == "srun":
                step_env, gone, available = _slurm_state(environ)
                following = next_ranks(job, ranks, ranks if available is None else available)
            else:
                following = next_ranks(job, ranks)
            if following is None:
                log(text + f": the nodes left hold fewer than --min-ranks {job.min_ranks} ranks: not retried")
                return status
            if step_env.get("SLURM_JOB_NODELIST") != environ.get("SLURM_JOB_NODELIST") or gone:
                log(f"nodes now {step_env.get('SLURM_JOB_NODELIST')}"
                    + (f", excluding {','.join(sorted(gone))} (down)" if gone else ""))
            log(text + ": restarting" + (f" on {following} rank(s)" if following != ranks else ""))
            ranks = following
    return status
