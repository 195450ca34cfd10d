"""Layouts of linear-model training over the ranks: data, model and hybrid parallelism.

Layers: :mod:`grid` (``R x C`` row and column groups, injected reductions; ``p x 1`` is
data parallelism), :mod:`layout` (which block of the model a grid column owns),
:mod:`margins` (the pure math of partial margins and the split softmax), :mod:`trainer`
(:class:`GridLayout`: what the training loop of :mod:`mpiml.train` asks of a rank of a
grid), :mod:`lbfgs` (the full-batch objective L-BFGS minimizes on a grid), :mod:`checkpoint`
(whole-model checkpoints), :mod:`cost` (bytes and seconds per SGD step or L-BFGS
iteration of each layout, for ``--parallel auto``) and :mod:`run` (which layout trains).
"""

from mpiml.parallel.grid import GridComms, factorizations, parse_grid
from mpiml.parallel.layout import SPLITS, Part, make_part
from mpiml.parallel.run import choose_layout, plan
from mpiml.parallel.trainer import GridLayout, data_parallel, train_grid

__all__ = ["GridComms", "GridLayout", "Part", "SPLITS", "choose_layout", "data_parallel", "factorizations",
           "make_part", "parse_grid", "plan", "train_grid"]
