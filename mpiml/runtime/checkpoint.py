"""Checkpoints: a directory of self-describing ``.npz`` files, a JSON manifest that indexes them, a lock.

Layout::

    DIR/manifest.json        {"format": 2, "latest": "step-00000120.npz", "step": 120, ...meta of the latest,
                              "checkpoints": [{"file": ..., "step": ..., "sha256": ...}, ...newest first]}
    DIR/step-00000120.npz    the arrays of that step, and its meta as JSON (``mpiml_meta``)
    DIR/step-00000100.npz    the previous good one (``keep`` = 2 are kept)
    DIR/mpiml.lock           while a run holds the directory (:mod:`mpiml.runtime.lock`)

Writing: the arrays file first (atomically: a temporary beside it, fsynced, renamed), then
the manifest (the same way), then older files are removed; a crash at any moment leaves
the previous checkpoint readable. The fault stages ``checkpoint-before-write``,
``checkpoint-after-write`` (arrays written, manifest not yet replaced) and
``checkpoint-after-rename`` (manifest replaced, old files not yet removed) let tests kill a
writer at each point (:mod:`mpiml.runtime.fault`). Temporaries of killed writers are removed
at the next write.

Reading verifies the newest checkpoint the manifest lists (its SHA-256, the zip's CRCs, its
meta, the keys the caller expects) and falls back to the previous one, with a warning, when
it is corrupt; names in the manifest must be plain ``step-N.npz`` files of the directory.
A manifest that is missing or unreadable while step files exist is rebuilt from them
(each file carries its own meta). Anything else is a :class:`CheckpointError` naming the
file. Nothing is ever unpickled. Pure file functions: callers decide which rank writes
(rank 0) and broadcast what they read.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import sys
from pathlib import Path

import numpy as np

from mpiml.errors import CheckpointError
from mpiml.runtime import fault, fingerprint
from mpiml.runtime.files import atomic_write

FORMAT = 2
MANIFEST = "manifest.json"
META_KEY = "mpiml_meta"
_NAME = re.compile(r"step-\d{8,}\.npz")
# The SHA-256 of files this process wrote or verified, by (path, size, mtime): the writer
# checks the previous checkpoint is still good without reading it again.
_VERIFIED: dict = {}


def _stamp(path: Path):
    st = path.stat()
    return str(path), st.st_size, st.st_mtime_ns


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _file_sha(path: Path) -> str:
    """The SHA-256 of ``path`` (cached by size and modification time)."""
    key = _stamp(path)
    if key not in _VERIFIED:
        _VERIFIED[key] = _sha256_file(path)
    return _VERIFIED[key]


def warn(message: str) -> None:
    """One ``mpiml: warning:`` line on stderr (callers run on rank 0)."""
    print(f"mpiml: warning: {message}", file=sys.stderr, flush=True)


def remove_temporaries(directory) -> list:
    """Remove what killed writers left (``.NAME.XXXX.tmp``); returns the names removed."""
    removed = []
    with contextlib.suppress(FileNotFoundError):
        for path in Path(directory).glob(".*.tmp"):
            with contextlib.suppress(FileNotFoundError, IsADirectoryError, PermissionError):
                path.unlink()
                removed.append(path.name)
    return removed


def step_files(directory) -> list:
    """The ``step-N.npz`` files of ``directory``, newest (highest N) first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted((p for p in directory.iterdir() if _NAME.fullmatch(p.name)),
                  key=lambda p: int(p.name[5:-4]), reverse=True)


def has_checkpoint(directory) -> bool:
    """Whether ``directory`` holds a checkpoint (a manifest or a step file)."""
    directory = Path(directory)
    return (directory / MANIFEST).exists() or bool(step_files(directory))


def clear(directory) -> None:
    """Remove every checkpoint of ``directory`` (manifest first, so nothing half-removed is readable)."""
    directory = Path(directory)
    with contextlib.suppress(FileNotFoundError):
        (directory / MANIFEST).unlink()
    for path in step_files(directory):
        path.unlink(missing_ok=True)
    remove_temporaries(directory)


def _entries(manifest) -> list | None:
    """The manifest's list of checkpoints, or None if it has none that can be read."""
    if not isinstance(manifest, dict):
        return None
    entries = manifest.get("checkpoints")
    if not isinstance(entries, list):
        return None
    return entries


def _entry_error(entry) -> str | None:
    """Why a manifest entry cannot be used (None: it can)."""
    if not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
        return "the manifest entry is malformed"
    if not _NAME.fullmatch(entry["file"]):
        return f"the manifest names {entry['file']!r}, not a step-N.npz file of the directory"
    if not isinstance(entry.get("sha256"), str) or not isinstance(entry.get("step"), int):
        return "the manifest entry has no checksum or step"
    return None


def _read_manifest(directory: Path):
    """``(manifest, problem)``: the parsed manifest (None if missing or unreadable) and why it is unreadable."""
    path = directory / MANIFEST
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None, None
    except (OSError, UnicodeDecodeError) as exc:
        return None, f"{path} cannot be read ({exc})"
    try:
        manifest = json.loads(text)
    except ValueError as exc:
        return None, f"{path} is not valid JSON ({exc})"
    if not isinstance(manifest, dict):
        return None, f"{path} is not a checkpoint manifest"
    fmt = manifest.get("format")
    if isinstance(fmt, int) and not isinstance(fmt, bool) and fmt != FORMAT:
        raise CheckpointError(f"{path}: unknown checkpoint format {fmt!r} (this mpiml writes format {FORMAT}); "
                              "use another checkpoint directory or start afresh with --overwrite")
    if fmt != FORMAT or _entries(manifest) is None:
        return None, f"{path} is not a checkpoint manifest (no format or list of checkpoints)"
    return manifest, None


def write_checkpoint(directory, step: int, arrays: dict, meta: dict | None = None, keep: int = 2) -> Path:
    """Write the arrays of ``step`` and point the manifest at them; returns the npz path.

    ``meta`` (JSON-able) is stored in the file and merged into the manifest. The ``keep``
    newest good checkpoints stay; a listed one whose file no longer matches its checksum
    is dropped from the list.
    """
    directory = Path(directory)
    name = f"step-{int(step):08d}.npz"
    meta = dict(meta or {})
    if META_KEY in arrays:
        raise CheckpointError(f"array name {META_KEY!r} is reserved for the checkpoint's meta")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        remove_temporaries(directory)
        fault.stage("checkpoint-before-write")
        for key, value in arrays.items():
            if np.asarray(value).dtype.hasobject:
                raise CheckpointError(f"array {key!r} holds Python objects; mpiml never pickles")
        buffer = io.BytesIO()
        np.savez(buffer, **arrays, **{META_KEY: np.array(json.dumps({**meta, "step": int(step)}, sort_keys=True))})
        data = buffer.getvalue()
        sha = hashlib.sha256(data).hexdigest()
        with atomic_write(directory / name) as handle:
            handle.write(data)
        _VERIFIED[_stamp(directory / name)] = sha
        fault.stage("checkpoint-after-write")
        entries = [{"file": name, "step": int(step), "sha256": sha}]
        old, _ = _read_manifest(directory)
        for entry in _entries(old) or []:
            if len(entries) >= keep:
                break
            if _entry_error(entry) or entry["file"] == name:
                continue
            path = directory / entry["file"]
            with contextlib.suppress(OSError):
                if path.is_file() and not path.is_symlink() and _file_sha(path) == entry["sha256"]:
                    entries.append(entry)
        manifest = {**meta, "format": FORMAT, "latest": name, "step": int(step), "checkpoints": entries}
        with atomic_write(directory / MANIFEST, "w") as handle:
            json.dump(manifest, handle, indent=1, sort_keys=True)
        fault.stage("checkpoint-after-rename")
    except OSError as exc:
        raise CheckpointError(f"cannot write checkpoint in {directory}: {exc}") from exc
    kept = {entry["file"] for entry in entries}
    for path in step_files(directory):
        if path.name not in kept:
            path.unlink(missing_ok=True)
    return directory / name


def _load(directory: Path, name: str, sha: str | None, check, expect=None) -> tuple:
    """``(arrays, meta)`` of one checkpoint file; raises ``ValueError`` saying why it is unusable."""
    path = directory / name
    if path.is_symlink() or not path.is_file():
        raise ValueError("the file is missing")
    if sha is not None and _sha256_file(path) != sha:
        raise ValueError("its SHA-256 does not match the manifest (the file changed after it was written)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except Exception as exc:  # noqa: BLE001 - a damaged zip raises anything (BadZipFile, EOFError, zlib.error...)
        if "pickle" in str(exc):
            raise ValueError("it holds Python objects, which mpiml never loads (a checkpoint holds plain arrays)") \
                from None
        raise ValueError(f"it is not a readable .npz file ({type(exc).__name__}: {exc})") from None
    if META_KEY not in arrays:
        raise ValueError("it holds no checkpoint meta (not written by mpiml)")
    try:
        meta = json.loads(str(arrays.pop(META_KEY)))
    except ValueError as exc:
        raise ValueError(f"its meta is not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("step"), int):
        raise ValueError("its meta is malformed")
    if expect is not None:  # another run's checkpoint is not corrupt: refused, with no fallback
        fingerprint.check(meta.get("fingerprint"), expect, directory)
    if check is not None:
        try:
            check(arrays, meta)
        except CheckpointError as exc:
            raise ValueError(str(exc)) from None
    if sha is not None:
        _VERIFIED[_stamp(path)] = sha
    return arrays, meta


def read_checkpoint(directory, check=None, expect=None):
    """``(arrays, manifest)`` of the latest good checkpoint in ``directory``, or None if there is none.

    ``check(arrays, meta)`` may raise :class:`CheckpointError` for a checkpoint that lacks
    what the caller needs (wrong keys or shapes): it counts as corrupt. With ``expect`` (a
    fingerprint, :mod:`mpiml.runtime.fingerprint`), an intact checkpoint of another run is
    refused, naming every difference, before ``check`` runs. A corrupt latest
    falls back to the previous one with a warning; ``manifest`` is then the fallback's
    meta with ``latest`` and ``step``. Raises :class:`CheckpointError` (naming the files
    and why) when no checkpoint is usable, or the manifest is of an unknown format.
    """
    directory = Path(directory)
    manifest, problem = _read_manifest(directory)
    files = step_files(directory)
    if manifest is None and problem is None and not files:
        return None
    if manifest is not None:
        candidates = [(e.get("file") if isinstance(e, dict) else None, e) for e in _entries(manifest)]
    else:
        # No usable manifest: every step file carries its own meta (CRC-checked, no checksum to compare).
        candidates = [(p.name, {"file": p.name, "sha256": None, "step": 0}) for p in files]
        warn(f"{problem or f'{directory / MANIFEST} is missing'}; looking at the step files themselves")
    failures = []
    for name, entry in candidates:
        reason = _entry_error(entry) if manifest is not None else None
        if reason is None:
            try:
                arrays, meta = _load(directory, name, entry["sha256"], check, expect)
            except (OSError, ValueError) as exc:
                reason = str(exc)
            else:
                for bad_name, bad_reason in failures:
                    warn(f"checkpoint {directory / bad_name} is unusable: {bad_reason}")
                if failures:
                    warn(f"resuming from the previous checkpoint, {directory / name}")
                return arrays, {**meta, "latest": name, "step": meta["step"]}
        failures.append((name if isinstance(name, str) and _NAME.fullmatch(name) else MANIFEST, reason))
    if not failures:
        raise CheckpointError(f"{directory / MANIFEST} lists no checkpoint; move it aside or start afresh with "
                              "--overwrite")
    details = "; ".join(f"{directory / name}: {reason}" for name, reason in failures)
    raise CheckpointError(f"no usable checkpoint in {directory}: {details}; move the directory aside or start "
                          "afresh with --overwrite")
