"""Your own data-parallel training loop: logistic regression in numpy on ``mpiml.allreduce``.

    mpiexec -n 4 python examples/logistic_regression.py

Every rank makes only its own rows of a built-in synthetic data set (give ``load_shard`` a
file or a folder of shards instead to train on your data), computes its share of the
gradient, and ``mpiml.allreduce`` adds the shares up: every rank then takes the same step
and holds the same weights. The answer does not depend on the number of ranks (up to
rounding). Rank 0 prints::

    train loss 0.2653067582
    test accuracy 0.898431
"""

import numpy as np
from mpi4py import MPI

import mpiml
from mpiml.data import load_shard, split_holdout

comm = MPI.COMM_WORLD
DATA = "synthetic:classification,n=6000,d=20,seed=1"
STEPS, RATE, ALPHA = 150, 2.0, 1e-3

# Each rank generates only its rows; the held-out rows are the same at any rank count.
train, test = split_holdout(load_shard(DATA), fraction=0.2, seed=0)
X = np.hstack([train.X, np.ones((train.n_rows, 1))])  # last column: the intercept
n_total = comm.allreduce(train.n_rows)


def sigmoid(z):
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # = 1 / (1 + exp(-z)), without overflow warnings


w = np.zeros(X.shape[1])
for step in range(STEPS):
    # Divide by the global row count, not the local one: then the ranks' shares of the
    # mean gradient simply add up, however unevenly the rows are spread.
    grad = X.T @ (sigmoid(X @ w) - train.y) / n_total
    grad = mpiml.allreduce(grad)  # sum over ranks; algorithm="auto" picks by message size
    grad[:-1] += ALPHA * w[:-1]   # L2 penalty, not on the intercept: the same on every rank
    w -= RATE * grad

# Metrics are sums over rows too: one small allreduce of (loss sum, correct, count).
z = X @ w
loss_sum = np.sum(np.logaddexp(0.0, z) - train.y * z)
X_test = np.hstack([test.X, np.ones((test.n_rows, 1))])
correct = np.sum((X_test @ w > 0) == (test.y > 0.5))
loss_sum, correct, n_test = mpiml.allreduce(np.array([loss_sum, correct, test.n_rows], dtype=np.float64))
if comm.rank == 0:
    print(f"train loss {loss_sum / n_total + 0.5 * ALPHA * w[:-1] @ w[:-1]:.10f}")
    print(f"test accuracy {correct / n_test:.6f}")
