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
from mpiml.data.synthetic_ratings import SyntheticSpec, synthetic_ratings
from mpiml.errors import ArgumentError
from mpiml.runtime.agree import raise_if_any
from mpiml.runtime.files import atomic_write, save_npz_atomic

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


def run(args, kind, comm) -> dict:
    started = time.perf_counter()
    error = spec = None
    try:
        spec = SyntheticSpec(**{f.name: getattr(args, f.name) for f in fields(SyntheticSpec)})
        if Path(args.out).suffix.lower() not in SUFFIXES:
            raise ArgumentError(f"cannot tell the format of {args.out}: use one of {', '.join(SUFFIXES)}")
        check_writable(args.out, "--out")
    except ArgumentError as exc:
        error = exc
    raise_if_any(error, comm)
    shard = synthetic_ratings(spec, comm.Get_rank(), comm.Get_size())
    parts = comm.gather((shard.keys, shard.users, shard.items, shard.values), root=0)
    error = None
    if comm.Get_rank() == 0:
        keys, users, items, values = (np.concatenate(column) for column in zip(*parts))
        order = np.argsort(keys, kind="stable")
        try:
            _write(Path(args.out), users[order], items[order], values[order])
        except OSError as exc:
            error = ArgumentError(f"cannot write {args.out}: {exc}")
    raise_if_any(error, comm)
    total = comm.allreduce(len(shard))
    return {"kind": kind, "spec": spec.describe(), **asdict(spec), "written_ratings": total, "out": args.out,
            "ranks": comm.Get_size(), "seconds": time.perf_counter() - started}


def _write(path: Path, users, items, values) -> None:
    separator = SUFFIXES[path.suffix.lower()]
    if separator is None:
        save_npz_atomic(path, users=users, items=items, ratings=values)
        return
    text = io.StringIO()
    np.savetxt(text, np.column_stack([users, items, values]), fmt=["%d", "%d", "%.17g"], delimiter=separator)
    with atomic_write(path, "w") as handle:
        handle.write(text.getvalue())
