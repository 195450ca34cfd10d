"""Progress bar behaviour and the compute / communication / wait accounting (no MPI)."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest

from mpiml.train.group import Group
from mpiml.train.progress import Progress
from mpiml.train.timing import Exchanger, Timings


class Tty(io.StringIO):
    def isatty(self):
        return True


def test_progress_is_silent_when_not_a_terminal_but_still_reports_epochs():
    stream, seen = io.StringIO(), []
    bar = Progress(3, stream=stream, on_epoch=seen.append)
    bar.update(0, 5, 10, 0.5)
    bar.epoch({"epoch": 1})
    assert stream.getvalue() == "" and seen == [{"epoch": 1}]


def test_progress_draws_on_a_terminal_and_clears_before_epoch_lines():
    stream = Tty()
    bar = Progress(3, stream=stream)
    bar.update(1, 10, 10, 0.25)
    assert "epoch 2/3" in stream.getvalue() and "10/10" in stream.getvalue() and "0.25" in stream.getvalue()
    bar.epoch({"epoch": 2})
    assert stream.getvalue().endswith("\r")


def test_wait_is_the_slowest_ranks_extra_compute_and_comm_the_rest():
    """Rank 0 of a pretend pair: the other rank computed 0.3 s, this one 0.1 s."""
    def fake_allreduce(buf, out):
        time.sleep(0.25)  # blocked in the collective for the other rank (plus transfer)
        out[-2 + 1] += 0.3  # the other rank's compute slot
        out[:-3] += 1.0  # its payload
        return out

    timings = Timings()
    ex = Exchanger(Group(rank=0, size=2, allreduce=fake_allreduce), timings)
    ex.add_compute(0.1)
    buf = ex.buffer(4)
    payload = ex.allreduce(buf)
    np.testing.assert_array_equal(payload, np.ones(4))
    assert timings.compute == pytest.approx(0.1)
    assert timings.wait == pytest.approx(0.2)
    assert timings.comm == pytest.approx(0.05, abs=0.04)
    assert not ex.stop_agreed


def test_one_stop_vote_stops_everyone():
    def other_rank_votes(buf, out):
        out[-3] += 1.0  # the stop slot, as the other rank sets it
        return out

    ex = Exchanger(Group(rank=0, size=2, allreduce=other_rank_votes), Timings(), stop_requested=lambda: False)
    ex.allreduce(ex.buffer(3))
    assert ex.stop_agreed


def test_a_vote_passed_in_is_sent_instead_of_this_ranks_own():
    """A grid passes the sum of its row group's votes: that sum, not this rank's flag, goes out."""
    sent = []

    def record(buf, out):
        sent.append(buf[-3])
        return out

    ex = Exchanger(Group(rank=0, size=2, allreduce=record), Timings(), stop_requested=lambda: False)
    ex.allreduce(ex.buffer(2), vote=2.0)
    assert sent == [2.0] and ex.stop_agreed


def test_reductions_without_slots_count_as_communication():
    def slow(buf, out):
        time.sleep(0.05)
        return out

    timings = Timings()
    ex = Exchanger(Group.serial(), timings)
    ex.add_compute(1.0)
    ex.reduce(slow, np.zeros(3))
    assert timings.wait == 0.0 and timings.comm > 0.0 and timings.compute == 1.0
