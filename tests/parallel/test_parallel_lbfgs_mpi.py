"""Full-batch L-BFGS on every grid reaches the data-parallel optimum, with the same steps on every rank.

Wide sparse problems (more features than rows) for logistic, least squares and softmax
(features and classes split): every grid R x C of the job's p is checked against the
data-parallel ``lbfgs`` of mpiml.sgd (the same L-BFGS on the p x 1 grid) and
against every other rank (the objective trace of every iteration, bit for bit, and each
column group's block). Also run at p = 6 by test_parallel_p6.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from parallel_helpers import grid_train, max_diff, rank_rows
from mpi4py import MPI
from mpi_helpers import agree

from mpiml.parallel import factorizations, make_part
from mpiml.sgd import Group, TrainConfig, make_model, train

COMM = MPI.COMM_WORLD
WIDE = "n=150,d=1500,density=0.008"   # about 12 nonzeros per row, 10 features per row
CASES = [
    ("logistic", f"synthetic:classification,{WIDE}", 2, ("features",), dict(alpha=1e-2)),
    ("linear", f"synthetic:regression,{WIDE}", 2, ("features",), dict(alpha=0.1)),
    ("softmax", f"synthetic:classification,{WIDE},classes=3", 3, ("features", "classes"), dict(alpha=0.05)),
]


def _setup(name, spec, classes, settings):
    (X, y), _ = rank_rows(spec, COMM)
    model = make_model(name, X.shape[1], classes)
    config = TrainConfig(**{"strategy": "lbfgs", "tol": 1e-10, "max_iter": 400, **settings})
    return model, X, model.encode_labels(y), config


def _grids(split, k):
    return [(r, c) for r, c in factorizations(COMM.size) if split == "features" or c <= k]


@pytest.mark.mpi
@pytest.mark.parametrize("name,spec,classes,splits,settings", CASES)
def test_every_grid_reaches_the_data_parallel_optimum(name, spec, classes, splits, settings):
    model, X, y, config = _setup(name, spec, classes, settings)
    data = train(model, X, y, config, Group.from_comm(COMM))
    best = data.history[-1]["train_loss"]
    for split in splits:
        for rows, cols in _grids(split, model.k):
            grid = grid_train(model, X, y, config, COMM, rows, cols, split)
            last = grid.history[-1]
            where = f"{name} {rows}x{cols} {split}"
            agree(COMM, last["lbfgs_message"].startswith("CONVERGENCE"), f"{where}: {last['lbfgs_message']}")
            agree(COMM, abs(last["train_loss"] - best) <= 1e-6 * abs(best), f"{where}: {last['train_loss']} vs {best}")
            diff = max_diff(grid.theta, data.theta)
            agree(COMM, diff <= 1e-3 * max(1.0, np.abs(data.theta).max()), f"{where}: max coefficient diff {diff}")
            traces = COMM.allgather(last["lbfgs_objective"])
            agree(COMM, all(t == traces[0] for t in traces), f"{where}: the ranks took different steps")
            agree(COMM, grid.updates == last["lbfgs_iterations"] == len(traces[0]), (grid.updates, len(traces[0])))


@pytest.mark.mpi
@pytest.mark.parametrize("split", ["features", "classes"])
def test_a_column_group_holds_the_same_block_bit_for_bit(split):
    """The ranks sharing a block (different rows) end with equal blocks, the replicated intercepts too."""
    model, X, y, config = _setup("softmax", CASES[2][1], 3, dict(alpha=1e-3, max_iter=12))   # no need to converge
    for rows, cols in _grids(split, model.k):
        block = grid_train(model, X, y, config, COMM, rows, cols, split).block
        col = COMM.rank % cols
        n_weights = make_part(split, model.n_features, model.k, cols, col).n_weights
        blocks = COMM.allgather((col, block[:n_weights], block[n_weights:]))
        for c in range(cols):
            mates = [b for b in blocks if b[0] == c]
            agree(COMM, all(np.array_equal(b[1], mates[0][1]) and np.array_equal(b[2], mates[0][2]) for b in mates),
                  f"{rows}x{cols} {split}: column {c} differs")
        if split == "features":
            agree(COMM, all(np.array_equal(b[2], blocks[0][2]) for b in blocks), "intercept copies differ")


@pytest.mark.mpi
def test_checkpoint_is_the_whole_model_and_resumes_data_parallel(shared_tmp):
    from mpiml.runtime.checkpoint import read_checkpoint

    model, X, y, config = _setup("logistic", CASES[0][1], 2, dict(alpha=1e-2, warm_start_epochs=1, batch_size=16))
    rows, cols = factorizations(COMM.size)[-1]
    grid = grid_train(model, X, y, config, COMM, rows, cols, "features", checkpoint_dir=shared_tmp)
    agree(COMM, grid.history[0].get("phase") == "warm_start" and len(grid.history) == 2, grid.history)
    saved = read_checkpoint(shared_tmp) if COMM.rank == 0 else None
    agree(COMM, COMM.rank != 0 or np.array_equal(saved[0]["theta"][0], grid.theta), "checkpoint is not the model")
    again = train(model, X, y, config, Group.from_comm(COMM), checkpoint_dir=shared_tmp, resume=True)
    agree(COMM, again.resumed_from == grid.updates, (again.resumed_from, grid.updates))
    loss, ref = again.history[-1]["train_loss"], grid.history[-1]["train_loss"]
    agree(COMM, abs(loss - ref) <= 1e-9 * abs(ref), (loss, ref))


@pytest.mark.mpi
def test_l1_is_refused_for_lbfgs_on_a_grid():
    from mpiml.errors import ArgumentError

    model, X, y, _ = _setup("logistic", CASES[0][1], 2, {})
    bad = TrainConfig(strategy="lbfgs", alpha=1e-2)
    bad.l1_ratio = 0.5   # validated again by train_grid
    message = None
    try:
        grid_train(model, X, y, bad, COMM, 1, COMM.size, "features")
    except ArgumentError as exc:
        message = str(exc)
    agree(COMM, message is not None and "smooth" in message, message)
