"""Distributed matrix factorization: explicit ALS-WR, implicit ALS, DSGD, NOMAD (see estimator).

Their parameters are declared once, in :mod:`mpiml.mf.params`.
"""

from mpiml.mf import params
from mpiml.mf.estimator import FactorModel
from mpiml.mf.models import ALS, DSGD, NOMAD, ImplicitALS
from mpiml.mf.params import COLD_START
from mpiml.mf.registry import MODELS

__all__ = ["ALS", "COLD_START", "DSGD", "MODELS", "FactorModel", "ImplicitALS", "NOMAD", "params"]
