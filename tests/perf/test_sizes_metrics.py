"""Size parsing and the nccl-tests bandwidth definitions (serial)."""

from __future__ import annotations

import pytest

from mpiml.perf.metrics import algbw_gbps, bus_factor, busbw_gbps
from mpiml.perf.sizes import format_bytes, parse_size, parse_sizes
from mpiml.errors import ArgumentError


@pytest.mark.parametrize("text,expected", [("8", 8), ("64K", 65536), ("4m", 4 << 20), ("1G", 1 << 30),
                                           ("3KiB", 3072), ("10B", 10)])
def test_parse_size(text, expected):
    assert parse_size(text) == expected


def test_parse_sizes_range_list_and_factor():
    assert parse_sizes("8:64") == [8, 16, 32, 64]
    assert parse_sizes("8:256M")[-1] == 256 << 20 and len(parse_sizes("8:256M")) == 26
    assert parse_sizes("1K:1M:32") == [1024, 32768, 1 << 20]
    assert parse_sizes("100,8:16,100") == [8, 16, 100]


@pytest.mark.parametrize("bad, message", [("", "bad size ''"), ("x", "bad size 'x'"), ("8:4", "bad size range '8:4'"),
                                          ("8:64:1", "FACTOR >= 2"), ("8:64:z", "bad factor in '8:64:z'"),
                                          ("1:2:3:4", "expected FROM:TO or FROM:TO:FACTOR"), ("-8", "bad size '-8'")])
def test_parse_sizes_refuses_nonsense(bad, message):
    with pytest.raises(ArgumentError, match=message):
        parse_sizes(bad)


def test_format_bytes_round_trips():
    for size in (8, 1000, 1024, 3 << 20, 5 << 30, 1536):
        assert parse_size(format_bytes(size)) == size


def test_bus_factors_are_the_nccl_tests_ones():
    # PERFORMANCE.md of nccl-tests: allreduce 2(n-1)/n, reduce_scatter/allgather (n-1)/n, bcast/reduce 1.
    assert bus_factor("allreduce", 4) == pytest.approx(1.5)
    assert bus_factor("reduce_scatter", 4) == pytest.approx(0.75)
    assert bus_factor("allgather", 8) == pytest.approx(7 / 8)
    assert bus_factor("bcast", 5) == bus_factor("reduce", 5) == 1.0
    assert bus_factor("allreduce", 1) == 0.0
    assert algbw_gbps(2e9, 2.0) == pytest.approx(1.0)
    assert busbw_gbps("allreduce", 10**9, 1.0, 2) == pytest.approx(1.0)


def test_memory_roof_does_the_work_the_collective_cannot_avoid(monkeypatch):
    import numpy as np
    from mpi4py import MPI

    from mpiml.perf import roof

    calls = []
    monkeypatch.setattr(np, "add", lambda a, b, out: calls.append(("add", a.size, b.size, out.size)))
    monkeypatch.setattr(np, "copyto", lambda dst, src: calls.append(("copy", dst.size)))
    for collective, expected in [("allreduce", [("add", 250, 250, 250)] * 3 + [("copy", 1000)]),
                                 ("reduce_scatter", [("add", 250, 250, 250)] * 3), ("reduce", [("add", 250, 250, 250)] * 3),
                                 ("allgather", [("copy", 1000)]), ("bcast", [("copy", 1000)])]:
        calls.clear()
        for work in roof.roof_parts(collective, 4000, "float32", 4):   # 1000 elements, a quarter each
            work()
        assert calls == expected, collective
    monkeypatch.undo()
    assert roof.roof_seconds("allreduce", 1 << 16, "float64", MPI.COMM_SELF, calls=2) > 0
    with pytest.raises(ValueError, match="no memory roof"):
        roof.roof_parts("alltoall", 8, "float32", 2)
