"""``sync`` with a compressed gradient exchange (``--compress``): the transport of :mod:`mpiml.train.compress`.

:class:`CompressedSync` overrides :meth:`mpiml.train.strategies.Sync.exchange`, the one
place a gradient crosses ranks. The loss, the stop votes and the compute-time slots of
:class:`mpiml.train.timing.Exchanger` still travel uncompressed, in the same message.

- ``fp16``, ``bf16``, ``topk``: one allgather (:func:`mpiml.allgather`) of every replica's
  message (a float64 header, then its 16-bit floats or its ``(indices, values)``); every
  rank decodes the messages and adds them in rank order, in float64, so the sum is the
  same bits on every rank and the 16-bit values are summed without further rounding
  (not an allreduce of 16-bit numbers, whose partial sums would each be rounded to 16 bits).
  The price of an allgather: each rank receives ``p - 1`` messages, where a float64 ring
  allreduce moves ``2 (p - 1) / p`` of the dense buffer each way. For 16-bit floats that is
  less traffic only up to 8 ranks (``2n (p-1)`` against ``16n (p-1)/p`` bytes), so beyond
  :data:`HALF_ALLGATHER_RANKS` replicas fp16/bf16 take one allreduce of a float32 buffer of
  the 16-bit values (exactly widened; the sums rounded to float32, as the loss then is): half
  the dense bytes at any p. Top-k at 1 % stays below the dense allreduce's traffic up to about
  200 ranks (``8k (p-1)`` bytes with ``k = n/100``).
- ``powersgd``: two allreduces of the small factors, ``P`` (with the uncompressed
  intercepts, loss, votes and slots) and ``Q``; a model with one output (a vector) or a
  matrix too small to gain falls back to the plain allreduce.

Error-feedback residuals (topk, powersgd) and PowerSGD's ``Q`` are each rank's own state,
not in checkpoints: a resumed run restarts them at zero (``Q`` at its seeded start).
"""

from __future__ import annotations

import functools
import time

import numpy as np

from mpiml.collectives.model import allreduce_bytes
from mpiml.train import compress
from mpiml.train.strategies import Sync
from mpiml.train.timing import allgather_bytes


class CompressedSync(Sync):
    """``sync`` whose gradient sums travel compressed by the codec ``spec`` (``fp16``, ``topk:0.01``, ...)."""

    def __init__(self, spec):
        self.spec = compress.parse(spec) if isinstance(spec, str) else spec
        self.codec = None

    def exchange(self, run, buf, vote) -> np.ndarray:
        """``[gradient sum, loss sum]`` over the replicas, the gradient through the codec."""
        if self.codec is None:   # made at the first update: a resumed run restarts the residuals at zero
            self.codec = make_exchange(self.spec, run)
        if self.codec is _PLAIN:
            return run.ex.allreduce(buf, vote)
        return self.codec(run, buf, vote)


_PLAIN = object()
HALF_ALLGATHER_RANKS = 8   # fp16/bf16 by allgather up to this many replicas, by a float32 allreduce beyond


def make_exchange(spec, run):
    """The exchange of ``spec`` for ``run``'s layout (``_PLAIN``: the uncompressed allreduce)."""
    n = run.layout.n_params
    if spec.name in ("fp16", "bf16"):
        if run.data.size > HALF_ALLGATHER_RANKS:
            return HalfSummed(HalfCodec(spec.name, n))
        return Gathered(run, HalfCodec(spec.name, n))
    if spec.name == "topk":
        return Gathered(run, TopKCodec(n, spec.ratio))
    if spec.name == "powersgd":
        part = getattr(run.layout, "part", None)
        shape = part.w_shape if part is not None else (run.layout.n_weights, 1)
        if compress.powersgd_applies(shape, spec.rank):
            return PowerSGDExchange(run, shape, spec.rank)
    return _PLAIN


def replica_allgather(run):
    """``allgather(x) -> (p * len(x),)`` over the replicas of ``run`` (equal-length messages, rank order)."""
    p = run.data.size
    if p == 1:
        return np.copy
    comms = getattr(run.layout, "comms", None)
    comm = None if comms is None else (comms.col_comm if comms.col_comm is not None else comms.world)
    if comm is not None:
        import mpiml

        return functools.partial(mpiml.allgather, comm=comm)
    return functools.partial(allgather_by_sum, run.data.allreduce, run.data.rank, p)


def allgather_by_sum(allreduce, rank: int, p: int, x: np.ndarray) -> np.ndarray:
    """An allgather of byte messages through a float64 sum (an injected transport without a communicator):
    each rank's bytes in its own block, zeros elsewhere; the sums of small integers are exact."""
    buf = np.zeros(p * x.size)
    buf[rank * x.size:(rank + 1) * x.size] = x
    allreduce(buf, out=buf)
    return buf.astype(x.dtype)


class HalfCodec:
    """fp16 or bf16 messages: ``n`` 16-bit floats (fp16 with its power-of-two scale in the header)."""

    def __init__(self, name: str, n: int):
        self.name, self.n = name, n
        self.wire_bytes = 2 * n

    def encode(self, grad):
        if self.name == "fp16":
            bits, scale = compress.encode_fp16(grad)
            return bits.view(np.uint8), scale
        return compress.encode_bf16(grad).view(np.uint8), 1.0

    def decode(self, bodies, scales) -> np.ndarray:
        out = np.zeros(self.n)
        for body, scale in zip(bodies, scales):
            bits = np.frombuffer(body, np.uint16, self.n)
            out += compress.decode_fp16(bits, scale) if self.name == "fp16" else compress.decode_bf16(bits)
        return out


class TopKCodec:
    """topk messages: ``k`` indices then ``k`` float32 values (:class:`mpiml.train.compress.TopK`)."""

    def __init__(self, n: int, ratio: float):
        self.topk = compress.TopK(n, ratio)
        self.n, self.wire_bytes = n, self.topk.wire_bytes

    def encode(self, grad):
        index, values = self.topk.encode(grad)
        return np.concatenate([index.view(np.uint8), values.view(np.uint8)]), 0.0

    def decode(self, bodies, scales) -> np.ndarray:
        k, dtype = self.topk.k, self.topk.index_dtype
        at = k * np.dtype(dtype).itemsize
        return compress.TopK.decode(((np.frombuffer(body, dtype, k), np.frombuffer(body, np.float32, k, at))
                                     for body in bodies), self.n)


class Gathered:
    """One allgather of ``[header, body]`` per update; the header ``[scale, loss, stop, slot_0..slot_p-1]``
    is summed (the slots tell waiting from transfer, as in :meth:`Exchanger.reduce`)."""

    def __init__(self, run, codec):
        self.codec, self.allgather = codec, replica_allgather(run)

    def __call__(self, run, buf, vote) -> np.ndarray:
        n, p, ex = self.codec.n, run.data.size, run.ex
        start = time.perf_counter()
        body, scale = self.codec.encode(buf[:n])
        head = np.zeros(3 + p)
        head[0], head[1], head[2] = scale, buf[n], ex.vote() if vote is None else vote
        ex.add_compute(time.perf_counter() - start)
        rows, scales = [], []

        def gather(h, out=None):
            msg = np.concatenate([h.view(np.uint8), body])
            rows.append(self.allgather(msg).reshape(p, msg.size))
            heads = rows[0][:, :h.nbytes].copy().view(np.float64)
            h[:] = heads.sum(axis=0)
            scales.extend(heads[:, 0])
            return h

        ex.reduce(gather, head, run.data.rank, p)
        ex.bytes_moved += allgather_bytes(head.nbytes + body.nbytes, p)
        ex.bytes_dense += allreduce_bytes(buf.nbytes, p)
        ex.stop_agreed = ex.stop_agreed or head[2] > 0
        start = time.perf_counter()
        out = np.empty(n + 1)
        out[:n] = self.codec.decode([row[head.nbytes:] for row in rows[0]], scales)
        out[n] = head[1]
        ex.add_compute(time.perf_counter() - start)
        return out


class HalfSummed:
    """fp16/bf16 for many replicas: one allreduce of ``[16-bit values widened to float32, loss | stop, slots]``."""

    def __init__(self, codec):
        self.codec = codec

    def __call__(self, run, buf, vote) -> np.ndarray:
        n, p, ex = self.codec.n, run.data.size, run.ex
        start = time.perf_counter()
        body, scale = self.codec.encode(buf[:n])
        wire = np.empty(n + 2 + p, dtype=np.float32)
        wire[:n] = self.codec.decode([body], [scale])   # a 16-bit value (unscaled) is a float32: exact
        wire[n], wire[n + 1] = buf[n], ex.vote() if vote is None else vote
        ex.add_compute(time.perf_counter() - start)
        ex.reduce(run.data.allreduce, wire, run.data.rank, p)
        ex.bytes_moved += allreduce_bytes(wire.nbytes, p)
        ex.bytes_dense += allreduce_bytes(buf.nbytes, p)
        ex.stop_agreed = ex.stop_agreed or wire[n + 1] > 0
        return wire[:n + 1].astype(np.float64)


class PowerSGDExchange:
    """Two allreduces per update: ``[P_i, intercept gradients, loss | stop, slots]``, then ``Q_i``."""

    def __init__(self, run, shape, rank: int):
        self.shape, self.nw = shape, shape[0] * shape[1]
        self.codec = compress.PowerSGD(shape, rank, seed=run.cfg.seed)

    def __call__(self, run, buf, vote) -> np.ndarray:
        n, nw, p, ex = run.layout.n_params, self.nw, run.data.size, run.ex
        start = time.perf_counter()
        P = self.codec.left(buf[:nw].reshape(self.shape))
        m = P.size + n - nw + 1
        first = ex.buffer(m)
        first[:P.size] = P.ravel()
        first[P.size:m] = buf[nw:n + 1]   # the intercepts' gradient sums and the loss, uncompressed
        first[m] = ex.vote() if vote is None else vote
        ex.add_compute(time.perf_counter() - start)
        ex.reduce(run.data.allreduce, first, run.data.rank, p)
        ex.stop_agreed = ex.stop_agreed or first[m] > 0
        start = time.perf_counter()
        second = self.codec.right(first[:P.size].reshape(P.shape)).copy()   # summed in place; the codec keeps Q_i
        ex.add_compute(time.perf_counter() - start)
        ex.reduce(run.data.allreduce, second)
        ex.bytes_moved += allreduce_bytes(first.nbytes, p) + allreduce_bytes(second.nbytes, p)
        ex.bytes_dense += allreduce_bytes(buf.nbytes, p)
        start = time.perf_counter()
        out = np.empty(n + 1)
        out[:nw] = self.codec.finish(second).ravel()
        out[nw:] = first[P.size:m]
        ex.add_compute(time.perf_counter() - start)
        return out
