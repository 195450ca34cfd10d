"""Checkpoints of grid runs hold the *whole* model, in the data-parallel trainer's format.

Rank 0 assembles ``theta`` and every optimizer state from the blocks of row group 0
(the other row groups hold copies) and writes them as one-row arrays with the manifest
fields of :mod:`mpiml.sgd.checkpointing` (``epoch``, ``step_in_epoch``, ``updates``,
``model``, ``n_params``, ``n_total``, ``config``, ...) plus ``layout``. So a checkpoint
written under any grid, split or rank count resumes under any other, and under the
data-parallel ``sync`` trainer, and the other way round: the batches of ``sync`` do not
depend on the layout, so the resumed run continues the same trajectory.
"""

from __future__ import annotations

import numpy as np

from mpiml.runtime.checkpoint import read_checkpoint, write_checkpoint
from mpiml.runtime.errors import CheckpointError
from mpiml.sgd.checkpointing import _check  # the same compatibility rules as data-parallel runs


def whole(run, local: np.ndarray) -> np.ndarray:
    """The whole vector of which ``local`` is this rank's block (same shape as theta), on every rank."""
    return run.comms.bcast_object(_assemble_root(run, local))


def _assemble_root(run, local):
    """The whole vector of the blocks ``local`` of row group 0, on rank 0 only (None elsewhere)."""
    if local.shape != run.index.shape:
        return np.array(local, copy=True)
    pieces = run.comms.gather_object((run.index, local) if run.comms.row == 0 else None)
    if pieces is None:
        return None
    full = np.zeros(run.model.n_params)
    for piece in pieces:
        if piece is not None:
            full[piece[0]] = piece[1]
    return full


def save_state(run) -> str | None:
    """Write the whole model and optimizer state of ``run``; returns the file name on every rank."""
    arrays = {"theta": _assemble_root(run, run.theta)}
    for key, value in run.opt.state.items():
        arrays[f"opt_{key}"] = _assemble_root(run, value)
    error = name = None
    if run.comms.rank == 0:
        arrays = {k: np.asarray(v)[None] for k, v in arrays.items()}
        if not all(np.isfinite(v).all() for v in arrays.values()):
            error = run.diverged("the model")  # never replace a good checkpoint with a broken one
        else:
            meta = {"epoch": run.epoch, "step_in_epoch": run.step, "updates": run.t, "ranks": run.comms.size,
                    "model": run.model.name, "n_params": run.model.n_params, "n_total": run.n_total,
                    "history": run.history, "config": run.cfg.as_dict(), "layout": run.layout}
            try:
                name = write_checkpoint(run.checkpoint_dir, run.t, arrays, meta).name
            except CheckpointError as exc:
                error = exc
    run.comms.agree(error)
    return run.comms.bcast_object(name)


def load_state(run) -> int | None:
    """Restore ``run`` from the latest checkpoint in its directory, if any; returns its update count."""
    found = error = None
    if run.comms.rank == 0:
        try:
            found = read_checkpoint(run.checkpoint_dir)
            if found is not None:
                _check(found[1], run)
        except CheckpointError as exc:
            error = exc
    run.comms.agree(error)
    found = run.comms.bcast_object(found)
    if found is None:
        return None
    arrays, meta = found
    run.theta = _mine(arrays["theta"], run)
    for key in run.opt.state:
        run.opt.state[key] = _mine(arrays[f"opt_{key}"], run)
    run.t, run.epoch, run.step = meta["updates"], meta["epoch"], meta["step_in_epoch"]
    run.history = list(meta.get("history", []))
    run.last_checkpoint = meta.get("latest")
    return run.t


def _mine(rows: np.ndarray, run) -> np.ndarray:
    full = rows.mean(axis=0) if rows.shape[0] > 1 else rows[0]
    if full.shape[0] != run.model.n_params:
        return np.array(full, copy=True)
    return full[run.index].copy()
