"""``mpiml datagen ratings``: low-rank-plus-noise ratings (mpiml.data.synthetic_ratings) in a file.

The ratings are the same for any rank count: each rank generates its own user groups,
rank 0 gathers them in their global order and writes one file atomically:
``.csv`` (``user,item,rating`` lines), ``.tsv``/``.data`` (tab-separated, the MovieLens
``u.data`` column order) or ``.npz`` (arrays ``users``, ``items``, ``ratings``), all read
back by ``mpiml mf --ratings``.
"""

from __future__ import annotations

import io
import time
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np

from mpiml.cli.parser import check_writable
from mpiml.data.ratings import split_fraction
from mpiml.data.synthetic_ratings import SyntheticSpec, synthetic_ratings
from mpiml.errors import ArgumentError
from mpiml.runtime.agree import raise_if_any
from mpiml.runtime.files import atomic_write, save_npz_atomic
from mpiml.runtime.progress import Phase, note

SUFFIXES = {".csv": ",", ".tsv": "\t", ".data": "\t", ".npz": None}


def _count(text: str) -> int:
    """A whole number, also written as ``1e7``."""
    value = float(text)
    if not value.is_integer():
        raise ValueError(text)
    return int(value)


def add_arguments(parser, kind):
    defaults = SyntheticSpec()
    for field in fields(SyntheticSpec):
        kind_of = float if isinstance(getattr(defaults, field.name), float) else _count
        parser.add_argument(f"--{field.name}", type=kind_of, default=getattr(defaults, field.name),
                            help="(default %(default)s)")
    parser.add_argument("--out", required=True, help="file: .csv, .tsv, .data (tab) or .npz")
    parser.add_argument("--test-out", metavar="FILE", help="also hold out --test-fraction of the ratings into FILE "
                        "(the same model; --out gets the rest)")
    parser.add_argument("--test-fraction", type=float, default=0.2, help="share held out with --test-out")
    parser.add_argument("--split-seed", type=int, default=0, help="seed of the --test-out split")


def run(args, kind, comm) -> dict:
    started = time.perf_counter()
    error = spec = None
    try:
        spec = SyntheticSpec(**{f.name: getattr(args, f.name) for f in fields(SyntheticSpec)})
        if Path(args.out).suffix.lower() not in SUFFIXES:
            raise ArgumentError(f"cannot tell the format of {args.out}: use one of {', '.join(SUFFIXES)}")
        check_writable(args.out, "--out")
        if args.test_out:
            if Path(args.test_out).suffix.lower() not in SUFFIXES:
                raise ArgumentError(f"cannot tell the format of {args.test_out}: use one of {', '.join(SUFFIXES)}")
            check_writable(args.test_out, "--test-out")
            if not 0 < args.test_fraction < 1:
                raise ArgumentError(f"--test-fraction must be in (0, 1), got {args.test_fraction}")
    except ArgumentError as exc:
        error = exc
    raise_if_any(error, comm)
    with Phase("generating ratings", unit="ratings on rank 0") as phase:
        shard = synthetic_ratings(spec, comm.Get_rank(), comm.Get_size(), progress=phase.advance)
    outputs = [(args.out, shard)]
    if args.test_out:  # the same ratings, split by position: the same split at any rank count
        train, test = split_fraction(shard, args.test_fraction, args.split_seed)
        outputs = [(args.out, train), (args.test_out, test)]
    summary = {"kind": kind, "spec": spec.describe(), **asdict(spec)}
    for path, part in outputs:
        _gather_and_write(path, part, comm)
        key = "written_test_ratings" if path == args.test_out and args.test_out else "written_ratings"
        summary[key] = comm.allreduce(len(part))
    return {**summary, "out": args.out, "test_out": args.test_out, "ranks": comm.Get_size(),
            "seconds": time.perf_counter() - started}


def _gather_and_write(path, shard, comm) -> None:
    """Rank 0 writes every rank's ratings to ``path`` in their global order (collective)."""
    parts = comm.gather((shard.keys, shard.users, shard.items, shard.values), root=0)
    error = None
    if comm.Get_rank() == 0:
        keys, users, items, values = (np.concatenate(column) for column in zip(*parts))
        order = np.argsort(keys, kind="stable")
        try:
            with Phase(f"writing {path}"):
                _write(Path(path), users[order], items[order], values[order])
            note(f"wrote {path}")
        except OSError as exc:
            error = ArgumentError(f"cannot write {path}: {exc}")
    raise_if_any(error, comm)


def _write(path: Path, users, items, values) -> None:
    separator = SUFFIXES[path.suffix.lower()]
    if separator is None:
        save_npz_atomic(path, users=users, items=items, ratings=values)
        return
    text = io.StringIO()
    np.savetxt(text, np.column_stack([users, items, values]), fmt=["%d", "%d", "%.17g"], delimiter=separator)
    with atomic_write(path, "w") as handle:
        handle.write(text.getvalue())
