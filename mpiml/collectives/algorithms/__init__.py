"""The algorithms, one module each; every module registers its own (see
:mod:`mpiml.collectives.registry`).

The built-in modules are imported first, in a fixed order, which is the order of
``ALGORITHMS[collective]`` and breaks the model's ties (``native`` first; ``ring``
before ``rabenseifner``, which the model prices the same at two ranks). Any other module
placed in this package is imported after them, in name order, so a new algorithm is one
file here and needs no edit anywhere else.
"""

from __future__ import annotations

import importlib
import pkgutil

BUILT_IN = ("native", "ring", "doubling", "rabenseifner", "tree", "pipeline")


def import_modules(package: str, path, first=()) -> None:
    """Import the modules ``first`` of ``package`` in that order, then all its others by name."""
    others = sorted(info.name for info in pkgutil.iter_modules(path) if info.name not in first)
    for name in (*first, *others):
        importlib.import_module(f"{package}.{name}")


import_modules(__name__, __path__, BUILT_IN)
