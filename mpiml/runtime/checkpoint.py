"""Checkpoints: a directory of versioned ``.npz`` files plus a JSON manifest.

Layout::

    DIR/manifest.json           {"format": 1, "latest": "step-00000120.npz", "step": 120, ...meta}
    DIR/step-00000120.npz       the arrays of that step

The arrays file is written first, then the manifest is replaced atomically, so a crash
at any moment leaves the previous checkpoint readable. Older array files beyond
``keep`` are removed only after the new manifest is in place. Pure file functions:
callers decide which rank writes (rank 0) and broadcast what they read.
"""

from __future__ import annotations

import json
from pathlib import Path

from mpiml.errors import CheckpointError
from mpiml.runtime.files import atomic_write, load_npz, save_npz_atomic

FORMAT = 1
MANIFEST = "manifest.json"


def write_checkpoint(directory, step: int, arrays: dict, meta: dict | None = None, keep: int = 2) -> Path:
    """Write the arrays of ``step`` and point the manifest at them; returns the npz path."""
    directory = Path(directory)
    name = f"step-{int(step):08d}.npz"
    try:
        save_npz_atomic(directory / name, **arrays)
        manifest = {**(meta or {}), "format": FORMAT, "latest": name, "step": int(step)}
        with atomic_write(directory / MANIFEST, "w") as handle:
            json.dump(manifest, handle, indent=1, sort_keys=True)
    except OSError as exc:
        raise CheckpointError(f"cannot write checkpoint in {directory}: {exc}") from exc
    old = sorted(p for p in directory.glob("step-*.npz") if p.name != name)
    for stale in old[: max(len(old) - (keep - 1), 0)]:
        stale.unlink(missing_ok=True)
    return directory / name


def read_checkpoint(directory):
    """``(arrays, manifest)`` of the latest checkpoint in ``directory``, or None if there is none."""
    directory = Path(directory)
    manifest_path = directory / MANIFEST
    if not manifest_path.exists():
        return None
    try:
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("format") != FORMAT:
            raise CheckpointError(f"{manifest_path}: unknown checkpoint format {manifest.get('format')!r}")
        arrays = load_npz(directory / manifest["latest"])
    except (OSError, ValueError, KeyError) as exc:
        raise CheckpointError(f"cannot read checkpoint in {directory}: {exc}") from exc
    return arrays, manifest
