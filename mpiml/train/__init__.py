"""The one training loop of mpiml's linear models, for every layout of the ranks.

Layers: :mod:`config` (the settings' field table, validation, ``auto``), :mod:`plan`
(which rows each update uses), :mod:`optim` (optimizers, schedules, the elastic net),
:mod:`timing` (compute / communication / wait, stop votes), :mod:`group` (the injected
collectives), :mod:`checkpointing` (the checkpoint format), :mod:`lbfgs_math` (L-BFGS over
split parameter blocks, pure), :mod:`loop` (a run's state and shared steps, :func:`train`)
and :mod:`strategies` (sync, local, oneshot, lbfgs). Layouts (what a rank holds and how it
reduces) come from :mod:`mpiml.parallel`; models from :mod:`mpiml.sgd`. Nothing here
imports either.
"""

from mpiml.train.config import STRATEGIES, TrainConfig
from mpiml.train.group import Group
from mpiml.train.loop import TrainResult, train
from mpiml.train.strategies import STRATEGY_CLASSES, make_strategy

__all__ = ["Group", "STRATEGIES", "STRATEGY_CLASSES", "TrainConfig", "TrainResult", "make_strategy", "train"]
