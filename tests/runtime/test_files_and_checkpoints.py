"""Atomic writes and checkpoints (serial)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mpiml import CheckpointError
from mpiml.runtime.checkpoint import read_checkpoint, write_checkpoint
from mpiml.runtime.files import atomic_write, load_npz, save_npz_atomic


def test_atomic_write_leaves_old_file_when_writer_fails(tmp_path):
    target = tmp_path / "model.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="crash mid-write"):
        with atomic_write(target, "w") as handle:
            handle.write("half")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.txt"]  # no temporary left behind


def test_atomic_write_gives_the_permissions_of_a_plain_new_file(tmp_path):
    import os

    umask = os.umask(0o022)
    try:
        with atomic_write(tmp_path / "out.txt", "w") as handle:
            handle.write("x")
    finally:
        os.umask(umask)
    assert (tmp_path / "out.txt").stat().st_mode & 0o777 == 0o644


def test_npz_round_trip_refuses_objects(tmp_path):
    save_npz_atomic(tmp_path / "a.npz", w=np.arange(5.0), b=np.array(2))
    loaded = load_npz(tmp_path / "a.npz")
    assert np.array_equal(loaded["w"], np.arange(5.0)) and loaded["b"] == 2
    with pytest.raises(TypeError, match="pickle"):
        save_npz_atomic(tmp_path / "b.npz", bad=np.array([{"a": 1}], dtype=object))
    assert not (tmp_path / "b.npz").exists()


def test_checkpoints_keep_the_latest_and_survive_a_torn_newer_file(tmp_path):
    for step in range(5):
        write_checkpoint(tmp_path, step, {"w": np.full(3, step)}, {"seed": 7}, keep=2)
    arrays, manifest = read_checkpoint(tmp_path)
    assert manifest["step"] == 4 and manifest["seed"] == 7 and np.array_equal(arrays["w"], [4, 4, 4])
    assert sorted(p.name for p in tmp_path.glob("step-*.npz")) == ["step-00000003.npz", "step-00000004.npz"]
    (tmp_path / "step-00000005.npz").write_bytes(b"torn")  # a crash before the manifest moved on
    assert read_checkpoint(tmp_path)[1]["step"] == 4


def test_missing_and_corrupt_checkpoints(tmp_path):
    assert read_checkpoint(tmp_path) is None
    write_checkpoint(tmp_path, 1, {"w": np.zeros(2)})
    (tmp_path / "step-00000001.npz").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="no usable checkpoint in"):
        read_checkpoint(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"format": 99, "latest": "x"}))
    with pytest.raises(CheckpointError, match="format"):
        read_checkpoint(tmp_path)
