"""Distributed SGD and L-BFGS for linear models, driven by mpiml's collectives.

Layers: :mod:`models` (pure loss/gradient/prediction), :mod:`optim` (optimizers and
schedules), :mod:`plan` (which rows each update uses), :mod:`trainer` (strategies,
metrics, checkpoints) and :mod:`estimator` (the scikit-learn style API).
"""

from mpiml.sgd.config import STRATEGIES, TrainConfig
from mpiml.sgd.estimator import LinearModel
from mpiml.sgd.group import Group
from mpiml.sgd.models import MODELS, make_model
from mpiml.sgd.trainer import TrainResult, train

__all__ = ["LinearModel", "Group", "MODELS", "STRATEGIES", "TrainConfig", "TrainResult", "make_model", "train"]
