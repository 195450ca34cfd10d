"""Model and hybrid parallelism for linear models: features or classes split over grid columns.

Layers: :mod:`grid` (``R x C`` row and column groups, injected reductions),
:mod:`layout` (which block of the model a grid column owns), :mod:`margins` (the pure
math of partial margins and the split softmax), :mod:`lbfgs_math` (L-BFGS over split
blocks, pure), :mod:`trainer` (SGD on the grid) and :mod:`lbfgs` (full-batch L-BFGS on
the grid), :mod:`checkpoint` (whole-model checkpoints), :mod:`cost` (bytes and seconds per
SGD step or L-BFGS iteration of each layout, for ``--parallel auto``) and :mod:`run` (the
``mpiml sgd --parallel`` glue, on plain values).
"""

from mpiml.parallel.grid import GridComms, factorizations, parse_grid
from mpiml.parallel.layout import SPLITS, Part, make_part
from mpiml.parallel.run import fit_grid
from mpiml.parallel.trainer import train_grid

__all__ = ["GridComms", "Part", "SPLITS", "factorizations", "fit_grid", "make_part", "parse_grid", "train_grid"]
