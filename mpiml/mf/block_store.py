"""Partitioned factors on disk: each rank writes its blocks, a manifest ties them, any rank count reads them.

A save is a directory:

- ``block-RRRRR.npz``, one per rank ``R`` of the writing run: its rows of the user factors
  (``user_block``), of the item factors (``item_block``) and the CSR of its users' training
  items (``rated_indptr``, ``rated_indices``);
- ``ids.npz`` (rank 0): the sorted raw ``user_ids`` and ``item_ids`` and the global mean ``mu``;
- ``manifest.json`` (rank 0, written last): ``format`` (:data:`FORMAT`), ``version``,
  ``n_users``, ``n_items``, ``width``, ``dtype``, the writing run's ``user_bounds`` and
  ``item_bounds``, every file with its size in bytes and SHA-256, and the caller's ``config``.

Every file is written atomically (:mod:`mpiml.runtime.files`). The manifest of an earlier save in
the same directory is removed before any block is written and the new one is written only once
every rank's blocks are on disk, so a save cut short leaves no manifest and is never read as
complete; block files of an earlier save that the new manifest does not list are removed after it.

:func:`load_blocks` reads at any rank count ``p'``: it cuts users and items into ``p'``
contiguous blocks (:func:`mpiml.runtime.partition.contiguous`, or the bounds given) and each
rank reads only the files whose blocks overlap its own, checking their size and checksum.
:func:`load_full` reads everything into the replicated arrays of
:class:`~mpiml.mf.estimator.FactorModel`, and :func:`to_model_file` writes them as the file
``FactorModel.load`` reads. A missing, truncated or altered file raises
:class:`~mpiml.errors.DataError` naming it, on every rank.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np

from mpiml.errors import ArgumentError, DataError, MpimlError
from mpiml.mf.serving import PartitionedFactors
from mpiml.runtime import partition
from mpiml.runtime.agree import raise_if_any
from mpiml.runtime.comm import private_comm, resolve_comm
from mpiml.runtime.files import atomic_write

__all__ = ["FORMAT", "VERSION", "save_blocks", "load_blocks", "load_full", "read_manifest", "to_model_file",
           "read_plan"]

FORMAT = "mpiml-partitioned-factors"
VERSION = 1
MANIFEST = "manifest.json"
IDS = "ids.npz"
READ_ERRORS = (OSError, ValueError, KeyError, TypeError, EOFError)


def block_name(rank: int) -> str:
    """File name of the blocks of writing rank ``rank``."""
    return f"block-{rank:05d}.npz"


def _npz_bytes(**arrays) -> bytes:
    """``numpy.savez`` of plain arrays, in memory (so the checksum is of exactly what is written)."""
    buffer = io.BytesIO()
    np.savez(buffer, **{name: np.asarray(value) for name, value in arrays.items()})
    return buffer.getvalue()


def _write(path: Path, data: bytes) -> dict:
    """Write ``data`` atomically; its manifest entry."""
    with atomic_write(path) as handle:
        handle.write(data)
    return {"name": path.name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def save_blocks(path, pf: PartitionedFactors, config: dict | None = None, comm=None) -> None:
    """Write every rank's blocks of ``pf`` under the directory ``path`` (collective).

    ``config`` (JSON-serializable: the model's algorithm and parameters) is stored in the
    manifest. Raises :class:`~mpiml.errors.DataError` on every rank if any rank cannot write.
    """
    comm = resolve_comm(comm)
    rank, size = comm.Get_rank(), comm.Get_size()
    root = Path(path)
    error = None
    if pf.size != size or pf.rank != rank:
        error = ArgumentError(f"these factors are rank {pf.rank} of {pf.size}, the communicator's rank {rank} "
                              f"of {size}")
    elif rank == 0:
        try:
            json.dumps(config)
            root.mkdir(parents=True, exist_ok=True)
            (root / MANIFEST).unlink(missing_ok=True)  # until the new one is written, no save here is complete
        except (TypeError, ValueError) as exc:
            error = ArgumentError(f"config must be JSON-serializable: {exc}")
        except OSError as exc:
            error = DataError(f"cannot write partitioned factors: {exc}", str(root))
    raise_if_any(error, comm)
    entry = None
    try:
        entry = _write(root / block_name(rank), _npz_bytes(
            user_block=pf.user_block, item_block=pf.item_block, rated_indptr=pf.rated_indptr,
            rated_indices=pf.rated_indices))
    except OSError as exc:
        error = DataError(f"cannot write blocks: {exc}", str(root / block_name(rank)))
    raise_if_any(error, comm)
    entries = private_comm(comm).gather(entry, root=0)
    if rank == 0:
        try:
            ids = _write(root / IDS, _npz_bytes(user_ids=pf.user_ids, item_ids=pf.item_ids, mu=np.array(pf.mu)))
            manifest = {
                "format": FORMAT, "version": VERSION, "n_users": pf.n_users, "n_items": pf.n_items,
                "width": pf.width, "dtype": str(pf.user_block.dtype), "ranks": size,
                "user_bounds": np.asarray(pf.user_bounds).tolist(), "item_bounds": np.asarray(pf.item_bounds).tolist(),
                "blocks": entries, "ids": ids, "config": config,
            }
            with atomic_write(root / MANIFEST, "w") as handle:
                json.dump(manifest, handle, indent=1)
            listed = {e["name"] for e in entries}
            for stale in root.glob("block-*.npz"):
                if stale.name not in listed:
                    stale.unlink(missing_ok=True)
        except OSError as exc:
            error = DataError(f"cannot write the manifest: {exc}", str(root / MANIFEST))
    raise_if_any(error, comm)


def _bounds(manifest: dict, key: str, n: int, ranks: int) -> np.ndarray:
    bounds = np.asarray(manifest[key], dtype=np.int64)
    if bounds.shape != (ranks + 1,) or bounds[0] != 0 or bounds[-1] != n or np.any(np.diff(bounds) < 0):
        raise ValueError(f"{key} {manifest[key]} do not cut {n} rows into {ranks} blocks")
    return bounds


def _manifest(root: Path) -> dict:
    """The checked manifest of the save in ``root`` (bounds as arrays); DataError if absent or invalid."""
    where = root / MANIFEST
    if not where.is_file():
        raise DataError("no manifest: not a directory of saved partitioned factors, or a save that did not "
                        "finish", str(where))
    try:
        with open(where) as handle:
            manifest = json.load(handle)
        if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
            raise DataError(f"not a {FORMAT} manifest of version {VERSION}", str(where))
        ranks, nu, ni = int(manifest["ranks"]), int(manifest["n_users"]), int(manifest["n_items"])
        manifest["user_bounds"] = _bounds(manifest, "user_bounds", nu, ranks)
        manifest["item_bounds"] = _bounds(manifest, "item_bounds", ni, ranks)
        if len(manifest["blocks"]) != ranks:
            raise ValueError(f"{len(manifest['blocks'])} block files listed for {ranks} ranks")
        int(manifest["width"])
        np.dtype(manifest["dtype"])
        for entry in [*manifest["blocks"], manifest["ids"]]:
            if Path(entry["name"]).name != entry["name"]:
                raise ValueError(f"file name {entry['name']!r} is not a plain name")
            int(entry["bytes"]), str(entry["sha256"])
    except MpimlError:
        raise
    except READ_ERRORS as exc:
        raise DataError(f"invalid manifest ({type(exc).__name__}: {exc})", str(where)) from None
    return manifest


def _read(root: Path, entry: dict, expect: dict) -> dict:
    """The arrays of one listed file, after checking its size and checksum; ``expect``: name -> check."""
    where = root / entry["name"]
    try:
        data = where.read_bytes()
    except OSError as exc:
        raise DataError(f"missing or unreadable ({exc.strerror or exc})", str(where)) from None
    if len(data) != int(entry["bytes"]) or hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise DataError(f"corrupt: {len(data)} bytes whose SHA-256 differs from the manifest's "
                        f"({entry['bytes']} bytes)", str(where))
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in expect}
    except READ_ERRORS as exc:
        raise DataError(f"cannot read ({type(exc).__name__}: {exc})", str(where)) from None
    for name, check in expect.items():
        problem = check(arrays[name])
        if problem:
            raise DataError(f"array {name!r} {problem}", str(where))
    return arrays


def read_plan(old_bounds, lo: int, hi: int) -> list:
    """``[(old block, first row, stop row), ...]`` in the old blocks that rows ``lo:hi`` cover (pure).

    Rows are counted within each old block; empty overlaps are left out.
    """
    old = np.asarray(old_bounds, dtype=np.int64)
    plan = []
    for b in range(old.size - 1):
        start, stop = max(lo, int(old[b])), min(hi, int(old[b + 1]))
        if start < stop:
            plan.append((b, start - int(old[b]), stop - int(old[b])))
    return plan


def _shape(rows: int, width: int, dtype):
    """A check that an array is ``(rows, width)`` of ``dtype``."""
    def check(a):
        if a.shape != (rows, width) or a.dtype != dtype:
            return f"is {a.dtype}{a.shape}, the manifest says {np.dtype(dtype)}({rows}, {width})"
        return None
    return check


def _indptr(rows: int):
    def check(a):
        if a.shape != (rows + 1,) or a.dtype.kind not in "iu" or a[0] != 0 or np.any(np.diff(a) < 0):
            return f"is not the index pointer of {rows} rows"
        return None
    return check


def _read_range(root: Path, manifest: dict, users: tuple, items: tuple) -> dict:
    """The blocks of users ``users[0]:users[1]`` and items ``items[0]:items[1]``, from the files they overlap."""
    ub, ib = manifest["user_bounds"], manifest["item_bounds"]
    width, dtype = int(manifest["width"]), np.dtype(manifest["dtype"])
    user_plan, item_plan = read_plan(ub, *users), read_plan(ib, *items)
    files = {}
    for b in sorted({b for b, _, _ in user_plan} | {b for b, _, _ in item_plan}):
        nu, ni = int(ub[b + 1] - ub[b]), int(ib[b + 1] - ib[b])
        arrays = _read(root, manifest["blocks"][b], {
            "user_block": _shape(nu, width, dtype), "item_block": _shape(ni, width, dtype),
            "rated_indptr": _indptr(nu), "rated_indices": lambda a: None})
        where = root / manifest["blocks"][b]["name"]
        indices, n_items = arrays["rated_indices"], int(manifest["n_items"])
        if indices.ndim != 1 or arrays["rated_indptr"][-1] != indices.size or \
                (indices.size and (indices.min() < 0 or indices.max() >= n_items)):
            raise DataError("its rated items do not match its index pointer and the item count", str(where))
        files[b] = arrays
    pieces = [(files[b], a, c) for b, a, c in user_plan]
    indptr = [np.zeros(1, np.int64)]
    for arrays, a, c in pieces:
        ptr = arrays["rated_indptr"]
        indptr.append(indptr[-1][-1] + (ptr[a + 1:c + 1] - ptr[a]))
    empty = np.zeros((0, width), dtype)
    return {
        "user_block": np.concatenate([empty] + [f["user_block"][a:c] for f, a, c in pieces]),
        "item_block": np.concatenate([empty] + [files[b]["item_block"][a:c] for b, a, c in item_plan]),
        "rated_indptr": np.concatenate(indptr).astype(np.int64),
        "rated_indices": np.concatenate([np.zeros(0, np.int64)] + [
            f["rated_indices"][f["rated_indptr"][a]:f["rated_indptr"][c]].astype(np.int64) for f, a, c in pieces]),
    }


def _ids(root: Path, manifest: dict) -> dict:
    def sorted_ids(n):
        def check(a):
            if a.shape != (n,) or a.dtype.kind not in "iu" or np.any(np.diff(a) <= 0):
                return f"is not {n} sorted distinct ids"
            return None
        return check
    return _read(root, manifest["ids"], {"user_ids": sorted_ids(int(manifest["n_users"])),
                                         "item_ids": sorted_ids(int(manifest["n_items"])),
                                         "mu": lambda a: None if a.shape == () else "is not a number"})


def read_manifest(path, comm=None) -> dict:
    """The manifest of the save in ``path`` (bounds as arrays; ``config`` as given to :func:`save_blocks`).

    Collective: every rank reads it; :class:`~mpiml.errors.DataError` on every rank if it is
    missing or invalid.
    """
    comm = resolve_comm(comm)
    manifest, error = None, None
    try:
        manifest = _manifest(Path(path))
    except DataError as exc:
        error = exc
    raise_if_any(error, comm)
    return manifest


def load_blocks(path, comm=None, user_bounds=None, item_bounds=None) -> PartitionedFactors:
    """This rank's :class:`~mpiml.mf.serving.PartitionedFactors` of a save, at any rank count (collective).

    Parameters
    ----------
    path : str or Path
        A directory written by :func:`save_blocks`.
    comm : mpi4py.MPI.Intracomm, optional
        Its size ``p'`` may differ from the writing run's.
    user_bounds, item_bounds : array of int, optional
        The new blocks (``p' + 1`` boundaries); default: ``p'`` contiguous blocks of about
        equal row counts.

    Raises
    ------
    DataError
        On every rank, naming the file, if the manifest or a file this run needs is missing,
        truncated, altered or of other shapes than the manifest says.
    """
    comm = resolve_comm(comm)
    rank, size = comm.Get_rank(), comm.Get_size()
    root = Path(path)
    manifest = read_manifest(root, comm)
    nu, ni = int(manifest["n_users"]), int(manifest["n_items"])
    error, pf = None, None
    try:
        ub = partition.contiguous(nu, size) if user_bounds is None else np.asarray(user_bounds, np.int64)
        ib = partition.contiguous(ni, size) if item_bounds is None else np.asarray(item_bounds, np.int64)
        for name, bounds, n in (("user_bounds", ub, nu), ("item_bounds", ib, ni)):
            if bounds.shape != (size + 1,) or bounds[0] != 0 or bounds[-1] != n or np.any(np.diff(bounds) < 0):
                raise ArgumentError(f"{name} must be {size + 1} non-decreasing boundaries from 0 to {n}")
        ids = _ids(root, manifest)
        blocks = _read_range(root, manifest, partition.block(ub, rank), partition.block(ib, rank))
        pf = PartitionedFactors(ub, ib, blocks["user_block"], blocks["item_block"], ids["user_ids"],
                                ids["item_ids"], float(ids["mu"]), blocks["rated_indptr"], blocks["rated_indices"],
                                rank, size)
    except (DataError, ArgumentError) as exc:
        error = exc
    raise_if_any(error, comm)
    return pf


def load_full(path, comm=None) -> dict:
    """The whole model as ``FactorModel``'s replicated arrays: ``P``, ``Q``, ``mu``, ``user_ids``,
    ``item_ids``, ``rated_indptr``, ``rated_indices`` and the ``config`` saved with it.

    Every rank reads every file (collective only to agree on errors; ``comm=MPI.COMM_SELF`` reads alone).
    """
    comm = resolve_comm(comm)
    root = Path(path)
    manifest = read_manifest(root, comm)
    out, error = None, None
    try:
        ids = _ids(root, manifest)
        blocks = _read_range(root, manifest, (0, int(manifest["n_users"])), (0, int(manifest["n_items"])))
        out = {"P": blocks["user_block"], "Q": blocks["item_block"], "mu": float(ids["mu"]),
               "user_ids": ids["user_ids"], "item_ids": ids["item_ids"], "rated_indptr": blocks["rated_indptr"],
               "rated_indices": blocks["rated_indices"], "config": manifest["config"]}
    except DataError as exc:
        error = exc
    raise_if_any(error, comm)
    return out


def to_model_file(path, out, comm=None) -> None:
    """Write the save in ``path`` as one replicated model file ``out`` (rank 0 writes; collective).

    The arrays of ``FactorModel.save``, with the saved ``config`` as its ``config``: when that is
    the config ``FactorModel.save`` writes (``format``, ``algorithm``, ``params``, ``reg_``),
    ``FactorModel.load(out)`` reads the model.
    """
    from mpiml.runtime.files import save_npz_atomic

    comm = resolve_comm(comm)
    full, error = load_full(path, comm), None
    if comm.Get_rank() == 0:
        try:
            save_npz_atomic(out, P=full["P"], Q=full["Q"], mu=np.array(full["mu"]), user_ids=full["user_ids"],
                            item_ids=full["item_ids"], rated_indptr=full["rated_indptr"],
                            rated_indices=full["rated_indices"], config=np.array(json.dumps(full["config"])))
        except OSError as exc:
            error = DataError(f"cannot write model: {exc}", str(out))
    raise_if_any(error, comm)
