"""Trainer state to and from :mod:`mpiml.runtime.checkpoint` (rank 0 writes, all ranks read).

A checkpoint holds the parameters and optimizer state as arrays with one row per model:
one row for ``sync``/``lbfgs`` (every rank holds the same model), one row per rank for
``local``/``oneshot`` (each rank's own local model). Random state is never stored: the
batches of every update are recomputed from ``seed``, ``epoch`` and the update number.

Resuming at the same rank count continues bitwise. At a different rank count, ``sync``
continues the same trajectory (its batches do not depend on p), and ``local``/``oneshot``
start every rank from the average of the saved local models (and optimizer states), at
the same fraction of the interrupted epoch.
"""

from __future__ import annotations

import numpy as np

from mpiml.runtime.checkpoint import read_checkpoint, write_checkpoint
from mpiml.runtime.errors import CheckpointError

_PER_RANK = ("local", "oneshot")


def _per_rank(run) -> bool:
    return run.cfg.strategy in _PER_RANK and run.group.size > 1


def save_state(run) -> str | None:
    """Write the state of ``run``; returns the file name (on every rank)."""
    arrays = {"theta": run.theta, **{f"opt_{k}": v for k, v in run.opt.state.items()}}
    if _per_rank(run):
        arrays = {k: run.group.gather_root(v) for k, v in arrays.items()}
    else:
        arrays = {k: np.asarray(v)[None] for k, v in arrays.items()}
    error = name = None
    if run.group.rank == 0 and not all(np.isfinite(v).all() for v in arrays.values()):
        error = run.diverged("the model")  # never replace a good checkpoint with a broken one
    elif run.group.rank == 0:
        meta = {"epoch": run.epoch, "step_in_epoch": run.step, "updates": run.t, "ranks": run.group.size,
                "model": run.model.name, "n_params": run.model.n_params, "n_total": run.n_total,
                "history": run.history, "config": run.cfg.as_dict()}
        try:
            name = write_checkpoint(run.checkpoint_dir, run.t, arrays, meta).name
        except CheckpointError as exc:
            error = exc
    run.group.agree(error)
    return run.group.bcast_object(name)


def _pick(rows: np.ndarray, rank: int, same_p: bool) -> np.ndarray:
    if rows.shape[0] == 1:
        return rows[0].copy()
    if same_p:
        return rows[rank].copy()
    return rows.mean(axis=0)


def load_state(run) -> int | None:
    """Restore ``run`` from the latest checkpoint, if any; returns its update count."""
    found = error = None
    if run.group.rank == 0:
        try:
            found = read_checkpoint(run.checkpoint_dir)
            if found is not None:
                _check(found[1], run)
        except CheckpointError as exc:
            error = exc
    run.group.agree(error)
    found = run.group.bcast_object(found)
    if found is None:
        return None
    arrays, meta = found
    same_p = meta["ranks"] == run.group.size
    run.theta = _pick(arrays["theta"], run.group.rank, same_p)
    for key in run.opt.state:
        run.opt.state[key] = _pick(arrays[f"opt_{key}"], run.group.rank, same_p)
    run.t, run.epoch, run.step = meta["updates"], meta["epoch"], meta["step_in_epoch"]
    run.history = list(meta.get("history", []))
    if not same_p and run.step and run.cfg.strategy in _PER_RANK:
        from mpiml.sgd import plan

        rows = run.cfg.batch_size * run.cfg.accumulate
        old = plan.local_steps(run.n_total, meta["ranks"], rows)
        run.step = run.step * plan.local_steps(run.n_total, run.group.size, rows) // old
    run.last_checkpoint = meta.get("latest")
    return run.t


def _check(meta: dict, run) -> None:
    for key, mine in (("model", run.model.name), ("n_params", run.model.n_params),
                      ("n_total", run.n_total)):
        if meta.get(key) != mine:
            raise CheckpointError(f"checkpoint in {run.checkpoint_dir} is for {key}={meta.get(key)!r}, "
                                  f"this run has {mine!r}; use another --checkpoint-dir")
    saved = meta.get("config", {}).get("strategy")
    if saved != run.cfg.strategy:
        raise CheckpointError(f"checkpoint in {run.checkpoint_dir} was written by strategy {saved!r}, "
                              f"this run uses {run.cfg.strategy!r}")
