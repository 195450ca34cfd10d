"""The contract every registered algorithm meets, as functions any MPI test can call.

``check(collective, algorithm)`` runs a fixed set of cases through the public function
with ``algorithm=`` and compares each result with numpy on every rank's input (the
oracle of ``oracle.py``; inputs come from seeds, so every rank computes every rank's
input locally and no communication is trusted to build the expected value). It covers
every dtype and every op the dtype allows, counts of 0, 1, fewer than the ranks and
uneven blocks, in and out of place, every root, custom block counts, and operator order:
a non-commutative operator is combined in rank order, or refused (``match="commutative"``)
by an algorithm registered ``commutative_only``. All verdicts are agreed across ranks
at the end (one failure fails every rank, none runs ahead into a hang).
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from mpi4py import MPI
from mpi_helpers import agree
from oracle import DTYPES, make_input, ops_for, within_bound

import mpiml
from mpiml.collectives import registry

COUNTS = (0, 1, 2, 13, 97)  # with p - 1 and p + 1 added per run: empty, single, uneven blocks


def _entry(collective, algorithm):
    return None if algorithm == "auto" else registry.get(collective, algorithm)


def _inputs(n, dtype, op, seed, p):
    """Every rank's input, computed locally from seeds."""
    return [make_input(n, dtype, op, seed + r) for r in range(p)]


def _reductions(counts, salt, p):
    """``(dtype, op, n, inputs)`` for every dtype, every op it allows, every count."""
    for dtype in DTYPES:
        for op in ops_for(dtype):
            for n in counts:
                yield dtype, op, n, _inputs(n, dtype, op, 100 * n + salt, p)


def _counts(comm):
    return sorted(set(COUNTS) | {max(comm.size - 1, 0), comm.size + 1})


class _Verdicts:
    """Local verdicts and result digests, agreed across ranks once at the end."""

    def __init__(self, comm):
        self.comm, self.bad, self.digests = comm, [], []

    def expect(self, ok, what):
        if not ok:
            self.bad.append(what)

    def same_everywhere(self, array):
        self.digests.append(hashlib.blake2b(np.ascontiguousarray(array).tobytes(), digest_size=8).hexdigest())

    def settle(self):
        agree(self.comm, not self.bad, self.bad[:5])
        everyone = self.comm.allgather(self.digests)
        agree(self.comm, all(d == everyone[0] for d in everyone), "results differ between ranks")


def _compose_affine(f, g, out):
    """(a1, b1) o (a2, b2) = (a1 a2, a1 b2 + b1), maps x -> a x + b packed as a + b i."""
    a = f.real * g.real
    b = f.real * g.imag + f.imag
    out.real, out.imag = a, b
    return out


AFFINE = mpiml.ReduceOp(_compose_affine, commutative=False, name="affine")


def _affine_inputs(p, n=9):
    def one(r):
        rng = np.random.default_rng(r)
        return (rng.choice([-1.0, 1.0, 2.0], n) + 1j * rng.integers(-3, 4, n)).astype(np.complex128)

    return [one(r) for r in range(p)]


def _in_rank_order(inputs):
    expected = inputs[0].copy()
    for g in inputs[1:]:
        _compose_affine(expected, g, expected)
    return expected


def _non_commutative(call, entry, verdicts, expected):
    """A rank-order result from a non-commutative op (``expected`` None: no result on this
    rank), or the refusal of an algorithm registered ``commutative_only``."""
    if entry is not None and entry.commutative_only:
        with pytest.raises(mpiml.ArgumentError, match="commutative"):
            call(AFFINE)
        return
    result = call(AFFINE)
    ok = result is None if expected is None else result is not None and np.array_equal(result, expected)
    verdicts.expect(ok, "non-commutative op not combined in rank order")


def check_allreduce(algorithm, comm):
    p, r = comm.size, comm.rank
    verdicts = _Verdicts(comm)
    for dtype, op, n, inputs in _reductions(_counts(comm), 0, p):
        for in_place in (False, True):
            x = inputs[r].copy()
            result = mpiml.allreduce(x, op=op, algorithm=algorithm, comm=comm, out=x if in_place else None)
            ok, why = within_bound(result, inputs, op)
            kept = result is x if in_place else np.array_equal(x, inputs[r])
            verdicts.expect(ok and kept and result.shape == (n,),
                            f"{dtype} {op} n={n} in_place={in_place}: {why or 'input/out handling'}")
            verdicts.same_everywhere(result)
    # Multi-dimensional, non-contiguous input; and a larger exact sum.
    base = np.arange(60, dtype=np.float64).reshape(6, 10)
    result = mpiml.allreduce((base * (r + 1))[:, ::2], algorithm=algorithm, comm=comm)
    verdicts.expect(result.shape == (6, 5) and np.array_equal(result, base[:, ::2] * (p * (p + 1) // 2)), "2-D strided")
    big = (np.arange(100_003) % 1000).astype(np.float32)
    verdicts.expect(np.array_equal(mpiml.allreduce(big * (r + 1), algorithm=algorithm, comm=comm),
                                   big * (p * (p + 1) // 2)), "100003 float32")
    inputs = _affine_inputs(p)
    _non_commutative(lambda op: mpiml.allreduce(inputs[r], op=op, algorithm=algorithm, comm=comm),
                     _entry("allreduce", algorithm), verdicts, _in_rank_order(inputs))
    verdicts.settle()


def check_reduce_scatter(algorithm, comm):
    p, r = comm.size, comm.rank
    verdicts = _Verdicts(comm)
    for dtype, op, n, inputs in _reductions(_counts(comm), 7, p):
        cuts = np.sort(np.random.default_rng(n).integers(0, n + 1, size=p - 1))
        for counts in (None, np.diff(np.concatenate([[0], cuts, [n]]))):  # balanced; uneven, empty blocks
            layout = [len(b) for b in np.array_split(np.arange(n), p)] if counts is None else counts
            lo = int(np.sum(layout[:r]))
            mine = slice(lo, lo + int(layout[r]))
            block = mpiml.reduce_scatter(inputs[r], op=op, algorithm=algorithm, comm=comm, counts=counts)
            ok, why = within_bound(block, [x[mine] for x in inputs], op)
            verdicts.expect(ok and block.shape == (layout[r],), f"{dtype} {op} n={n} counts={counts}: {why}")
    inputs = _affine_inputs(p, 3 * p)
    expected = _in_rank_order(inputs)[3 * r:3 * r + 3]
    _non_commutative(lambda op: mpiml.reduce_scatter(inputs[r], op=op, algorithm=algorithm, comm=comm),
                     _entry("reduce_scatter", algorithm), verdicts, expected)
    verdicts.settle()


def check_allgather(algorithm, comm):
    p, r = comm.size, comm.rank
    verdicts = _Verdicts(comm)
    for dtype in DTYPES:
        for width in (0, 3):
            for max_rows in (0, 1, 5):
                rows = [(q * 7 + max_rows) % (max_rows + 1) for q in range(p)]
                shapes = [(k,) if width == 0 else (k, width) for k in rows]
                inputs = [make_input(int(np.prod(s)), dtype, "sum", 31 * q).reshape(s) for q, s in enumerate(shapes)]
                result = mpiml.allgather(inputs[r], algorithm=algorithm, comm=comm)
                expected = np.concatenate(inputs)
                verdicts.expect(result.shape == expected.shape and np.array_equal(result, expected),
                                f"{dtype} width={width} rows={rows}")
                verdicts.same_everywhere(result)
    scalar = mpiml.allgather(np.float64(r), algorithm=algorithm, comm=comm)  # 0-d counts as one element
    verdicts.expect(np.array_equal(scalar, np.arange(p, dtype=np.float64)), "0-d input")
    verdicts.settle()


def check_bcast(algorithm, comm):
    p, r = comm.size, comm.rank
    verdicts = _Verdicts(comm)
    for dtype in DTYPES:
        for n in (0, 1, 13, 700):
            source = make_input(n, dtype, "sum", n)
            for root in sorted({0, p // 2, p - 1}):
                for segment in (None, 7, 1000):  # the default, less than one element, several elements
                    buf = source.copy() if r == root else np.zeros_like(source)
                    returned = mpiml.bcast(buf, root=root, algorithm=algorithm, comm=comm, segment_bytes=segment)
                    verdicts.expect(returned is buf and np.array_equal(buf, source),
                                    f"{dtype} n={n} root={root} segment={segment}")
    verdicts.settle()


def check_reduce(algorithm, comm):
    p, r = comm.size, comm.rank
    verdicts = _Verdicts(comm)
    for dtype, op, n, inputs in _reductions((0, 1, 13), 3, p):
        for root in sorted({0, p // 2, p - 1}):
            for in_place in (False, True):
                x = inputs[r].copy()
                result = mpiml.reduce(x, root=root, op=op, algorithm=algorithm, comm=comm, out=x if in_place else None)
                if r == root:
                    ok, why = within_bound(result, inputs, op)
                    ok = ok and (result is x if in_place else np.array_equal(x, inputs[r]))
                else:
                    ok, why = result is None and np.array_equal(x, inputs[r]), "non-root got a result"
                verdicts.expect(ok, f"{dtype} {op} n={n} root={root} in_place={in_place}: {why}")
    inputs = _affine_inputs(p)
    expected = _in_rank_order(inputs)
    for root in range(p):
        def call(op, root=root):
            return mpiml.reduce(inputs[r], root=root, op=op, algorithm=algorithm, comm=comm)

        _non_commutative(call, _entry("reduce", algorithm), verdicts, expected if r == root else None)
    verdicts.settle()


CHECKS = {"allreduce": check_allreduce, "reduce_scatter": check_reduce_scatter, "allgather": check_allgather,
          "bcast": check_bcast, "reduce": check_reduce}


def check(collective, algorithm, comm=None):
    """Assert (on every rank) that ``algorithm`` of ``collective`` meets the contract on ``comm``."""
    CHECKS[collective](algorithm, comm or MPI.COMM_WORLD)


def every_algorithm():
    """``(collective, name)`` for ``auto`` and every algorithm registered now, each collective in turn."""
    return [(collective, name) for collective in registry.COLLECTIVES
            for name in ("auto", *registry.ALGORITHMS[collective])]
