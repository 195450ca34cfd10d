"""Checkpoints store the whole model: a run interrupted under one layout and p resumes under another.

The reference is the uninterrupted data-parallel sync run; interrupted-and-resumed runs
that change the grid, the split, the rank count or the trainer (grid <-> data-parallel)
must end with its model.
"""

from __future__ import annotations

import numpy as np
import pytest
from parallel_helpers import grid_train, max_diff, rank_rows
from mpi4py import MPI
from mpi_helpers import agree

from mpiml.data import synthetic
from mpiml.runtime.checkpoint import read_checkpoint
from mpiml.sgd import Group, TrainConfig, make_model, train

COMM = MPI.COMM_WORLD
SPEC = "synthetic:classification,n=200,d=10,classes=4,density=0.5"


def _setup():
    (X, y), (X_all, y_all) = rank_rows(SPEC, COMM)
    model = make_model("softmax", 10, 4)
    config = TrainConfig(strategy="sync", epochs=2, batch_size=16, seed=5, optimizer="adam", lr=0.05, alpha=1e-3)
    return model, X, model.encode_labels(y), X_all, model.encode_labels(y_all), config


def _last_grid(most_cols=4):
    """The grid with the most columns (at most the 4 classes) for this p."""
    return [(COMM.size // c, c) for c in range(1, most_cols + 1) if COMM.size % c == 0][-1]


@pytest.mark.mpi
@pytest.mark.parametrize("first,second", [(("1xp", "features"), ("grid", "classes")),
                                          (("1xp", "classes"), ("data", None)),
                                          (("data", None), ("grid", "features"))])
def test_resume_under_another_layout_gives_the_uninterrupted_model(shared_tmp, first, second):
    model, X, y, _, _, config = _setup()
    reference = train(model, X, y, config, Group.from_comm(COMM))
    stop = 17  # inside epoch 2 (13 updates per epoch)

    def run(how, **kwargs):
        kind, split = how
        if kind == "data":
            return train(model, X, y, config, Group.from_comm(COMM), checkpoint_dir=shared_tmp, **kwargs)
        rows, cols = (1, min(COMM.size, 4)) if kind == "1xp" else _last_grid()
        if rows * cols != COMM.size:
            rows, cols = COMM.size, 1
        return grid_train(model, X, y, config, COMM, rows, cols, split, checkpoint_dir=shared_tmp, **kwargs)

    part1 = run(first, stop_at_update=stop)
    agree(COMM, part1.interrupted and part1.updates == stop, (part1.interrupted, part1.updates))
    saved = read_checkpoint(shared_tmp) if COMM.rank == 0 else None
    agree(COMM, COMM.rank != 0 or saved[0]["theta"].shape == (1, model.n_params), "checkpoint is not whole")
    part2 = run(second, resume=True)
    diff = max_diff(part2.theta, reference.theta)
    agree(COMM, part2.resumed_from == stop and not part2.interrupted, (part2.resumed_from, part2.interrupted))
    agree(COMM, diff <= 1e-10, f"{first} -> {second}: max diff {diff}")


@pytest.mark.mpi
def test_resume_at_another_rank_count(shared_tmp):
    """Interrupted on a 1 x (p-1) grid of p-1 ranks, resumed on every rank of the last grid of p."""
    model, X, y, X_all, y_all, config = _setup()
    reference = train(model, X_all, y_all, config, Group.serial())
    fewer = max(COMM.size - 1, 1)
    sub = COMM.Split(0 if COMM.rank < fewer else MPI.UNDEFINED, COMM.rank)
    if sub != MPI.COMM_NULL:
        kind, options = synthetic.parse_spec(SPEC)
        lo, hi = synthetic.row_block(options["n"], sub.rank, sub.size)
        grid_train(model, X_all[lo:hi], y_all[lo:hi], config, sub, 1, sub.size, "features",
                   checkpoint_dir=shared_tmp, stop_at_update=20)
        sub.Free()
    COMM.Barrier()
    rows, cols = _last_grid()
    rest = grid_train(model, X, y, config, COMM, rows, cols, "classes", checkpoint_dir=shared_tmp, resume=True)
    agree(COMM, rest.resumed_from == 20, rest.resumed_from)
    diff = max_diff(rest.theta, reference.theta)
    agree(COMM, diff <= 1e-10, f"max diff {diff}")


@pytest.mark.mpi
def test_a_stop_request_on_one_rank_stops_every_rank_after_the_same_update(shared_tmp):
    """The last rank 'gets a signal' at its 6th update; all ranks checkpoint after it and resume to the end."""
    model, X, y, _, _, config = _setup()
    reference = train(model, X, y, config, Group.from_comm(COMM))
    calls = []

    def stop_requested():
        calls.append(1)
        return COMM.rank == COMM.size - 1 and len(calls) >= 6

    rows, cols = _last_grid()
    first = grid_train(model, X, y, config, COMM, rows, cols, "classes", checkpoint_dir=shared_tmp,
                       stop_requested=stop_requested)
    agree(COMM, first.interrupted and len(set(COMM.allgather(first.updates))) == 1 and first.updates == 6,
          (first.interrupted, first.updates))
    rest = grid_train(model, X, y, config, COMM, rows, cols, "features", checkpoint_dir=shared_tmp, resume=True)
    agree(COMM, max_diff(rest.theta, reference.theta) <= 1e-10, "resumed model differs")


@pytest.mark.mpi
def test_local_sgd_resumes_bitwise_on_the_same_grid(shared_tmp):
    """local keeps one model per replica (row group) in the checkpoint: resuming loses nothing."""
    model, X, y, _, _, config = _setup()
    config = TrainConfig(**{**config.as_dict(), "strategy": "local", "sync_every": 4, "batch_size": 8})
    rows, cols = _last_grid(2)   # R > 1 where p is even: several replicas
    whole = grid_train(model, X, y, config, COMM, rows, cols, "features")
    first = grid_train(model, X, y, config, COMM, rows, cols, "features", checkpoint_dir=shared_tmp,
                       stop_at_update=whole.updates // 2 + 1)
    saved = read_checkpoint(shared_tmp) if COMM.rank == 0 else None
    agree(COMM, COMM.rank != 0 or saved[0]["theta"].shape == (rows if rows > 1 else 1, model.n_params),
          "one row per replica expected")
    rest = grid_train(model, X, y, config, COMM, rows, cols, "features", checkpoint_dir=shared_tmp, resume=True)
    agree(COMM, first.interrupted and np.array_equal(rest.theta, whole.theta),
          f"max diff {max_diff(rest.theta, whole.theta)}")


@pytest.mark.mpi
def test_divergence_raises_on_every_rank_and_keeps_the_last_checkpoint(shared_tmp):
    from mpiml.errors import DivergenceError

    (X, y), _ = rank_rows("synthetic:regression,n=120,d=6", COMM)
    X = X * 50.0
    model = make_model("linear", 6)
    config = TrainConfig(strategy="sync", epochs=5, batch_size=12, lr=5.0, seed=1, checkpoint_every=1)
    rows, cols = _last_grid()
    error = None
    try:
        grid_train(model, X, y, config, COMM, rows, cols, "features", checkpoint_dir=shared_tmp)
    except DivergenceError as exc:
        error = str(exc)
    agree(COMM, error is not None and "diverged" in error, error)
    saved = read_checkpoint(shared_tmp) if COMM.rank == 0 else None
    agree(COMM, COMM.rank != 0 or (saved is not None and np.isfinite(saved[0]["theta"]).all()),
          "the last good checkpoint is gone or broken")
