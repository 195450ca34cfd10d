"""Distributed matrix factorization: explicit ALS-WR, implicit ALS, DSGD (see estimator)."""

from mpiml.mf.estimator import COLD_START, FactorModel
from mpiml.mf.models import ALS, DSGD, ImplicitALS
from mpiml.mf.registry import MODELS

__all__ = ["ALS", "COLD_START", "DSGD", "MODELS", "FactorModel", "ImplicitALS"]
