"""Straggler injection: the spec parser and the sleep accounting (no MPI, no real sleeps)."""

import pytest

from mpiml.errors import ArgumentError
from mpiml.runtime import stragglers


def test_parse_reads_rank_factor_pairs():
    assert stragglers.parse("") == {}
    assert stragglers.parse(" ") == {}
    assert stragglers.parse("3:2") == {3: 2.0}
    assert stragglers.parse("0:4, 2:1.5,") == {0: 4.0, 2: 1.5}
    assert stragglers.from_env({"MPIML_SLOW_RANKS": "1:3"}) == {1: 3.0}
    assert stragglers.from_env({}) == {}


@pytest.mark.parametrize("spec, bad", [("3", "'3'"), ("a:2", "'a:2'"), ("1:x", "'1:x'"), ("1:0.5", "'1:0.5'"),
                                       ("-1:2", "'-1:2'"), ("1:2,1:3", "'1:3'"), ("1:nan", "'1:nan'"),
                                       ("0:2,2", "'2'")])
def test_parse_names_the_bad_part(spec, bad):
    with pytest.raises(ArgumentError, match=bad):
        stragglers.parse(spec)


class FakeTime:
    """A clock that a sleep advances by what was asked plus a fixed overshoot."""

    def __init__(self, overshoot=0.0):
        self.now, self.overshoot, self.sleeps = 0.0, overshoot, []

    def clock(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds + self.overshoot


@pytest.mark.parametrize("factor, overshoot", [(2.0, 0.0), (4.0, 0.0), (2.0, 2e-4), (1.5, 5e-4)])
def test_slowdown_sleeps_factor_minus_one_times_the_work(factor, overshoot):
    t = FakeTime(overshoot)
    slow = stragglers.Slowdown(factor, sleep=t.sleep, clock=t.clock)
    work = [1e-4, 3e-3, 2e-5, 7e-4, 1e-2] * 20
    slept = sum(slow.after(w) for w in work)
    owed = (factor - 1) * sum(work)
    assert slept == pytest.approx(slow.slept)
    assert abs(slept - owed) <= stragglers.GRANULE + overshoot   # within one granule (plus one overshoot)
    assert all(s >= stragglers.GRANULE - 1e-12 or s < 0 for s in t.sleeps)   # no tiny sleeps


def test_no_slowdown_never_sleeps():
    t = FakeTime()
    slow = stragglers.Slowdown(1.0, sleep=t.sleep, clock=t.clock)
    assert slow.after(1.0) == 0.0 and not t.sleeps
    with pytest.raises(ArgumentError):
        stragglers.Slowdown(0.5)


def test_install_overrides_the_environment(monkeypatch):
    monkeypatch.setenv("MPIML_SLOW_RANKS", "1:2")
    try:
        assert stragglers.factor(1) == 2.0 and stragglers.factor(0) == 1.0
        stragglers.install("0:3")
        assert stragglers.factors() == {0: 3.0}
        assert stragglers.Slowdown.for_rank(0).factor == 3.0
        assert stragglers.slow(1, 1.0) == 0.0   # rank 1 is not slowed under the installed spec
    finally:
        stragglers.install(None)
    assert stragglers.factors() == {1: 2.0}
