"""Feature-, class- and 2-D-partitioned sync SGD equals data-parallel sync SGD from the same seed.

Every grid R x C of the job's p (p x 1 ... 1 x p, 2 x 3, ...) is checked against the
data-parallel trainer of mpiml.sgd on the same rows, for logistic, softmax (features and
classes split) and least squares, dense and sparse. Also run at p = 6 by test_parallel_p6.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from parallel_helpers import grid_train, max_diff, rank_rows
from mpi4py import MPI
from mpi_helpers import agree

from mpiml.parallel import factorizations
from mpiml.sgd import Group, TrainConfig, make_model, train

COMM = MPI.COMM_WORLD

CASES = [
    ("logistic", "features", "synthetic:classification,n=144,d=9", dict(momentum=0.9, alpha=1e-3)),
    ("logistic", "features", "synthetic:classification,n=144,d=40,density=0.1",
     dict(optimizer="adagrad", alpha=0.01, l1_ratio=0.5)),
    ("softmax", "features", "synthetic:classification,n=144,d=12,classes=7,density=0.3",
     dict(optimizer="adam", lr=0.05, schedule="cosine")),
    ("softmax", "classes", "synthetic:classification,n=144,d=8,classes=7",
     dict(optimizer="adam", lr=0.05, accumulate=2)),
    ("softmax", "classes", "synthetic:classification,n=144,d=30,classes=6,density=0.2", dict(alpha=1e-3)),
    ("linear", "features", "synthetic:regression,n=144,d=8", dict(lr=0.05, schedule="inverse", lr_decay=0.01)),
    ("linear", "features", "synthetic:regression,n=144,d=50,density=0.1", dict(lr=0.2, nesterov=True,
                                                                              momentum=0.5)),
]


@pytest.mark.mpi
@pytest.mark.parametrize("name,split,spec,settings", CASES)
def test_every_grid_gives_the_data_parallel_model(name, split, spec, settings):
    (X, y), _ = rank_rows(spec, COMM)
    classes = int(spec.split("classes=")[1].split(",")[0]) if "classes=" in spec else 2
    model = make_model(name, X.shape[1], classes)
    y = model.encode_labels(y)
    config = TrainConfig(strategy="sync", epochs=2, batch_size=24, seed=11, **settings)
    data = train(model, X, y, config, Group.from_comm(COMM))
    for rows, cols in factorizations(COMM.size):
        if split == "classes" and cols > model.k:
            continue
        grid = grid_train(model, X, y, config, COMM, rows, cols, split)
        diff = max_diff(grid.theta, data.theta)
        agree(COMM, diff <= 1e-10 * max(1.0, np.abs(data.theta).max()), f"{rows}x{cols} {split}: max diff {diff}")
        agree(COMM, grid.updates == data.updates, (grid.updates, data.updates))
        same = [(h["train_loss"], h.get("train_accuracy")) for h in grid.history]
        ref = [(h["train_loss"], h.get("train_accuracy")) for h in data.history]
        agree(COMM, np.allclose(np.array(same, dtype=float), np.array(ref, dtype=float), rtol=1e-9,
                          equal_nan=True),
              f"{rows}x{cols}: history {same} vs {ref}")
        agree(COMM, all(np.array_equal(t, grid.theta) for t in COMM.allgather(grid.theta)), "ranks disagree")


@pytest.mark.mpi
def test_huge_logits_do_not_overflow_the_split_softmax():
    """Scores of 1e4: exp would overflow without the shared row maximum; loss stays the data-parallel one."""
    (X, y), _ = rank_rows("synthetic:classification,n=120,d=5,classes=5", COMM)
    X = X * 3000.0
    model = make_model("softmax", 5, 5)
    y = model.encode_labels(y)
    config = TrainConfig(strategy="sync", epochs=1, batch_size=40, seed=2, lr=1.0)
    data = train(model, X, y, config, Group.from_comm(COMM))
    grid = grid_train(model, X, y, config, COMM, 1, min(COMM.size, 5), "classes") if COMM.size <= 5 else None
    if grid is not None:
        agree(COMM, np.isfinite(grid.theta).all() and np.isfinite(grid.history[-1]["train_loss"]), "not finite")
        agree(COMM, np.isclose(grid.history[-1]["train_loss"], data.history[-1]["train_loss"], rtol=1e-9),
              (grid.history[-1]["train_loss"], data.history[-1]["train_loss"]))
        agree(COMM, max_diff(grid.theta, data.theta) <= 1e-9 * np.abs(data.theta).max(), "models differ")


@pytest.mark.mpi
@pytest.mark.parametrize("strategy,split", [("local", "features"), ("oneshot", "classes")])
def test_local_and_oneshot_grids_equal_data_parallel_replicas(strategy, split):
    """On R x C, local/oneshot SGD is data-parallel local SGD over R replicas (the column group),
    each with the rows of its row group: run exactly that on the column group as the reference."""
    from mpiml.data.columns import to_grid
    from mpiml.data.shard import Shard
    from mpiml.parallel import GridComms

    (X, y), _ = rank_rows("synthetic:classification,n=144,d=12,classes=3,density=0.5", COMM)
    model = make_model("softmax", 12, 3)
    y = model.encode_labels(y)
    config = TrainConfig(strategy=strategy, epochs=2, batch_size=8, seed=4, sync_every=3, optimizer="adam", lr=0.05)
    for rows, cols in factorizations(COMM.size):
        if split == "classes" and cols > 3:
            continue
        comms = GridComms.split(COMM, rows, cols)
        try:
            whole_rows = to_grid(Shard(X, y), comms, "classes")   # every feature of the row group's rows
            reference = train(model, whole_rows.X, whole_rows.y.astype(y.dtype), config,
                              Group.from_comm(comms.col_comm))
        finally:
            comms.free()
        grid = grid_train(model, X, y, config, COMM, rows, cols, split)
        diff = max_diff(grid.theta, reference.theta)
        agree(COMM, diff <= 1e-10 and grid.updates == reference.updates,
              f"{strategy} {rows}x{cols}: diff {diff}, updates {grid.updates} vs {reference.updates}")


@pytest.mark.mpi
def test_bad_labels_and_widths_are_one_error_on_every_rank():
    from mpiml.errors import DataError
    from mpiml.sgd import LinearModel

    (X, y), _ = rank_rows("synthetic:classification,n=60,d=6", COMM)
    bad_y = y.copy()
    if COMM.rank == COMM.size - 1:
        bad_y[-1] = 2.0   # not a binary label
    wide = np.hstack([X, X[:, :1]]) if COMM.rank == COMM.size - 1 and COMM.size > 1 else X
    for X_, y_, needle in ((X, bad_y, "label 2 is not valid"), (wide, y, "features, rank 0's has")):
        if needle.startswith("features") and COMM.size == 1:
            continue
        message = None
        try:
            LinearModel("logistic", comm=COMM, epochs=1, parallel="auto", grid=f"1x{COMM.size}",
                        split="features").fit(X_, y_)
        except DataError as exc:
            message = str(exc)
        agree(COMM, message is not None and needle in message, message)
        agree(COMM, len(set(COMM.allgather(message))) == 1, "ranks raised different errors")
