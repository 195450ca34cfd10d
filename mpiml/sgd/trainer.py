"""Data-parallel training: the loop of :mod:`mpiml.train` on the ``p x 1`` layout (every rank the whole model)."""

from __future__ import annotations

from mpiml.parallel.trainer import data_parallel
from mpiml.train import loop
from mpiml.train.config import TrainConfig


def train(model, X, y, config: TrainConfig, group, test=None, checkpoint_dir=None, resume=False,
          stop_at_update=None, progress=None, stop_requested=None) -> loop.TrainResult:
    """Train ``model`` on this rank's shard ``(X, y)`` with the ranks of ``group``.

    Parameters
    ----------
    model : Model
        From :func:`mpiml.sgd.models.make_model`; ``y`` already encoded by it.
    X, y : array or CSR matrix, numpy.ndarray
        This rank's rows; shards are taken to be consecutive blocks of the global data in
        rank order (that fixes the global row numbering that ``sync`` batches use).
    config : TrainConfig
        Strategy ``auto`` is resolved by :func:`mpiml.train.config.resolve_strategy`.
    group : Group
        Rank, size and the injected allreduce (``Group.serial()``: p = 1 without MPI).
    test, checkpoint_dir, resume, stop_at_update, progress, stop_requested
        As in :func:`mpiml.train.loop.train`.

    Returns
    -------
    TrainResult
    """
    return loop.train(data_parallel(model, group), X, y, config, test, checkpoint_dir, resume, stop_at_update,
                      progress, stop_requested)
