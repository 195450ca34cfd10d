"""Checkpoints of grid runs hold the *whole* model, in the format of :mod:`mpiml.train.checkpointing`.

Rank 0 assembles ``theta`` and every optimizer state from the blocks of row group 0
(the other row groups hold copies; for ``local``/``oneshot`` one model per row group, as
data-parallel runs store one per rank) and hands a whole-model view of the run to
:mod:`mpiml.train.checkpointing`, which writes one-row arrays and its manifest
(``epoch``, ``step_in_epoch``, ``updates``, ``model``, ``n_params``, ``n_total``,
``config``, ...). Reading goes the same way back, each rank keeping its block. So a
checkpoint written under any grid, split or rank count resumes under any other, data
parallelism (the ``p x 1`` grid) included: the batches of ``sync`` do not depend on the
layout, so the resumed run continues the same trajectory.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from mpiml.train import checkpointing


def _assemble_root(layout, local):
    """The whole vector of the blocks ``local`` of row group 0, on rank 0 (None elsewhere).

    Arrays that are not blocks of theta (Adam's step count), and the blocks of a one-column
    grid (the whole vector already), are returned as they are, on every rank.
    """
    if local.shape != layout.index.shape or layout.comms.cols == 1:
        return np.array(local, copy=True)
    comms = layout.comms
    pieces = comms.gather_object((layout.index, local) if comms.row == 0 else None)
    if pieces is None:
        return None
    full = np.zeros(layout.model.n_params)
    for piece in pieces:
        if piece is not None:
            full[piece[0]] = piece[1]
    return full


def whole(layout, local: np.ndarray) -> np.ndarray:
    """The whole vector of which ``local`` is this rank's block, on every rank."""
    if layout.comms.cols == 1:
        return np.array(local, copy=True)
    return layout.comms.bcast_object(_assemble_root(layout, local))


class _Replicas:
    """The ``group`` :mod:`mpiml.train.checkpointing` sees: one member per row group (replica).

    ``local``/``oneshot`` checkpoints hold one row per replica, as data-parallel ones hold one
    per rank; ``gather_root`` assembles each row group's whole model from its blocks.
    """

    def __init__(self, layout, rank: int, size: int):
        self.layout, self.rank, self.size = layout, rank, size
        self.reader = layout.comms.rank == 0  # reads checkpoints for the whole grid (and warns, once)

    def gather_root(self, local):
        layout, comms = self.layout, self.layout.comms
        pieces = comms.gather_object((comms.row, layout.index, local))
        if pieces is None:
            return None
        whole_rows = local.shape == layout.index.shape
        out = np.zeros((comms.rows, layout.model.n_params if whole_rows else local.shape[0]))
        for row, index, values in pieces:
            if whole_rows:
                out[row, index] = values
            else:
                out[row] = values
        return out

    def bcast_object(self, obj):
        return self.layout.comms.bcast_object(obj)

    def agree(self, error):
        self.layout.comms.agree(error)


def _view(run, theta, state, group):
    """What :mod:`mpiml.train.checkpointing` reads of a run: the whole model(s) of the whole grid."""
    return SimpleNamespace(group=group, per_replica=run.strategy.averaged, cfg=run.cfg, model=run.model,
                           n_total=run.n_total, checkpoint_dir=run.checkpoint_dir, epoch=run.epoch, step=run.step,
                           t=run.t, history=run.history, diverged=run.diverged,
                           last_checkpoint=run.last_checkpoint, theta=theta, opt=SimpleNamespace(state=state))


def save_state(layout, run) -> str | None:
    """Write the whole model(s) and optimizer state of ``run``; returns the file name on every rank."""
    comms = layout.comms
    if run.strategy.averaged and comms.rows > 1:
        # one row per replica (row group), like one row per rank of a data-parallel local run
        return checkpointing.save_state(_view(run, run.theta, dict(run.opt.state),
                                              _Replicas(layout, comms.rank, comms.rows)))
    empty = np.zeros(0)
    theta = _assemble_root(layout, run.theta)
    state = {key: _assemble_root(layout, value) for key, value in run.opt.state.items()}
    if comms.rank != 0:  # only rank 0's arrays are written
        theta, state = empty, {key: empty for key in state}
    # sync/lbfgs: the job's rank count in the manifest; local/oneshot on one replica: a single model
    size = 1 if run.strategy.averaged else comms.size
    return checkpointing.save_state(_view(run, theta, state, _Replicas(layout, comms.rank, size)))


def load_state(layout, run) -> int | None:
    """Restore ``run`` (its blocks) from the latest checkpoint, if any; returns its update count.

    The replica (row group) ``r`` takes row ``r`` of a checkpoint written with as many replicas,
    the average of the rows otherwise, as :mod:`mpiml.train.checkpointing` does for ranks.
    """
    comms = layout.comms
    view = _view(run, None, dict(run.opt.state), _Replicas(layout, comms.row, comms.rows))
    updates = checkpointing.load_state(view)
    if updates is None:
        return None
    n = run.model.n_params
    run.theta = view.theta[layout.index].copy()
    for key, value in view.opt.state.items():
        run.opt.state[key] = value[layout.index].copy() if value.shape == (n,) else value.copy()
    run.t, run.epoch, run.step = view.t, view.epoch, view.step
    run.history, run.last_checkpoint = view.history, view.last_checkpoint
    return updates
