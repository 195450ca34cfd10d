"""Operator resolution, dtype checks and the "auto" rule (serial)."""

from __future__ import annotations

import numpy as np
import pytest

import mpiml
from mpiml import ArgumentError
from mpiml.collectives import registry, select
from mpiml.collectives.ops import check_dtype, resolve_op


@pytest.mark.parametrize("spec, name", [("sum", "sum"), ("SUM", "sum"), (np.add, "sum"), ("prod", "prod"),
                                        (np.multiply, "prod"), ("min", "min"), (np.maximum, "max")])
def test_names_and_ufuncs_resolve_to_the_same_op(spec, name):
    op = resolve_op(spec)
    assert op.label == name and op.commutative


def test_unknown_ufuncs_are_treated_as_non_commutative():
    assert not resolve_op(np.subtract).commutative
    assert resolve_op(np.bitwise_xor).commutative


@pytest.mark.parametrize("bad, message", [("median", "unknown op 'median'"), (3, "op must be a name"),
                                          (np.sqrt, "not a binary reduction"), (None, "op must be a name")])
def test_bad_ops_are_refused(bad, message):
    with pytest.raises(ArgumentError, match=message):
        resolve_op(bad)


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64", "int32", "int64", "uint8", "complex64",
                                   "complex128", "int8", "uint64"])
def test_numeric_dtypes_are_accepted(dtype):
    assert check_dtype(dtype) == np.dtype(dtype)


@pytest.mark.parametrize("dtype", ["bool", "U3", "S2", "O", "M8[s]", [("a", "f8")]])
def test_non_numeric_dtypes_are_refused(dtype):
    with pytest.raises(ArgumentError, match="not numeric"):
        check_dtype(dtype)


def test_min_max_refused_for_complex():
    with pytest.raises(ArgumentError, match="complex"):
        check_dtype("complex64", resolve_op("max"))


def test_every_named_algorithm_is_accepted_and_unknown_names_are_not():
    for collective, names in mpiml.ALGORITHMS.items():
        for name in names:
            assert select.choose(collective, name, 1024, 4) == name
        with pytest.raises(ArgumentError, match=f"unknown {collective} algorithm 'nope'"):
            select.choose(collective, "nope", 1024, 4)


def test_auto_always_returns_a_known_algorithm_that_suits_the_operator():
    for collective, names in mpiml.ALGORITHMS.items():
        for nbytes in (0, 8, 1 << 10, 1 << 16, 1 << 20, 1 << 26):
            for size in (1, 2, 3, 5, 8, 64, 1000):
                for commutative in (True, False):
                    chosen = select.choose(collective, "auto", nbytes, size, commutative)
                    assert chosen in names
                    if not commutative:
                        assert not registry.get(collective, chosen).commutative_only
