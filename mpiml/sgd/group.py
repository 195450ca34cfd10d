"""Moved to :mod:`mpiml.train.group` (kept so ``from mpiml.sgd.group import Group`` still works)."""

from mpiml.train.group import Group

__all__ = ["Group"]
