"""The algorithms run on any transport: here p simulated ranks in threads, no MPI (serial).

Each algorithm's schedule is driven through an in-memory transport and compared with
numpy, and the ring's messages are checked against the schedule written out by hand
from ``numpy.array_split``: the seam a nonblocking or recorded transport plugs into.
"""

from __future__ import annotations

import queue
import threading

import numpy as np
import pytest

from mpiml.collectives import SUM, registry
from mpiml.collectives.workspace import Workspace

TIMEOUT = 20  # seconds a simulated receive waits before the test fails (never hangs)


class Network:
    """Mailboxes between ``size`` simulated ranks, and a log of every message sent."""

    def __init__(self, size):
        self.size = size
        self.boxes = {}
        self.lock = threading.Lock()
        self.log = []

    def box(self, source, dest, tag):
        with self.lock:
            return self.boxes.setdefault((source, dest, tag), queue.Queue())


class ThreadTransport:
    """The transport interface over :class:`Network`: sends never block, receives wait."""

    def __init__(self, network, rank):
        self.network, self.rank, self.size, self.comm = network, rank, network.size, None

    def send(self, buf, dest, tag):
        with self.network.lock:
            self.network.log.append((self.rank, dest, tag, buf.nbytes))
        self.network.box(self.rank, dest, tag).put(buf.copy())

    def recv(self, buf, source, tag):
        message = self.network.box(source, self.rank, tag).get(timeout=TIMEOUT)
        if message.nbytes != buf.nbytes:
            raise AssertionError(f"rank {self.rank}: {message.nbytes} bytes from {source} into {buf.nbytes}")
        np.copyto(buf, message.view(buf.dtype))

    def sendrecv(self, sendbuf, dest, recvbuf, source, tag):
        self.send(sendbuf, dest, tag)
        self.recv(recvbuf, source, tag)

    def isend(self, buf, dest, tag):
        self.send(buf, dest, tag)

    @staticmethod
    def waitall(requests):
        pass


def run_ranks(size, body):
    """``body(transport)`` on ``size`` simulated ranks; returns their results and the message log."""
    network = Network(size)
    results, errors = [None] * size, []

    def one(rank):
        try:
            results[rank] = body(ThreadTransport(network, rank))
        except BaseException as exc:  # reported below, on the test's thread
            errors.append((rank, exc))

    threads = [threading.Thread(target=one, args=(rank,), daemon=True) for rank in range(size)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT * 2)
    assert not errors and not any(t.is_alive() for t in threads), errors or "a simulated rank hung"
    return results, network.log


def inputs(n, size):
    return [(np.arange(n, dtype=np.float64) % 17) * (rank + 1) for rank in range(size)]


SIZES = (2, 3, 4, 5, 6, 7)


@pytest.mark.parametrize("name", [name for name in registry.ALGORITHMS["allreduce"] if name != "native"
                                  and not getattr(registry.get("allreduce", name).run, "needs_communicator", False)])
@pytest.mark.parametrize("size", SIZES)
def test_allreduce_schedules_run_on_a_simulated_transport(name, size):
    xs = inputs(23, size)
    run = registry.get("allreduce", name).run
    results, _ = run_ranks(size, lambda t: run(t, xs[t.rank], np.empty(23), SUM, Workspace()))
    for result in results:
        assert np.array_equal(result, np.sum(xs, axis=0))


@pytest.mark.parametrize("size", SIZES)
def test_ring_messages_follow_the_array_split_schedule(size):
    n = 23
    xs = inputs(n, size)
    run = registry.get("allreduce", "ring").run
    results, log = run_ranks(size, lambda t: run(t, xs[t.rank], np.empty(n), SUM, Workspace()))
    assert all(np.array_equal(result, np.sum(xs, axis=0)) for result in results)
    blocks = [len(b) * 8 for b in np.array_split(np.arange(n), size)]
    for rank in range(size):
        mine = [(dest, tag, nbytes) for source, dest, tag, nbytes in log if source == rank]
        # Reduce-scatter: step s sends block rank - s; allgather: step s sends block rank + 1 - s.
        expected = ([((rank + 1) % size, 11, blocks[(rank - s) % size]) for s in range(size - 1)]
                    + [((rank + 1) % size, 12, blocks[(rank + 1 - s) % size]) for s in range(size - 1)])
        assert mine == expected


@pytest.mark.parametrize("size", SIZES)
def test_other_collectives_run_on_a_simulated_transport(size):
    n = 19
    xs = inputs(n, size)
    total = np.sum(xs, axis=0)
    counts = np.array([len(b) for b in np.array_split(np.arange(n), size)])
    bounds = np.concatenate([[0], np.cumsum(counts)])
    rs = registry.get("reduce_scatter", "ring").run
    results, _ = run_ranks(size, lambda t: rs(t, xs[t.rank], np.empty(counts[t.rank]), SUM, counts, Workspace()))
    assert all(np.array_equal(results[r], total[bounds[r]:bounds[r + 1]]) for r in range(size))
    ag = registry.get("allgather", "ring").run
    results, _ = run_ranks(size, lambda t: ag(t, total[bounds[t.rank]:bounds[t.rank + 1]], np.empty(n), counts,
                                              Workspace()))
    assert all(np.array_equal(result, total) for result in results)
    for name in ("binomial", "pipeline"):
        run = registry.get("bcast", name).run
        root = size - 1
        results, _ = run_ranks(size, lambda t: run(t, total.copy() if t.rank == root else np.zeros(n), root, 24,
                                                   Workspace()))
        assert all(np.array_equal(result, total) for result in results)
    reduce = registry.get("reduce", "binomial").run
    results, _ = run_ranks(size, lambda t: reduce(t, xs[t.rank], np.empty(n) if t.rank == 1 else None, SUM, 1,
                                                  Workspace()))
    assert np.array_equal(results[1], total) and all(results[r] is None for r in range(size) if r != 1)
