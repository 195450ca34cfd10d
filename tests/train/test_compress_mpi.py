"""``sync --compress`` across ranks: the exchange against a numpy simulation of every rank, and training.

Oracle of the exchange: every rank draws every rank's gradients (seeded by rank) and runs
the codecs of :mod:`mpiml.train.compress` for all of them in one process, summing in rank
order; the exchanged sums must be those bits (PowerSGD: up to the allreduce's order of
addition) and the same bits on every rank. Training: the model is identical on every
rank for each codec, ``--compress none`` is plain ``sync`` bit for bit, and the
compressed runs reach the accuracy of the uncompressed one on easy synthetic data.
"""

from __future__ import annotations

import functools
from types import SimpleNamespace

import numpy as np
import pytest
from mpi4py import MPI
from mpi_helpers import agree

import mpiml
from mpiml.collectives.model import allreduce_bytes
from mpiml.parallel.trainer import data_parallel
from mpiml.sgd import LinearModel
from mpiml.sgd.models import make_model
from mpiml.train import compress, compressed
from mpiml.train.compressed import CompressedSync
from mpiml.train.group import Group
from mpiml.train.timing import Exchanger, Timings

COMM = MPI.COMM_WORLD
D, K, STEPS = 12, 4, 3


def _grads(rank, n, step):
    rng = np.random.default_rng([rank, step])
    g = rng.standard_normal(n) * 10.0 ** rng.integers(-3, 4, n)
    g[::7] = 0.0
    return g


def _expected(spec, n, p):
    """The payloads ``[gradient sum, loss sum]`` of STEPS updates, simulated for all p ranks here."""
    model = make_model("softmax", D, K)
    out = []
    if spec.name == "topk":
        codecs = [compress.TopK(n, spec.ratio) for _ in range(p)]
    if spec.name == "powersgd":
        shape = (D, K)
        codecs = [compress.PowerSGD(shape, spec.rank, seed=5) for _ in range(p)]
    for step in range(STEPS):
        grads = [_grads(r, n, step) for r in range(p)]
        total = np.zeros(n)
        if spec.name == "fp16":
            for g in grads:
                total += compress.decode_fp16(*compress.encode_fp16(g))
        elif spec.name == "bf16":
            for g in grads:
                total += compress.decode_bf16(compress.encode_bf16(g))
        elif spec.name == "topk":
            total = compress.TopK.decode([c.encode(g) for c, g in zip(codecs, grads)], n)
        else:
            nw = model.n_weights
            P = sum(c.left(g[:nw].reshape(shape)) for c, g in zip(codecs, grads))
            Q = sum(c.right(P) for c in codecs)
            total[:nw] = [c.finish(Q) for c in codecs][0].ravel()
            total[nw:] = sum(g[nw:] for g in grads)
        out.append(np.append(total, sum(float(r + step) for r in range(p))))
    return out


def _run(group):
    model = make_model("softmax", D, K)
    layout = data_parallel(model, group)
    ex = Exchanger(layout.data, Timings())
    return SimpleNamespace(layout=layout, data=layout.data, ex=ex, cfg=SimpleNamespace(seed=5)), model.n_params


@pytest.mark.mpi
def test_the_compressed_exchange_is_the_simulated_sum_on_every_rank():
    p, rank = COMM.size, COMM.rank
    world = Group.from_comm(COMM)
    # an injected sum without a communicator: the messages travel through it (allgather_by_sum)
    injected = Group(rank, p, functools.partial(mpiml.allreduce, comm=COMM))
    problems, payloads = [], []
    for text in ("fp16", "bf16", "topk:0.05", "topk:1", "powersgd:2"):
        spec = compress.parse(text)
        expected = _expected(spec, D * K + K, p)
        results = []
        for group in (world, injected) if text == "topk:0.05" else (world,):
            run, n = _run(group)
            strategy = CompressedSync(text)
            for step in range(STEPS):
                buf = run.ex.buffer(n + 1)
                buf[:n], buf[n] = _grads(rank, n, step), float(rank + step)
                payload = strategy.exchange(run, buf, 1.0 if (rank, step) == (p - 1, 1) else 0.0)
                payloads.append(payload)
                if spec.name == "powersgd":
                    ok = np.allclose(payload, expected[step], rtol=1e-9, atol=1e-9)
                else:
                    ok = np.array_equal(payload, expected[step])
                if not ok:
                    problems.append((text, step, np.abs(payload - expected[step]).max()))
                if run.ex.stop_agreed != (step >= 1):
                    problems.append((text, step, "stop vote"))
            results.append(payload)
            # what a rank sends (nothing at p = 1), against a dense allreduce of the same buffer
            dense = allreduce_bytes((n + 2 + p) * 8, p) * STEPS
            smaller = run.ex.bytes_moved < dense or text == "topk:1" or p == 1   # topk:1 sends more than dense
            if not (run.ex.bytes_dense == dense and (0 < run.ex.bytes_moved or p == 1) and smaller):
                problems.append((text, "bytes", run.ex.bytes_moved))
        if len(results) == 2 and not np.array_equal(*results):
            problems.append((text, "allgather_by_sum"))
    # beyond HALF_ALLGATHER_RANKS replicas 16-bit floats are summed by a float32 allreduce: forced here at any p
    compressed.HALF_ALLGATHER_RANKS, saved = 0, compressed.HALF_ALLGATHER_RANKS
    try:
        run, n = _run(world)
        strategy = CompressedSync("fp16")
        for step in range(STEPS):
            buf = run.ex.buffer(n + 1)
            buf[:n], buf[n] = _grads(rank, n, step), float(rank + step)
            payload = strategy.exchange(run, buf, 0.0)
            payloads.append(payload)
            terms = [compress.decode_fp16(*compress.encode_fp16(_grads(r, n, step))) for r in range(p)]
            bound = 1e-6 * np.sum(np.abs(terms), axis=0)   # float32 sums of p terms: ~p * 2**-24 relative
            if not (np.all(np.abs(payload[:n] - np.sum(terms, axis=0)) <= bound) and payload[n] == sum(
                    r + step for r in range(p))):
                problems.append(("fp16 summed", step))
        if not (run.ex.bytes_moved == allreduce_bytes(4 * (n + 2 + p), p) * STEPS
                and run.ex.bytes_dense == allreduce_bytes(8 * (n + 2 + p), p) * STEPS):
            problems.append(("fp16 summed", "bytes", run.ex.bytes_moved))
    finally:
        compressed.HALF_ALLGATHER_RANKS = saved
    agree(COMM, not problems, problems)
    agree(COMM, all(np.array_equal(a, b) for a, b in zip(COMM.bcast(payloads), payloads)), "ranks differ")


SPEC = "synthetic:classification,n=400,d=15,classes=3,separation=3"


@pytest.mark.mpi
def test_compressed_training_agrees_on_every_rank_and_none_is_plain_sync():
    from mpiml.data import load_shard, split_holdout

    shard, test = split_holdout(load_shard(SPEC, COMM), 0.25, 0, COMM)
    settings = dict(epochs=2, batch_size=60, lr=0.3, seed=1)

    def fit(**extra):
        est = LinearModel("softmax", "sync", comm=COMM, **{**settings, **extra})
        est.fit(shard.X, shard.y, test.X, test.y)
        return est

    plain = fit()
    none = fit(compress="none")
    agree(COMM, np.array_equal(plain.result_.theta, none.result_.theta), "--compress none differs from sync")
    base = plain.result_.history[-1]["test_accuracy"]
    # softmax's gradient has rank <= classes - 1 = 2 (its residual rows sum to 0): rank 2 loses nothing for long
    for codec in ("fp16", "topk:0.1", "powersgd:2"):   # bf16: as fp16 (the exchange test above covers it)
        # top-k sends a tenth of the gradient per update: it is given the goal's 3x the epochs
        result = fit(compress=codec, **({"epochs": 6} if codec.startswith("topk") else {})).result_
        thetas = COMM.allgather(result.theta)
        agree(COMM, all(np.array_equal(t, thetas[0]) for t in thetas), (codec, "models differ"))
        accuracy = result.history[-1]["test_accuracy"]
        # 16-bit floats change the sums by ~1e-3 relative: the same predictions; top-k / low rank within a few points
        limit = 0.01 if codec in ("fp16", "bf16") else 0.06
        agree(COMM, accuracy >= base - limit, (codec, accuracy, base))
        agree(COMM, result.bytes_moved < result.bytes_dense or COMM.size == 1,
              (codec, result.bytes_moved, result.bytes_dense))
