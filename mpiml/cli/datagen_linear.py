"""``mpiml datagen classification|regression``: rows of :mod:`mpiml.data.synthetic` written to a file.

The output is identical for any rank count (row ``i`` depends on the seed only). Each
rank formats its own rows; rank 0 gathers and writes them atomically into one file
(``.svm``/``.libsvm``/``.txt``: svmlight, ``.csv``: CSV, ``.npz``: arrays), or, with
``--shards``, every rank writes its own file ``DIR/part-RRRRR.EXT`` (atomically).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from mpiml.cli.parser import check_writable
from mpiml.data import synthetic, writers
from mpiml.errors import ArgumentError
from mpiml.runtime import partition
from mpiml.runtime.agree import raise_if_any
from mpiml.runtime.files import atomic_write, save_npz_atomic
from mpiml.runtime.progress import Phase, note

SUFFIXES = {".svm": "svmlight", ".libsvm": "svmlight", ".txt": "svmlight", ".csv": "csv", ".npz": "npz"}


def add_arguments(parser, kind):
    parser.add_argument("--n-samples", type=int, default=synthetic.DEFAULTS["n"], help="rows")
    parser.add_argument("--n-features", type=int, default=synthetic.DEFAULTS["d"], help="features per row")
    if kind == "classification":
        parser.add_argument("--classes", type=int, default=2, help="number of classes (labels 0..K-1)")
        parser.add_argument("--separation", type=float, default=synthetic.DEFAULTS["separation"],
                            help="scale of the true scores: larger is easier (default %(default)s)")
    else:
        parser.add_argument("--noise", type=float, default=synthetic.DEFAULTS["noise"],
                            help="standard deviation of the noise added to the targets")
    parser.add_argument("--density", type=float, default=1.0, help="share of nonzero features (<1: sparse)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the model and of the rows")
    parser.add_argument("--out", required=True, help="file (.svm .libsvm .txt .csv .npz), or a directory with --shards")
    parser.add_argument("--shards", action="store_true", help="one file per rank in the directory --out")
    parser.add_argument("--format", choices=("svmlight", "csv", "npz"), help="with --shards (default svmlight)")
    parser.add_argument("--test-out", metavar="FILE", help="also write held-out rows of the same model to FILE")
    parser.add_argument("--test-samples", type=int, default=1000, help="rows written to --test-out")


def spec_of(args, kind) -> str:
    parts = [f"synthetic:{kind}", f"n={args.n_samples}", f"d={args.n_features}", f"density={args.density}",
             f"seed={args.seed}"]
    parts += [f"classes={args.classes}", f"separation={args.separation}"] if kind == "classification" \
        else [f"noise={args.noise}"]
    return ",".join(parts)


def _encode(fmt, X, y) -> bytes:
    return writers.svmlight_bytes(X, y) if fmt == "svmlight" else writers.csv_bytes(X, y)


def run(args, kind, comm) -> dict:
    started = time.perf_counter()
    error = fmt = None
    try:
        spec = spec_of(args, kind)
        _, options = synthetic.parse_spec(spec)
        fmt = args.format or ("svmlight" if args.shards else SUFFIXES.get(Path(args.out).suffix.lower()))
        if fmt is None:
            raise ArgumentError(f"cannot tell the format of {args.out}: use one of {', '.join(SUFFIXES)}")
        if not args.shards:
            check_writable(args.out, "--out")
        else:
            from mpiml.cli.outputs import check_output

            check_output(args.out, "--out", folder=True)
        if args.test_out:
            if args.shards:
                raise ArgumentError("--test-out writes one file: not with --shards")
            if SUFFIXES.get(Path(args.test_out).suffix.lower()) != fmt:
                raise ArgumentError(f"--test-out {args.test_out}: give it the format of --out ({fmt})")
            if args.test_samples < 1:
                raise ArgumentError(f"--test-samples must be at least 1, got {args.test_samples}")
            check_writable(args.test_out, "--test-out")
    except ArgumentError as exc:
        error = exc
    raise_if_any(error, comm)
    _generate_and_write(args.out, kind, options, 0, options["n"], fmt, args.shards, comm)
    summary = {"kind": kind, "spec": spec, "rows": options["n"], "features": options["d"], "format": fmt,
               "out": args.out, "shards": comm.size if args.shards else 1}
    if args.test_out:
        # Rows n .. n + m of the same model: row i depends on the seed only, so these are
        # new rows of the same distribution, as a held-out file must be.
        _generate_and_write(args.test_out, kind, options, options["n"], options["n"] + args.test_samples, fmt,
                            False, comm)
        summary.update(test_out=args.test_out, test_rows=args.test_samples)
    return {**summary, "ranks": comm.size, "seconds": time.perf_counter() - started}


def _generate_and_write(out, kind, options, start, stop, fmt, shards, comm) -> None:
    """Rows ``[start, stop)`` into ``out`` (or a shard per rank in the folder ``out``); collective."""
    lo, hi = partition.contiguous_block(stop - start, comm.size, comm.rank)
    with Phase(f"generating {out}"):
        X, y = synthetic.generate(kind, options, start + lo, start + hi)
    error = None
    try:
        with Phase(f"writing {out}"):
            if shards:
                ext = {"svmlight": "svm", "csv": "csv", "npz": "npz"}[fmt]
                _write(Path(out) / f"part-{comm.rank:05d}.{ext}", fmt, X, y)
            else:
                _write_gathered(Path(out), fmt, X, y, comm)
    except OSError as exc:
        error = ArgumentError(f"cannot write {out}: {exc}")
    raise_if_any(error, comm)
    note(f"wrote {out}")


def _write(path, fmt, X, y):
    if fmt == "npz":
        if sp.issparse(X):
            X = sp.csr_matrix(X)
            save_npz_atomic(path, data=X.data, indices=X.indices, indptr=X.indptr, shape=np.array(X.shape),
                            format=np.array("csr"), y=y)
        else:
            save_npz_atomic(path, X=X, y=y)
        return
    with atomic_write(path) as handle:
        handle.write(_encode(fmt, X, y))


def _write_gathered(path, fmt, X, y, comm):
    if fmt == "npz":
        parts = comm.gather((X, y), root=0)
        if comm.rank == 0:
            Xs = [p[0] for p in parts]
            X = sp.vstack(Xs, format="csr") if sp.issparse(Xs[0]) else np.concatenate(Xs)
            _write(path, fmt, X, np.concatenate([p[1] for p in parts]))
        return
    parts = comm.gather(_encode(fmt, X, y), root=0)
    if comm.rank == 0:
        with atomic_write(path) as handle:
            for part in parts:
                handle.write(part)
