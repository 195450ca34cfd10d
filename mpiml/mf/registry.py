"""The algorithm name -> model class table, filled by :mod:`mpiml.mf.models` as it defines them.

It lives apart so that the estimator (which loads saved models by algorithm name) and
the models (which subclass the estimator) both import it without importing each other;
importing any of ``mpiml.mf`` runs the package ``__init__``, which imports the models.
"""

from __future__ import annotations

MODELS: dict = {}


def register(cls):
    """Class decorator: make ``cls`` loadable under ``cls.algorithm``."""
    MODELS[cls.algorithm] = cls
    return cls

