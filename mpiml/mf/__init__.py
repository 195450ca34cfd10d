"""Distributed matrix factorization: explicit ALS-WR, implicit ALS, DSGD (see estimator)."""

from mpiml.mf.estimator import ALS, COLD_START, DSGD, MODELS, FactorModel, ImplicitALS

__all__ = ["ALS", "COLD_START", "DSGD", "MODELS", "FactorModel", "ImplicitALS"]
