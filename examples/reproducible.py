"""Reproducible mode: the same model, bit for bit, from any number of ranks.

    mpiexec -n 3 python examples/reproducible.py
    mpiexec -n 4 python examples/reproducible.py     # the reproducible lines print the same digests

Part 1 trains one logistic regression by sync SGD twice, on rows split over the ranks:
once as usual, and once with ``reproducible=True``. Sync SGD draws its batches from the
global rows, so both compute the same model as one process would, up to rounding; but the
usual sums are grouped by how the rows are split, so 3 and 4 ranks round differently in the
last bits. In reproducible mode every sum across rows and ranks is exact and rounded once,
so the weights are the same bits at any rank count (compare the digests of two runs).

Part 2 sums 3000 numbers of magnitudes 1e-6..1e6 split over the ranks: the usual sum
changes in its last bits with the split, ``mpiml.reproducible_sum`` (the rows of every rank;
``mpiml.allreduce(x, reproducible=True)`` does the same element by element) does not.

Rank 0 prints, at 3 ranks (at other rank counts the ordinary digest, and often the usual
sum's last digits, change; the reproducible lines do not)::

    ordinary      loss 0.2824455385  weights sha256 939321faa6e1
    reproducible  loss 0.2824455385  weights sha256 a54e3d323fb0
    sum           usual -2506393.493922838  reproducible -2506393.493922839
"""

import argparse
import hashlib

import numpy as np
from mpi4py import MPI

import mpiml
from mpiml.data import load_shard
from mpiml.sgd import LinearModel

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--rows", type=int, default=4000)
parser.add_argument("--features", type=int, default=30)
args = parser.parse_args()
comm = MPI.COMM_WORLD


def digest(array) -> str:
    """The first 12 hex digits of SHA-256 over the array's bytes: equal digests, equal bits."""
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()[:12]


data = load_shard(f"synthetic:classification,n={args.rows},d={args.features},seed=5")  # this rank's rows
SGD = dict(strategy="sync", epochs=3, batch_size=64, lr=0.5, alpha=1e-4, seed=0, standardize=False)
for label, reproducible in (("ordinary", False), ("reproducible", True)):
    model = LinearModel("logistic", reproducible=reproducible, **SGD).fit(data.X, data.y)
    if comm.rank == 0:
        print(f"{label:<13} loss {model.history_[-1]['train_loss']:.10f}  weights sha256 {digest(model.theta_)}")


def values_of(rank: int, size: int) -> np.ndarray:
    """This rank's share of 3000 values of magnitudes 1e-6..1e6 and both signs."""
    rng = np.random.default_rng(7)
    values = rng.standard_normal(3000) * 10.0 ** rng.uniform(-6, 6, size=3000)
    return np.array_split(values, size)[rank]  # any split: the reproducible sum does not change


share = values_of(comm.rank, comm.size)
usual = comm.allreduce(float(np.sum(share)))    # grouped by the split: the last bits change with p
exact = mpiml.reproducible_sum(share[:, None])  # every rank's rows, summed exactly, rounded once
if comm.rank == 0:
    print(f"sum           usual {usual!r}  reproducible {float(exact[0])!r}")
