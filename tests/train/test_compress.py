"""The gradient codecs of :mod:`mpiml.train.compress` against numpy references, and ``--compress`` serially.

References: numpy's float16 cast (IEEE round to nearest even); a bfloat16 rounding that
picks the nearer of the two neighbouring bfloat16 values in float64 (ties to the even
one); a stable sort for top-k; a plain PowerSGD written here with numpy's QR.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from mpiml.errors import ArgumentError
from mpiml.train import compress
from mpiml.train.config import TrainConfig, resolve


def _awkward(rng, n=4000):
    """Values of every size, with zeros, repeats, signs, subnormals and fp16/bf16 ties among them."""
    x = rng.standard_normal(n) * 10.0 ** rng.integers(-8, 8, n)
    x[:50] = 0.0
    x[50:100] = x[100:150]
    x[150:160] = np.float32(1e-40)   # a float32 subnormal
    return x


def test_parse_reads_every_codec_and_refuses_the_rest():
    assert compress.parse("none") == compress.Spec("none")
    assert str(compress.parse("fp16")) == "fp16" and str(compress.parse("BF16")) == "bf16"
    assert compress.parse("topk") == compress.Spec("topk", ratio=0.01)
    assert compress.parse("topk:0.05").ratio == 0.05 and compress.parse("powersgd:3").rank == 3
    assert compress.parse("powersgd").rank == 1
    for bad, needle in (("zip", "unknown compress"), ("topk:0", "in \\(0, 1\\]"), ("topk:x", "a number"),
                        ("topk:1.5", "in \\(0, 1\\]"), ("powersgd:0", ">= 1"), ("powersgd:1.5", "integer"),
                        ("fp16:2", "takes no argument")):
        with pytest.raises(ArgumentError, match=needle):
            compress.parse(bad)


def test_fp16_is_numpys_float16_rounding_after_an_exact_power_of_two_scale():
    rng = np.random.default_rng(0)
    for x in (_awkward(rng), rng.standard_normal(300) * 1e6, rng.standard_normal(300) * 1e-9, np.zeros(5)):
        bits, scale = compress.encode_fp16(x)
        assert bits.dtype == np.uint16 and bits.shape == x.shape
        assert scale == 2.0 ** round(np.log2(scale))   # a power of two: scaling rounds nothing
        top = np.abs(x).max() * scale
        assert top == 0 or 2**14 <= top < 2**15     # far from float16's overflow at 65520
        expected = (x * scale).astype(np.float16).astype(np.float64) / scale
        np.testing.assert_array_equal(compress.decode_fp16(bits, scale), expected)
        assert np.isfinite(compress.decode_fp16(bits, scale)).all()
    assert compress.fp16_scale(np.array([np.inf, 1.0])) == 1.0


def _bf16_reference(x):
    """bfloat16 rounding of float32(x): the nearer of the truncation and the next bfloat16 up, ties to even."""
    out = np.empty(x.size, dtype=np.uint16)
    for i, v in enumerate(np.asarray(x, dtype=np.float32)):
        if np.isnan(v):
            out[i] = 0x7FC0
            continue
        bits = int(np.array(v).view(np.uint32))
        low = bits >> 16
        if bits & 0xFFFF == 0:
            out[i] = low
            continue
        down = float(np.array(low << 16, dtype=np.uint32).view(np.float32))
        up = float(np.array((low + 1) << 16, dtype=np.uint32).view(np.float32))
        if np.isinf(up):   # IEEE: past the largest bfloat16, round as if the exponent went on (2**128)
            up = np.copysign(2.0**128, down)
        gap_down, gap_up = abs(float(v) - down), abs(up - float(v))
        out[i] = low if gap_down < gap_up or (gap_down == gap_up and low % 2 == 0) else low + 1
    return out


def test_bf16_rounds_the_float32_pattern_to_nearest_even_as_the_reference():
    rng = np.random.default_rng(1)
    ties = np.array([0x3F808000, 0x3F818000, 0xBF808000, 0x3F80_8001, 0x3F80_7FFF, 0x7F7FFFFF, 0x00008000,
                     0x00018000], dtype=np.uint32).view(np.float32).astype(np.float64)
    x = np.concatenate([_awkward(rng, 3000), ties, [np.inf, -np.inf, 0.0, -0.0, 3.0e38, 1e300, -1e-300]])
    with np.errstate(over="ignore"):   # 1e300 is infinite in float32
        bits, expected = compress.encode_bf16(x), _bf16_reference(x)
    np.testing.assert_array_equal(bits, expected)
    decoded = compress.decode_bf16(bits)
    finite = np.abs(x) < 3.3e38
    assert np.all(np.abs(decoded[finite] - x[finite]) <= np.abs(x[finite]) * 2.0**-8 + 1e-38)
    assert np.isnan(compress.decode_bf16(compress.encode_bf16(np.array([np.nan])))).all()


def test_topk_selection_matches_a_stable_sort_ties_to_the_lowest_index():
    rng = np.random.default_rng(2)
    for n in (0, 1, 7, 100, 1000):
        for values in (rng.standard_normal(n), rng.integers(-3, 4, n).astype(float)):   # many ties
            for k in sorted({0, min(1, n), n // 3, n // 2, max(n - 1, 0), n}):
                got = compress.select_topk(values, k)
                np.testing.assert_array_equal(got, compress.select_topk_reference(values, k))
                assert got.size == k
    with_nan = np.array([1.0, np.nan, -3.0, np.inf, 2.0])   # NaN counts as largest: every message has k entries
    np.testing.assert_array_equal(compress.select_topk(with_nan, 2), [1, 3])
    np.testing.assert_array_equal(compress.select_topk(with_nan, 3), [1, 2, 3])
    assert compress.topk_count(8316, 0.01) == 84 and compress.topk_count(100, 0.01) == 1
    assert compress.topk_count(3, 0.01) == 1 and compress.topk_count(0, 0.5) == 0 and compress.topk_count(5, 1) == 5


def test_topk_error_feedback_keeps_exactly_what_it_did_not_send():
    rng = np.random.default_rng(3)
    n = 500
    codec = compress.TopK(n, 0.02)
    assert codec.k == 10 and codec.wire_bytes == 10 * 8
    sent_total = np.zeros(n)
    grads = np.zeros(n)
    for _ in range(20):
        grad = _awkward(rng, n)
        old = codec.residual.copy()
        index, values = codec.encode(grad)
        assert index.dtype == np.int32 and values.dtype == np.float32 and np.all(np.diff(index) > 0)
        sent = np.zeros(n)
        sent[index] = values
        # the invariant of error feedback, bit for bit: sent + new residual == old residual + gradient
        np.testing.assert_array_equal(sent + codec.residual, old + grad)
        np.testing.assert_array_equal(index, compress.select_topk_reference(old + grad, 10))
        np.testing.assert_array_equal(compress.TopK.decode([(index, values)], n), sent)
        sent_total += sent
        grads += grad
    # nothing is lost, only delayed: what was sent plus what is kept is what came in
    np.testing.assert_allclose(sent_total + codec.residual, grads, rtol=1e-12, atol=1e-300)


def test_topk_decode_adds_the_ranks_messages_in_order():
    msgs = [(np.array([0, 3]), np.array([1.0, 2.0], np.float32)), (np.array([3, 4]), np.array([0.5, -1], np.float32))]
    np.testing.assert_array_equal(compress.TopK.decode(msgs, 6), [1.0, 0, 0, 2.5, -1.0, 0])


def _powersgd_reference(grads_per_step, shape, rank, seed, ranks):
    """Plain PowerSGD with error feedback over ``ranks`` simulated workers: numpy's QR, sums in rank order."""
    Q = np.random.default_rng([seed, 0x9051D]).standard_normal((shape[1], rank))
    residuals = [np.zeros(shape) for _ in range(ranks)]
    out = []
    for grads in grads_per_step:
        M = [residuals[i] + grads[i] for i in range(ranks)]
        P, _ = np.linalg.qr(sum(m @ Q for m in M))
        Qs = [m.T @ P for m in M]
        Q = sum(Qs)
        residuals = [M[i] - P @ Qs[i].T for i in range(ranks)]
        out.append((P @ Q.T, [r.copy() for r in residuals]))
    return out


def test_powersgd_matches_a_numpy_reference_and_keeps_its_error():
    rng = np.random.default_rng(4)
    shape, rank, ranks = (30, 6), 2, 3
    steps = [[rng.standard_normal(shape) for _ in range(ranks)] for _ in range(6)]
    codecs = [compress.PowerSGD(shape, rank, seed=7) for _ in range(ranks)]
    assert codecs[0].wire_bytes == 8 * 2 * 36
    for (approx_ref, residuals_ref), grads in zip(_powersgd_reference(steps, shape, rank, 7, ranks), steps):
        P = sum(c.left(g) for c, g in zip(codecs, grads))
        Q = sum(c.right(P) for c in codecs)
        approx = [c.finish(Q) for c in codecs]
        # QR and Gram-Schmidt may differ in the columns' signs; P Q^T and the residuals do not
        np.testing.assert_allclose(approx[0], approx_ref, rtol=1e-9, atol=1e-10)
        assert all(np.array_equal(a, approx[0]) for a in approx)
        for c, ref in zip(codecs, residuals_ref):
            np.testing.assert_allclose(c.residual, ref, rtol=1e-9, atol=1e-10)
    # a gradient of rank <= r is sent whole once Q has found its span (the warm start)
    u, v = rng.standard_normal((shape[0], 1)), rng.standard_normal((1, shape[1]))
    codec = compress.PowerSGD(shape, 1)
    for _ in range(3):
        got = codec.finish(codec.right(codec.left(u @ v)))
    np.testing.assert_allclose(got, u @ v, rtol=1e-9)
    assert compress.powersgd_applies((30, 6), 2) and not compress.powersgd_applies((30, 1), 1)
    assert not compress.powersgd_applies((3, 3), 2)


def test_orthonormalize_gives_orthonormal_columns_and_zero_for_zero():
    rng = np.random.default_rng(5)
    P = compress.orthonormalize(rng.standard_normal((40, 3)))
    np.testing.assert_allclose(P.T @ P, np.eye(3), atol=1e-12)
    Z = compress.orthonormalize(np.zeros((5, 2)))
    assert not Z.any()
    codec = compress.PowerSGD((5, 3), 1)
    codec.finish(codec.right(codec.left(np.zeros((5, 3)))))
    assert np.any(codec.Q != 0)   # a zero gradient does not leave Q at zero for ever


def test_the_setting_is_for_sync_and_not_with_reproducible(monkeypatch):
    assert TrainConfig().compress == "none"
    assert resolve("auto", "logistic", False, {"compress": "topk"}).strategy == "sync"
    with pytest.raises(ArgumentError, match="--compress is for sync"):
        resolve("local", "logistic", False, {"compress": "fp16"}, spell=lambda n: "--" + n.replace("_", "-"))
    with pytest.raises(ArgumentError, match="not used by strategy lbfgs"):
        resolve("lbfgs", "logistic", False, {"compress": "fp16"})
    with pytest.raises(ArgumentError, match="reproducible"):
        resolve("sync", "logistic", False, {"compress": "fp16", "reproducible": True})
    monkeypatch.setenv("MPIML_REPRODUCIBLE", "1")
    with pytest.raises(ArgumentError, match="MPIML_REPRODUCIBLE"):
        resolve("sync", "logistic", False, {"compress": "topk"})
    monkeypatch.setenv("MPIML_REPRODUCIBLE", "0")
    assert resolve("sync", "logistic", False, {"compress": "topk"}).compress == "topk"
    with pytest.raises(ArgumentError, match="unknown compress"):
        resolve("sync", "logistic", False, {"compress": "gzip"})


def test_sgd_json_reports_the_codec_and_no_bytes_at_one_rank(capsys):
    from mpiml.cli import sgd

    reports = {}
    for codec in ("none", "bf16", "topk:0.1", "powersgd"):
        assert sgd.main(["--data", "synthetic:classification,n=400,d=20,classes=3", "--model", "softmax",
                         "--epochs", "1", "--batch-size", "40", "--compress", codec, "--json"]) == 0
        reports[codec] = json.loads(capsys.readouterr().out)
    for codec, report in reports.items():
        assert report["compress"] == codec
        # one rank sends nothing (the counts at p > 1: tests/train/test_compress_mpi.py)
        assert report["comm_bytes_per_update"] is None and report["compression_ratio"] is None
        assert report["test_accuracy"] > 0.55, (codec, report["test_accuracy"])   # 3 classes: chance is 1/3
