"""The checkpoint format of a training run (rank 0 writes, all ranks read), on whole models.

A checkpoint holds the parameters and optimizer state as arrays with one row per model:
one row for ``sync``/``lbfgs`` (every replica holds the same model), one row per replica
for ``local``/``oneshot`` (each replica's own local model; a replica is a rank of a
data-parallel run, a row group of a grid). Random state is never stored: the batches of
every update are recomputed from ``seed``, ``epoch`` and the update number.

Resuming with as many replicas continues bitwise. With another number, ``sync``
continues the same trajectory (its batches do not depend on p), and ``local``/``oneshot``
start every replica from the average of the saved local models (and optimizer states),
at the same fraction of the interrupted epoch.

Every checkpoint carries the fingerprint of the run (:mod:`mpiml.runtime.fingerprint`):
the model, its parameter count, the training rows, every training setting except those a
resumed run may change (:data:`MAY_CHANGE`), and, under :func:`mpiml.runtime.checkpoint_dir.session`,
the estimator's options and a content hash of the data. Resuming with any other value is
a :class:`CheckpointError` naming each difference.

The functions read a *view* of the run: ``group`` (the replicas: ``rank``, ``size``,
``gather_root``, ``bcast_object``, ``agree``), ``per_replica``, ``theta``, ``opt.state``,
``model``, ``cfg``, ``n_total``, ``epoch``, ``step``, ``t``, ``history``,
``checkpoint_dir``, ``last_checkpoint`` and ``diverged``; :mod:`mpiml.parallel.checkpoint`
assembles the whole model from the blocks of a grid into one.
"""

from __future__ import annotations

import numpy as np

from mpiml.errors import CheckpointError
from mpiml.runtime.checkpoint import read_checkpoint, write_checkpoint
from mpiml.runtime.checkpoint_dir import fingerprint_of, root_verdict
from mpiml.train import plan

# Settings a resumed run may change: how much further to train (epochs; not with the cosine
# schedule, whose rate depends on the total) and how often to checkpoint. The rank count,
# layout, allreduce algorithm and output options may change too (they are not settings).
MAY_CHANGE = ("epochs", "checkpoint_every")


def run_fingerprint(view) -> dict:
    """The fingerprint of the run ``view`` describes (its settings; the session's data hash, if any)."""
    cfg = view.cfg.as_dict()
    settings = {"model": view.model.name, "n_params": int(view.model.n_params)}
    settings.update({k: v for k, v in cfg.items()
                     if k not in MAY_CHANGE or (k == "epochs" and cfg.get("schedule") == "cosine")})
    outer = fingerprint_of(view.checkpoint_dir)
    settings.update(outer.get("settings", {}))
    return {"command": outer.get("command", "sgd"), "settings": settings,
            "data": outer.get("data", {"rows": int(view.n_total)})}


def _one_per_replica(view) -> bool:
    return view.per_replica and view.group.size > 1


def save_state(view) -> str | None:
    """Write the state of ``view``; returns the file name (on every rank)."""
    arrays = {"theta": view.theta, **{f"opt_{k}": v for k, v in view.opt.state.items()}}
    if _one_per_replica(view):
        arrays = {k: view.group.gather_root(v) for k, v in arrays.items()}
    else:
        arrays = {k: np.asarray(v)[None] for k, v in arrays.items()}
    error = name = None
    if view.group.rank == 0 and not all(np.isfinite(v).all() for v in arrays.values()):
        error = view.diverged("the model")  # never replace a good checkpoint with a broken one
    elif view.group.rank == 0:
        meta = {"epoch": view.epoch, "step_in_epoch": view.step, "updates": view.t, "ranks": view.group.size,
                "model": view.model.name, "n_params": view.model.n_params, "n_total": view.n_total,
                "history": view.history, "config": view.cfg.as_dict(), "fingerprint": run_fingerprint(view)}
        try:
            name = write_checkpoint(view.checkpoint_dir, view.t, arrays, meta).name
        except CheckpointError as exc:
            error = exc
    root_verdict(error, bcast=view.group.bcast_object)
    return view.group.bcast_object(name)


def _pick(rows: np.ndarray, rank: int, same_p: bool) -> np.ndarray:
    if rows.shape[0] == 1:
        return rows[0].copy()
    if same_p:
        return rows[rank].copy()
    return rows.mean(axis=0)


def _complete(view):
    """``check(arrays, meta)`` for :func:`read_checkpoint`: the keys, shapes and counters ``view`` needs."""
    def check(arrays, meta):
        for key in ("epoch", "step_in_epoch", "updates", "ranks"):
            if not isinstance(meta.get(key), int) or meta[key] < 0:
                raise CheckpointError(f"its meta has no valid {key!r}")
        if not isinstance(meta.get("history", []), list):
            raise CheckpointError("its meta has no valid 'history'")
        rows = None
        for key in ["theta", *(f"opt_{k}" for k in view.opt.state)]:
            value = arrays.get(key)
            if value is None:
                raise CheckpointError(f"it has no array {key!r}")
            if value.ndim < 1 or value.shape[0] not in (1, meta["ranks"]) or (rows or value.shape[0]) != \
                    value.shape[0] or not np.issubdtype(value.dtype, np.number):
                raise CheckpointError(f"its array {key!r} has the wrong shape {value.shape} or type {value.dtype}")
            rows = value.shape[0]
        if arrays["theta"].shape[1:] != (view.model.n_params,):
            raise CheckpointError(f"its model has {arrays['theta'].shape[1:]} parameters, this run "
                                  f"{view.model.n_params}")
    return check


def load_state(view) -> int | None:
    """Restore ``view`` from the latest checkpoint, if any; returns its update count."""
    found = error = None
    if getattr(view.group, "reader", view.group.rank == 0):
        try:
            found = read_checkpoint(view.checkpoint_dir, _complete(view), run_fingerprint(view))
        except CheckpointError as exc:
            error = exc
    root_verdict(error, bcast=view.group.bcast_object)
    found = view.group.bcast_object(found)
    if found is None:
        return None
    arrays, meta = found
    same_p = meta["ranks"] == view.group.size
    view.theta = _pick(arrays["theta"], view.group.rank, same_p)
    for key in view.opt.state:
        view.opt.state[key] = _pick(arrays[f"opt_{key}"], view.group.rank, same_p)
    view.t, view.epoch, view.step = meta["updates"], meta["epoch"], meta["step_in_epoch"]
    view.history = list(meta.get("history", []))
    if not same_p and view.step and view.per_replica:
        rows = view.cfg.batch_size * view.cfg.accumulate
        old = plan.local_steps(view.n_total, meta["ranks"], rows)
        view.step = view.step * plan.local_steps(view.n_total, view.group.size, rows) // old
    view.last_checkpoint = meta.get("latest")
    return view.t
