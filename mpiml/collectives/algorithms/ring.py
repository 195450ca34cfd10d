"""Ring algorithms: reduce-scatter, allgather, and allreduce as the two in sequence.

Bandwidth-optimal (each rank sends 2(p-1)/p of the vector for allreduce) at the cost of
2(p-1) latency steps. Every block is reduced on exactly one rank and then copied, so all
ranks end with bitwise identical results. The reduction order around the ring depends on
the rank, so these need a commutative operator.

The per-step block ranges depend only on the counts, the rank and p: they are computed
once (:func:`ring_schedule`) and kept in the workspace, so a call does no arithmetic on
blocks and no numpy work beyond the messages and the reductions themselves.

The messages go through the ``transport`` passed in (:mod:`mpiml.collectives.transport`),
so the same schedule runs over blocking MPI calls or any other point-to-point layer.
"""

from __future__ import annotations

import numpy as np

from mpiml.collectives import model
from mpiml.collectives.layout import balanced_counts, displacements
from mpiml.collectives.registry import register

TAG_REDUCE_SCATTER = 11
TAG_ALLGATHER = 12


def ring_schedule(counts, rank: int, shift: int) -> tuple[tuple[int, int, int, int], ...]:
    """Per step, ``(send_lo, send_hi, recv_lo, recv_hi)`` in elements.

    At step ``s`` the rank sends block ``(rank + shift - s) % p`` and receives block
    ``(rank + shift - s - 1) % p``: a reduce-scatter with ``shift = final - 1`` leaves
    block ``(rank + final) % p`` complete, an allgather with ``shift`` starts from the
    block ``(rank + shift) % p`` the rank owns.
    """
    bounds = displacements(counts).tolist()
    p = len(counts)
    steps = []
    for step in range(p - 1):
        send, recv = (rank + shift - step) % p, (rank + shift - step - 1) % p
        steps.append((bounds[send], bounds[send + 1], bounds[recv], bounds[recv + 1]))
    return tuple(steps)


def _reduce_scatter_into(transport, x, acc, op, schedule, tmp):
    """Ring reduce-scatter of ``x`` whose partial sums live in ``acc`` (same layout as x).

    The first step reads the rank's own block straight from ``x``, and each received
    partial is combined with the rank's block of ``x``, so no initial copy of ``x`` is
    made. Each block is received once: out of place, the partial arrives straight in
    its place in ``acc`` and is combined there in place (one pass over memory less than
    through ``tmp``, which only in-place calls need, as ``acc`` is then ``x`` itself).
    """
    p, r = transport.size, transport.rank
    right, left = (r + 1) % p, (r - 1) % p
    sendrecv = transport.sendrecv
    direct = not np.may_share_memory(acc, x)  # in place, ``acc`` is a view of ``x``
    source = x
    for send_lo, send_hi, lo, hi in schedule:
        received = acc[lo:hi] if direct else tmp[: hi - lo]
        sendrecv(source[send_lo:send_hi], right, received, left, TAG_REDUCE_SCATTER)
        op(received, x[lo:hi], out=acc[lo:hi])  # commutative: the order of operands is free
        source = acc


def _allgather_blocks(transport, out, schedule):
    """Ring allgather in place, along ``schedule``."""
    p, r = transport.size, transport.rank
    right, left = (r + 1) % p, (r - 1) % p
    sendrecv = transport.sendrecv
    for send_lo, send_hi, recv_lo, recv_hi in schedule:
        sendrecv(out[send_lo:send_hi], right, out[recv_lo:recv_hi], left, TAG_ALLGATHER)


def _allreduce_cost(n, p, r):
    return model.allreduce_ring(n, p, r.step, r.beta, r.gamma)


def _reduce_scatter_cost(n, p, r):
    return model.reduce_scatter_ring(n, p, r.step, r.beta, r.gamma) + n / p * r.copy  # own block leaves acc


def _allgather_cost(n, p, r):
    return model.allgather_ring(n, p, r.step, r.beta, r.gamma) + n / p * r.copy  # own block enters out


@register("allreduce", "ring", cost=_allreduce_cost, commutative_only=True)
def allreduce(transport, x, out, op, workspace):
    """Ring allreduce of flat ``x`` into flat ``out`` (``out`` may be ``x``), balanced blocks."""
    p, r = transport.size, transport.rank

    def build():
        counts = balanced_counts(x.size, p)
        # The rank ends the reduce-scatter owning block rank+1, which the allgather starts from.
        return ring_schedule(counts, r, 0), ring_schedule(counts, r, 1), int(counts.max())

    reduce_scatter_steps, allgather_steps, largest = workspace.plan(("ring_allreduce", x.size, p, r), build)
    tmp = workspace.get("ring", largest, x.dtype)
    _reduce_scatter_into(transport, x, out, op, reduce_scatter_steps, tmp)
    _allgather_blocks(transport, out, allgather_steps)
    return out


@register("reduce_scatter", "ring", cost=_reduce_scatter_cost, commutative_only=True)
def reduce_scatter(transport, x, out, op, counts, workspace):
    """Ring reduce-scatter: ``out`` receives this rank's block (block ``rank``) of the sum."""
    r = transport.rank

    def build():
        bounds = displacements(counts)
        return ring_schedule(counts, r, -1), int(bounds[r]), int(bounds[r + 1]), int(counts.max())

    steps, lo, hi, largest = workspace.plan(("ring_reduce_scatter", counts.tobytes(), r), build)
    acc = workspace.get("ring_acc", x.size, x.dtype)
    tmp = workspace.get("ring", largest, x.dtype)
    _reduce_scatter_into(transport, x, acc, op, steps, tmp)
    np.copyto(out, acc[lo:hi])
    return out


@register("allgather", "ring", cost=_allgather_cost)
def allgather(transport, local, out, counts, workspace):
    """Ring allgather of variable-length blocks: ``out`` gets every rank's ``local`` in order."""
    r = transport.rank

    def build():
        bounds = displacements(counts)
        return int(bounds[r]), int(bounds[r + 1]), ring_schedule(counts, r, 0)

    lo, hi, steps = workspace.plan(("ring_allgather", counts.tobytes(), r), build)
    np.copyto(out[lo:hi], local)
    _allgather_blocks(transport, out, steps)
    return out
