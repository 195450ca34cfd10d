"""Linear models and their scikit-learn style estimator, trained by distributed SGD or L-BFGS.

Layers: :mod:`models` (pure loss/gradient/prediction; :mod:`kernels` compiled),
:mod:`scaling` (standardization over all ranks), :mod:`trainer` (data-parallel training)
and :mod:`estimator` (:class:`LinearModel`, any layout). The training loop, strategies,
optimizers and settings are in :mod:`mpiml.train`; grids (model and hybrid parallelism) in
:mod:`mpiml.parallel`.
"""

from mpiml.sgd.estimator import LinearModel
from mpiml.sgd.models import MODELS, make_model
from mpiml.sgd.trainer import train
from mpiml.train.config import STRATEGIES, TrainConfig
from mpiml.train.group import Group
from mpiml.train.loop import TrainResult

__all__ = ["LinearModel", "Group", "MODELS", "STRATEGIES", "TrainConfig", "TrainResult", "make_model", "train"]
