"""A small preemptible training job: least squares by full-batch gradient descent.

It shows (and the Slurm tests use) the contract every mpiml trainer follows:
SIGUSR1/SIGTERM -> finish the step, checkpoint, exit with status 3; ``--resume`` ->
continue from the latest checkpoint. The result does not depend on where it was
interrupted: the run is deterministic for a given number of ranks.

    mpiexec -n 2 python examples/preemptible_job.py --steps 40 --json
    sbatch slurm/preemptible.sbatch            (uses it; `scancel --signal=USR1 --batch JOBID`)
    python examples/preemptible_job.py --evaluate --checkpoint-dir D --json

Rows of the data (generated from --seed) are split over the ranks; every step sums the
ranks' gradients with ``mpiml.allreduce``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from mpiml.runtime.abort import run_or_abort
from mpiml.runtime.errors import ArgumentError, CheckpointError


def make_problem(seed: int, rows: int, dim: int):
    """The full least-squares problem ``(A, b)``, identical on every rank."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((rows, dim))
    b = a @ rng.standard_normal(dim) + 0.1 * rng.standard_normal(rows)
    return a, b


def objective(a, b, x) -> float:
    """Mean squared residual over 2."""
    residual = a @ x - b
    return float(residual @ residual / (2 * len(b)))


def local_gradient(a_local, b_local, x, rows: int):
    """This rank's share of the gradient of :func:`objective` (the shares sum to it)."""
    return a_local.T @ (a_local @ x - b_local) / rows


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--rate", type=float, default=0.1, help="gradient step size")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--rows", type=int, default=240)
    parser.add_argument("--dim", type=int, default=6)
    parser.add_argument("--sleep", type=float, default=0.0, help="seconds to pause per step (to simulate work)")
    parser.add_argument("--checkpoint-dir", help="default: $MPIML_CHECKPOINT_DIR, else checkpoints/<job id>")
    parser.add_argument("--checkpoint-every", type=int, default=25, help="steps between regular checkpoints")
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint if there is one")
    parser.add_argument("--evaluate", action="store_true", help="only report the latest checkpoint's objective")
    parser.add_argument("--result", help="write the final result here as JSON (rank 0)")
    parser.add_argument("--json", action="store_true", help="print the final result as one JSON object")
    return parser


def resume_point(args, directory, meta, comm):
    """``(x, step, manifest-or-None)`` to start from, the same on every rank."""
    from mpiml.runtime.agree import raise_if_any
    from mpiml.runtime.checkpoint import read_checkpoint

    found, error = None, None
    if comm.rank == 0 and (args.resume or args.evaluate):
        try:
            found = read_checkpoint(directory)
            # Evaluating needs only the same problem: a checkpoint of any rank count will do.
            checked = {k: v for k, v in meta.items() if not (args.evaluate and k == "ranks")}
            if found is not None and any(found[1].get(k) != v for k, v in checked.items()):
                error = CheckpointError(f"{directory}: checkpoint of another run ({found[1]}), not {meta}")
        except CheckpointError as exc:
            error = exc
        if args.evaluate and found is None and error is None:
            error = CheckpointError(f"{directory}: no checkpoint to evaluate")
    raise_if_any(error, comm)
    found = comm.bcast(found, root=0)
    if found is None:
        return np.zeros(args.dim), 0, None
    return found[0]["x"], int(found[1]["step"]), found[1]


def main(argv=None) -> int:
    from mpi4py import MPI

    import mpiml
    from mpiml.runtime.agree import raise_if_any
    from mpiml.runtime.checkpoint import write_checkpoint
    from mpiml.runtime.files import atomic_write
    from mpiml.runtime.preempt import Preempted, PreemptionWatch
    from mpiml.slurm.env import checkpoint_dir, log_prefix, slurm_env

    args = build_parser().parse_args(argv)
    comm = MPI.COMM_WORLD
    if args.steps < 0 or args.rows < comm.size or args.dim < 1 or args.checkpoint_every < 1:
        raise_if_any(ArgumentError("need --steps >= 0, --rows >= ranks, --dim >= 1, --checkpoint-every >= 1"))
    directory = args.checkpoint_dir or checkpoint_dir()
    env = slurm_env()

    def log(message):
        if comm.rank == 0:  # with --json, stdout carries only the result
            print(f"{log_prefix()} {message}".strip(), flush=True, file=sys.stderr if args.json else sys.stdout)

    a, b = make_problem(args.seed, args.rows, args.dim)
    mine = np.array_split(np.arange(args.rows), comm.size)[comm.rank]
    a_local, b_local = a[mine], b[mine]
    meta = {"seed": args.seed, "rows": args.rows, "dim": args.dim, "rate": args.rate, "ranks": comm.size}

    def save(step, x):
        if comm.rank == 0:
            write_checkpoint(directory, step, {"x": x}, meta)
        comm.Barrier()  # nobody exits before the checkpoint is on disk

    # Watch from the start: once the collective resume_point has returned on rank 0, every
    # rank handles the signal (an unhandled SIGUSR1 would kill the process).
    with PreemptionWatch(comm) as watch:
        x, start, manifest = resume_point(args, directory, meta, comm)
        if manifest is not None:
            log(f"resumed from step {start} of {directory} (SLURM_RESTART_COUNT={env.restart_count})")
        else:
            log(f"starting at step 0 (SLURM_RESTART_COUNT={env.restart_count})")
        for step in range(start, args.steps if not args.evaluate else start):
            x = x - args.rate * mpiml.allreduce(local_gradient(a_local, b_local, x, args.rows), comm=comm)
            done = step + 1
            if args.sleep:
                time.sleep(args.sleep)
            if watch.should_stop():
                save(done, x)
                log(f"{watch.signal_name or 'stop'} received: checkpointed step {done} in {directory}")
                raise Preempted(f"stopped after step {done}; resume from {directory}")
            if done % args.checkpoint_every == 0:
                save(done, x)
        if not args.evaluate and start < args.steps:
            save(args.steps, x)

    result = {"steps": start if args.evaluate else args.steps, "rate": args.rate, "ranks": comm.size,
              "objective": objective(a, b, x), "x": x.tolist(),
              "resumed_from_step": start if manifest is not None else None,
              "restart_count": env.restart_count, "slurm_job_id": env.job_id}
    if comm.rank == 0:
        if args.result:
            with atomic_write(args.result, "w") as handle:
                json.dump(result, handle, sort_keys=True)
        if args.json:
            print(json.dumps(result, sort_keys=True), flush=True)
        else:
            log(f"done: step {result['steps']}, objective {result['objective']:.12g}")
    return 0


if __name__ == "__main__":
    sys.exit(run_or_abort(main))
