"""Measuring the collectives: the benchmark harness, calibration of the cost model
(``mpiml tune``) and its extrapolation to many ranks (``mpiml model``).

This package imports :mod:`mpiml.collectives`; the collectives never import it.
"""
