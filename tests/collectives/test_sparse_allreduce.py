"""The local math of the sparse allreduce against plain Python, its cost model's switches, and
its one-rank behaviour and argument checks."""

from __future__ import annotations

import numpy as np
import pytest

import mpiml
from mpiml.collectives import model
from mpiml.collectives import sparse as sparse_alg
from mpiml.collectives.ops import MAX, MIN, SUM

_PY = {"sum": lambda a, b: a + b, "min": min, "max": max}


def test_canonical_sorts_and_combines_duplicates_in_input_order():
    rng = np.random.default_rng(0)
    for op in (SUM, MIN, MAX):
        for n in (0, 1, 2, 50):
            idx = rng.integers(0, 12, n)
            val = rng.standard_normal(n).astype(np.float32)
            expected = {}
            for i, v in zip(idx.tolist(), val.tolist()):
                expected[i] = _PY[op.label](np.float32(expected[i]), np.float32(v)) if i in expected else v
            got_idx, got_val = sparse_alg.canonical(idx, val, op, np.dtype(np.int32))
            assert got_idx.dtype == np.int32 and got_idx.tolist() == sorted(expected)
            assert np.array_equal(got_val, np.array([expected[i] for i in sorted(expected)], dtype=np.float32))


def test_merge_combines_pieces_in_rank_order_with_implicit_zeros():
    rng = np.random.default_rng(1)
    p = 4
    for op in (SUM, MIN, MAX):
        pieces = [np.sort(rng.choice(30, int(rng.integers(0, 12)), replace=False)) for _ in range(p)]
        values = [rng.standard_normal(len(piece)) for piece in pieces]
        idx, val = np.concatenate(pieces), np.concatenate(values)
        union, acc = sparse_alg.merge(idx, val, np.array([len(x) for x in pieces]), p, op)
        for j, u in enumerate(union.tolist()):
            terms = [v[list(piece).index(u)] if u in piece else 0.0 for piece, v in zip(pieces, values)]
            if op is SUM:
                terms = [t for piece, t in zip(pieces, terms) if u in piece]
                want = 0.0
                for t in terms:   # 0 + v_0 + v_1 ... in rank order
                    want = want + t
            else:
                want = terms[0]
                for t in terms[1:]:
                    want = _PY[op.label](want, t)
            assert acc[j] == want, (op.label, u)
        assert union.tolist() == sorted(set(idx.tolist()))


def test_route_and_ranges_split_the_index_space_like_array_split():
    bounds = sparse_alg.ranges(10, 4)
    assert [len(b) for b in np.array_split(np.arange(10), 4)] == np.diff(bounds).tolist()
    assert sparse_alg.route(np.array([0, 2, 3, 9]), bounds).tolist() == [2, 1, 0, 1]
    assert sparse_alg.ranges(2, 5).tolist() == [0, 1, 2, 2, 2, 2]   # size < p: empty ranges
    assert sparse_alg.index_dtype(2**31 - 1) == np.int32 and sparse_alg.index_dtype(2**31) == np.int64


def test_model_switches_from_sparse_to_dense_as_density_grows():
    size = 1 << 20
    for p in (2, 3, 4, 16):
        paths = [model.predict_sparse(size, d, p)[1] for d in (1e-4, 1e-3, 1e-2, 0.3, 1.0)]
        assert paths[0] in ("sparse_allgather", "sparse") and paths[-1] == "dense", (p, paths)
        order = {"sparse_allgather": 0, "sparse": 1, "sparse+dense_allgather": 2, "dense": 3}
        assert [order[x] for x in paths] == sorted(order[x] for x in paths), (p, paths)
        # auto is never predicted slower than forcing either way
        for d in (1e-3, 0.1, 1.0):
            auto = model.predict_sparse(size, d, p)[0]
            assert auto <= 1.0001 * min(model.predict_sparse(size, d, p, algorithm=a)[0] for a in ("sparse", "dense"))
    # many ranks, sparse result: the reduce-scatter's two rounds beat gathering every rank's nonzeros
    assert model.predict_sparse(size, 1e-3, 64, dense_out=False)[1] == "sparse"
    # nothing held: the heads (which every path sends first) are the whole split allgather
    assert model.predict_sparse(64, 0.0, 4)[1] == "sparse_allgather"


def test_one_rank_and_argument_errors():
    got = mpiml.sparse_allreduce([3, 1, 3], np.array([1.0, 2.0, 4.0]), 5)
    assert got.tolist() == [0.0, 2.0, 0.0, 5.0, 0.0]
    idx, val = mpiml.sparse_allreduce_coo([3, 1, 3], np.array([1, 2, 4], dtype=np.int8), 5, op="max")
    assert idx.tolist() == [1, 3] and val.tolist() == [2, 4] and val.dtype == np.int8
    assert mpiml.sparse_allreduce([], np.empty(0), 0).shape == (0,)
    bad = [
        (dict(indices=[5], values=[1.0], size=5), r"indices must lie in \[0, 5\)"),
        (dict(indices=[-1], values=[1.0], size=5), "indices must lie"),
        (dict(indices=[0.5], values=[1.0], size=5), "indices must be integers"),
        (dict(indices=[0, 1], values=[1.0], size=5), "as long"),
        (dict(indices=[0], values=[1.0], size=-1), "non-negative integer"),
        (dict(indices=[0], values=[1.0], size=5, op="prod"), "supports op"),
        (dict(indices=[0], values=[1.0], size=5, algorithm="ring"), "unknown sparse_allreduce algorithm"),
        (dict(indices=[0], values=["a"], size=5), "not numeric"),
        (dict(indices=[0], values=[1.0], size=5, out=np.zeros(4)), "out has shape"),
    ]
    for kwargs, message in bad:
        with pytest.raises(mpiml.ArgumentError, match=message):
            mpiml.sparse_allreduce(**kwargs)


def test_mpiml_model_density_prices_the_sparse_allreduce(capsys):
    import json

    from mpiml.cli import model as model_cli

    assert model_cli.main(["--ranks", "2,4", "--sizes", "8K,8M", "--density", "0.001", "--json"]) == 0
    records = json.loads(capsys.readouterr().out)["predictions"]
    for rec in records:
        seconds, path = model.predict_sparse(rec["bytes"] // 8, 0.001, rec["ranks"])
        assert rec["sparse_seconds"] == seconds and rec["sparse_path"] == path
    assert [r["sparse_path"] for r in records if r["bytes"] == 8 << 20] == ["sparse_allgather"] * 2
    assert model_cli.main(["--ranks", "2", "--sizes", "8M", "--density", "0.001"]) == 0
    assert "sparse_path" in capsys.readouterr().out
    with pytest.raises(mpiml.ArgumentError, match="--collective allreduce"):
        model_cli.main(["--collective", "bcast", "--density", "0.1"])


def test_compiled_merge_matches_the_numpy_reference(monkeypatch):
    rng = np.random.default_rng(2)
    assert not sparse_alg._compiled_sum(np.dtype(np.float16))   # numpy's own path for the other dtypes
    for dtype in (np.float64, np.float32):
        for p in (1, 2, 5):
            pieces = [np.sort(rng.choice(500, int(rng.integers(0, 120)), replace=False)).astype(np.int32)
                      for _ in range(p)]
            idx = np.concatenate(pieces)
            val = (rng.standard_normal(idx.size) * 100).astype(dtype)
            counts = np.array([len(piece) for piece in pieces])
            assert sparse_alg._compiled_sum(np.dtype(dtype))
            fast = sparse_alg.merge(idx, val, counts, p, SUM)
            monkeypatch.setenv("MPIML_KERNELS", "numpy")
            assert not sparse_alg._compiled_sum(np.dtype(dtype))
            slow = sparse_alg.merge(idx, val, counts, p, SUM)
            monkeypatch.delenv("MPIML_KERNELS")
            assert np.array_equal(fast[0], slow[0]) and np.array_equal(fast[1], slow[1]), (dtype, p)
            assert fast[1].dtype == slow[1].dtype == np.dtype(dtype)
            # the dense form (split allgather into a dense result): the same sums at the same places, zeros
            # elsewhere, whatever ``out`` held; -0.0 inputs give +0.0 like the merge's 0 + v
            val[:3] = -0.0
            fast = sparse_alg.scatter_sum(idx, val, counts, np.full(500, np.nan, dtype=dtype))
            monkeypatch.setenv("MPIML_KERNELS", "numpy")
            slow = sparse_alg.scatter_sum(idx, val, counts, np.full(500, 7, dtype=dtype))
            union, acc = sparse_alg.merge(idx, val, counts, p, SUM)
            monkeypatch.delenv("MPIML_KERNELS")
            assert fast.tobytes() == slow.tobytes() == sparse_alg.densify(union, acc, 500).tobytes(), (dtype, p)
    # the message path: pack and route in one compiled pass vs canonical + route; the heads' summary and
    # the rank-order combination straight from the workspace rows vs their numpy references (bitwise)
    for dtype in (np.float64, np.float32):
        for p in (2, 3, 5):
            size = 300
            wire, bounds = np.dtype(np.int32), sparse_alg.ranges(size, p)
            ws = sparse_alg._Workspace(p, sparse_alg._pad(8 * (sparse_alg.HEAD + p) + 4096))
            hw = sparse_alg.HEAD + p
            for r in range(p):
                mine = np.sort(rng.choice(size, int(rng.integers(0, 90)), replace=False))
                values = (rng.standard_normal(mine.size) * 100).astype(dtype)
                values[::5] = -0.0   # a -0.0 held by several ranks sums to +0.0, as 0 + v_0 + v_1 does
                at = r * ws.rowbytes + 8 * hw
                top = sparse_alg._pack_kernel(mine, bounds, ws.flat(wire), at // 4, ws.tab[r, sparse_alg.HEAD:hw])
                assert ws.tab[r, sparse_alg.HEAD:hw].tolist() == sparse_alg.route(mine, bounds).tolist()
                assert top == max(sparse_alg.route(mine, bounds)) and ws.flat(wire)[at // 4:][:mine.size].tolist() \
                    == mine.tolist()
                ws.u8[at + sparse_alg._pad(4 * mine.size):][:values.nbytes] = values.view(np.uint8)
                ws.tab[r, :sparse_alg.HEAD] = (11, 0, 1)
            if p == 3:   # and the argument check's extent
                for case in (np.array([5, -2, 9, 0], np.int64), np.array([7], np.int32)):
                    assert sparse_alg.extent(case) == (int(case.min()), int(case.max()))
                assert sparse_alg._pack_kernel(np.array([4, 2]), bounds, np.zeros(2, wire), 0, np.zeros(p, np.int64)) == -1
                # the lean call's pass (checks, order, routing, indices and values) vs route and plain copies
                quick, wide = sparse_alg._quick_pack_kernel, bounds.astype(np.int64)
                for case in (mine, mine[:1], mine[:0], np.array([3, 3]), np.array([5, 1]), np.array([-1, 4]),
                             np.array([0, size])):
                    head, wi, wv = np.zeros(sparse_alg.HEAD + p, np.int64), np.zeros(case.size + 2, wire), np.zeros(
                        case.size + 2, dtype)
                    given = values if case is mine else np.arange(1, case.size + 1, dtype=dtype)
                    top = quick(case, given, wide, wi, wv, 1, 2, head, size, 77)
                    ok = bool(case.size == 0 or (np.all(np.diff(case) > 0)))
                    if not ok:
                        assert top == -1, case
                    elif case.size and (case[0] < 0 or case[-1] >= size):
                        assert top == -2, case
                    else:
                        counts = sparse_alg.route(case, bounds)
                        assert top == (max(counts) if case.size else 0) and head[sparse_alg.HEAD:].tolist() == \
                            counts.tolist() and head[:2].tolist() == [77, 0]
                        assert wi[1:1 + case.size].tolist() == case.tolist() and wv[2:2 + case.size].tobytes() == \
                            given.tobytes()
            vsz = np.dtype(dtype).itemsize
            assert not sparse_alg._heads(ws, hw, 4, vsz, True)
            fast = [ws.rows.copy(), ws.cols.copy(), ws.own.copy(), ws.ioff * 4, ws.voff * vsz, ws.counts.copy()]
            coo = sparse_alg._combine(ws, wire, np.dtype(dtype), size, SUM, False, True, 0)
            dense = sparse_alg._combine(ws, wire, np.dtype(dtype), size, SUM, np.full(size, np.nan, dtype), True, 0)
            monkeypatch.setenv("MPIML_KERNELS", "numpy")
            assert not sparse_alg._heads(ws, hw, 4, vsz, False)
            for got, want in zip(fast, [ws.rows, ws.cols, ws.own, ws.ioff, ws.voff, ws.counts]):
                assert got.tolist() == want.tolist(), (dtype, p)
            slow = sparse_alg._combine(ws, wire, np.dtype(dtype), size, SUM, False, False, 0)
            slow_dense = sparse_alg._combine(ws, wire, np.dtype(dtype), size, SUM, True, False, 0)
            monkeypatch.delenv("MPIML_KERNELS")
            assert coo.indices.tobytes() == slow.indices.tobytes() and coo.values.tobytes() == slow.values.tobytes()
            assert dense.dense.tobytes() == slow_dense.dense.tobytes() == sparse_alg.densify(
                slow.indices, slow.values, size).tobytes(), (dtype, p)
            ws.tab[0, 2] = 0   # a rank that held back its nonzeros
            assert sparse_alg._heads(ws, hw, 4, vsz, True) is False and ws.late == (ws.counts[0] > 0)
            assert sparse_alg._heads(ws, hw, 4, vsz, False) is False and ws.late == (ws.counts[0] > 0)
            ws.tab[p - 1, 0] = 12   # a rank that disagrees
            assert sparse_alg._heads(ws, hw, 4, vsz, True) and sparse_alg._heads(ws, hw, 4, vsz, False)


def test_model_takes_the_calibrated_sparse_constants():
    from dataclasses import replace

    size, p = 1 << 20, 2
    base = model.predict_sparse(size, 0.007, p, dense_out=False)
    slower = replace(model.DEFAULT_PARAMS, sparse={"SPARSE_FIXED": model.SPARSE_FIXED + 1e-3})
    assert model.predict_sparse(size, 0.007, p, slower, dense_out=False)[0] == pytest.approx(base[0] + 1e-3)
    assert model.ModelParams.from_dict(slower.to_dict()) == slower   # kept in a tuning file's params
    with pytest.raises(ValueError, match="unknown sparse model constants"):
        model.sparse_constants(replace(model.DEFAULT_PARAMS, sparse={"SPARSE_FAST": 1.0}))
    # what calibrate() measures (one rank: the local constants) is what the model takes
    found = sparse_alg.calibrate(size=4096, nonzeros=100, repeats=2, flush_bytes=1 << 16)
    assert set(found) <= set(model.SPARSE_NAMES) and all(x >= 0 for x in found.values())
    assert model.predict_sparse(size, 0.007, p, replace(model.DEFAULT_PARAMS, sparse=found))[0] > 0
