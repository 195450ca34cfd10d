"""The same training loop, minibatched, with gradient accumulation, checkpoints and preemption.

    mpiexec -n 3 python examples/logistic_regression_checkpoint.py --checkpoint-dir ck --stop-after 40
    mpiexec -n 2 python examples/logistic_regression_checkpoint.py --checkpoint-dir ck --resume

The first command stops after 40 updates as if Slurm had sent SIGUSR1 (``--stop-after``
sends it to rank 0 itself; ``kill -USR1`` on mpiexec does the same at any moment), writes a
checkpoint and exits with status 3, the status mpiml's Slurm templates requeue on. The
second resumes on another number of ranks and ends with the same weights as an
uninterrupted run: the minibatches are drawn over the global rows, so they do not depend
on the rank count. Rank 0 prints ``stopped after update 40`` then ``resumed from update 40``
and ``train loss 0.2662330704``.

Each update sums ``--accumulate K`` micro-batch gradients locally before one allreduce:
the gradient of a batch too large to process at once, for the price of one message.
"""

import argparse
import os
import signal
import sys

import numpy as np
from mpi4py import MPI

import mpiml
from mpiml.data import load_shard
from mpiml.runtime.abort import run_or_abort
from mpiml.runtime.checkpoint import read_checkpoint, write_checkpoint
from mpiml.runtime.preempt import PreemptionWatch
from mpiml.slurm.env import checkpoint_dir

DATA = "synthetic:classification,n=6000,d=20,seed=1"
N, EPOCHS, BATCH, RATE, ALPHA, SEED = 6000, 3, 200, 1.0, 1e-3, 0


def sigmoid(z):
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint-dir", help="default: $MPIML_CHECKPOINT_DIR (the Slurm templates set it)")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--accumulate", type=int, default=4, help="micro-batches per update")
    parser.add_argument("--stop-after", type=int, help="preempt this run after this many updates")
    args = parser.parse_args()
    comm = MPI.COMM_WORLD
    directory = args.checkpoint_dir or checkpoint_dir()

    shard = load_shard(DATA)
    X = np.hstack([shard.X, np.ones((shard.n_rows, 1))])
    first = comm.exscan(shard.n_rows) or 0  # my rows are global rows first .. first + n_rows - 1
    w, start = np.zeros(X.shape[1]), 0
    if args.resume:
        # Rank 0 reads, everyone gets the same copy: ranks never read a file the others may not see.
        found = comm.bcast(read_checkpoint(directory) if comm.rank == 0 else None)
        if found is not None:
            w, start = found[0]["w"], found[1]["update"]
            if comm.rank == 0:
                print(f"resumed from update {start}", flush=True)

    per_epoch = N // BATCH
    with PreemptionWatch(comm) as watch:
        for update in range(start, EPOCHS * per_epoch):
            epoch, b = divmod(update, per_epoch)
            # Every rank draws the same permutation of the global rows (seeded by the epoch, so
            # a resumed run draws it again), then works on the batch rows it holds.
            order = np.random.default_rng([SEED, epoch]).permutation(N)
            rows = order[b * BATCH:(b + 1) * BATCH]
            mine = rows[(rows >= first) & (rows < first + shard.n_rows)] - first
            buf = np.zeros(X.shape[1] + 1)
            for micro in np.array_split(mine, args.accumulate):
                buf[:-1] += X[micro].T @ (sigmoid(X[micro] @ w) - shard.y[micro])
            if update + 1 == args.stop_after and comm.rank == 0:
                os.kill(os.getpid(), signal.SIGUSR1)  # as Slurm's --signal=B:USR1 would, on one rank only
            # The last slot carries this rank's stop vote: the decision rides on the gradient's
            # allreduce, so every rank stops after the same update at no extra message.
            buf[-1] = watch.requested
            buf = mpiml.allreduce(buf)
            grad = buf[:-1] / BATCH
            grad[:-1] += ALPHA * w[:-1]
            w -= RATE * grad
            stop = buf[-1] > 0
            if stop or (update + 1) % per_epoch == 0:  # at every epoch's end, and when asked to stop
                if comm.rank == 0:
                    write_checkpoint(directory, update + 1, {"w": w}, {"update": update + 1})
                comm.Barrier()  # nobody exits before the checkpoint is on disk
            if stop:
                if comm.rank == 0:
                    print(f"stopped after update {update + 1}; checkpoint in {directory}", flush=True)
                raise mpiml.Preempted(f"resume with --resume --checkpoint-dir {directory}")

    z = X @ w
    loss = mpiml.allreduce(np.array([np.sum(np.logaddexp(0.0, z) - shard.y * z)]))[0] / N
    if comm.rank == 0:
        print(f"train loss {loss + 0.5 * ALPHA * w[:-1] @ w[:-1]:.10f}")


if __name__ == "__main__":
    sys.exit(run_or_abort(main))  # Preempted -> exit status 3; any other error ends every rank
