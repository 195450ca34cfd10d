"""Checkpoints you can trust (serial): corruption falls back or fails cleanly, locks, fingerprints, cleanup."""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp

from mpiml.errors import CheckpointError
from mpiml.runtime import checkpoint, fingerprint
from mpiml.runtime.checkpoint import MANIFEST, read_checkpoint, write_checkpoint
from mpiml.runtime.checkpoint_dir import CheckpointDir, from_environment, session
from mpiml.runtime.lock import LOCK, DirectoryLock


def _two(tmp_path):
    """A directory with the checkpoints of steps 1 and 2 (w = [1, 1], [2, 2])."""
    for step in (1, 2):
        write_checkpoint(tmp_path, step, {"w": np.full(2, float(step))}, {"seed": 7})
    return tmp_path / "step-00000002.npz", tmp_path / "step-00000001.npz"


def _npz_bytes(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _replace_latest(tmp_path, data: bytes, fix_checksum: bool) -> None:
    """Put ``data`` in place of the latest checkpoint, optionally with a matching checksum in the manifest."""
    (tmp_path / "step-00000002.npz").write_bytes(data)
    if fix_checksum:
        manifest = json.loads((tmp_path / MANIFEST).read_text())
        manifest["checkpoints"][0]["sha256"] = hashlib.sha256(data).hexdigest()
        (tmp_path / MANIFEST).write_text(json.dumps(manifest))


def _flip(data: bytes, at: int) -> bytes:
    out = bytearray(data)
    out[at] ^= 0x10
    return bytes(out)


def _needs_w(arrays, meta):
    if "w" not in arrays or arrays["w"].shape != (2,):
        raise CheckpointError("it has no array 'w' of shape (2,)")


CORRUPTIONS = {
    "truncated": lambda good: (good[: len(good) // 2], False),
    "truncated, checksum fixed": lambda good: (good[: len(good) // 2], True),
    "empty": lambda good: (b"", False),
    "empty, checksum fixed": lambda good: (b"", True),
    "bit flip in the header": lambda good: (_flip(good, 10), False),
    "bit flip in the data, checksum fixed": lambda good: (_flip(good, len(good) // 2), True),
    "bit flip near the end, checksum fixed": lambda good: (_flip(good, len(good) - 30), True),
    "foreign npz": lambda good: (_npz_bytes(x=np.arange(3)), True),
    "not a zip": lambda good: (b"PK\x03\x04 but nothing else" * 3, True),
    "wrong keys": lambda good: (_npz_bytes(v=np.zeros(2), mpiml_meta=np.array('{"step": 2}')), True),
    "wrong shape": lambda good: (_npz_bytes(w=np.zeros(5), mpiml_meta=np.array('{"step": 2}')), True),
    "bad JSON meta": lambda good: (_npz_bytes(w=np.zeros(2), mpiml_meta=np.array('{"step": 2')), True),
    "meta not a dict": lambda good: (_npz_bytes(w=np.zeros(2), mpiml_meta=np.array("[2]")), True),
    "pickled object": lambda good: (_pickled(), True),
}


def _pickled() -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, w=np.array([{"a": 1}, None], dtype=object), mpiml_meta=np.array('{"step": 2}'))
    return buffer.getvalue()


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_a_corrupt_latest_falls_back_to_the_previous_with_one_warning(tmp_path, capsys, name):
    latest, _ = _two(tmp_path)
    data, fix = CORRUPTIONS[name](latest.read_bytes())
    _replace_latest(tmp_path, data, fix)
    arrays, meta = read_checkpoint(tmp_path, _needs_w)
    assert meta["step"] == 1 and meta["latest"] == "step-00000001.npz" and meta["seed"] == 7
    assert np.array_equal(arrays["w"], [1.0, 1.0]) and "mpiml_meta" not in arrays
    err = capsys.readouterr().err
    assert err.count("mpiml: warning:") == 2 and str(latest) in err and "step-00000001.npz" in err, err
    assert "allow_pickle" not in err and "pickle" not in err.lower()


@pytest.mark.parametrize("name", ["truncated", "bit flip in the data, checksum fixed", "wrong keys", "bad JSON meta"])
def test_both_corrupt_is_one_error_naming_each_file(tmp_path, capsys, name):
    latest, previous = _two(tmp_path)
    data, _ = CORRUPTIONS[name](latest.read_bytes())
    latest.write_bytes(data)
    previous.write_bytes(data)
    with pytest.raises(CheckpointError) as caught:
        read_checkpoint(tmp_path, _needs_w)
    message = str(caught.value)
    assert str(latest) in message and str(previous) in message and "\n" not in message
    assert "allow_pickle=True" not in message


@pytest.mark.parametrize("entry", [
    {"file": "../outside.npz", "step": 9, "sha256": "00"},
    {"file": "/etc/passwd", "step": 9, "sha256": "00"},
    {"file": "sub/step-00000009.npz", "step": 9, "sha256": "00"},
    {"file": "step-00000009.npz/..", "step": 9, "sha256": "00"},
    {"file": 5, "step": 9, "sha256": "00"},
    "step-00000009.npz",
])
def test_manifest_paths_stay_inside_the_directory(tmp_path, capsys, entry):
    _two(tmp_path)
    outside = tmp_path.parent / "outside.npz"
    outside.write_bytes(_npz_bytes(w=np.full(2, 99.0), mpiml_meta=np.array('{"step": 9}')))
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    manifest["checkpoints"].insert(0, entry)
    (tmp_path / MANIFEST).write_text(json.dumps(manifest))
    arrays, meta = read_checkpoint(tmp_path, _needs_w)
    assert meta["step"] == 2 and np.array_equal(arrays["w"], [2.0, 2.0])
    assert "mpiml: warning:" in capsys.readouterr().err


def test_a_symlinked_step_file_is_not_followed(tmp_path, capsys):
    latest, _ = _two(tmp_path)
    target = tmp_path.parent / "elsewhere.npz"
    target.write_bytes(latest.read_bytes())
    latest.unlink()
    latest.symlink_to(target)
    assert read_checkpoint(tmp_path, _needs_w)[1]["step"] == 1


@pytest.mark.parametrize("text", ["{not json", "", "[1, 2]", '{"format": 2}', '{"format": 2, "checkpoints": 3}'])
def test_an_unreadable_manifest_is_rebuilt_from_the_step_files(tmp_path, capsys, text):
    _two(tmp_path)
    (tmp_path / MANIFEST).write_text(text)
    arrays, meta = read_checkpoint(tmp_path, _needs_w)
    assert meta["step"] == 2 and np.array_equal(arrays["w"], [2.0, 2.0])
    assert "looking at the step files" in capsys.readouterr().err


def test_a_missing_manifest_with_step_files_uses_them_and_a_newer_format_is_refused(tmp_path, capsys):
    _two(tmp_path)
    (tmp_path / MANIFEST).unlink()
    assert read_checkpoint(tmp_path)[1]["step"] == 2
    (tmp_path / MANIFEST).write_text(json.dumps({"format": 3, "checkpoints": []}))
    with pytest.raises(CheckpointError, match="unknown checkpoint format 3"):
        read_checkpoint(tmp_path)


def test_a_kill_after_the_npz_leaves_the_committed_checkpoint_and_the_next_write_cleans_up(tmp_path):
    _two(tmp_path)
    # What a writer killed after writing the arrays (before the manifest) or mid-write leaves.
    (tmp_path / "step-00000003.npz").write_bytes(b"uncommitted")
    (tmp_path / ".step-00000004.npz.abcd1234.tmp").write_bytes(b"half")
    (tmp_path / ".manifest.json.efgh5678.tmp").write_text("{")
    assert read_checkpoint(tmp_path)[1]["step"] == 2
    write_checkpoint(tmp_path, 4, {"w": np.full(2, 4.0)})
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [MANIFEST, "step-00000002.npz", "step-00000004.npz"]
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    assert [e["step"] for e in manifest["checkpoints"]] == [4, 2] and manifest["step"] == 4


def test_the_writer_keeps_two_good_checkpoints_and_drops_a_corrupt_one(tmp_path):
    latest, _ = _two(tmp_path)
    latest.write_bytes(_flip(latest.read_bytes(), 40))
    write_checkpoint(tmp_path, 3, {"w": np.full(2, 3.0)})
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    assert [e["file"] for e in manifest["checkpoints"]] == ["step-00000003.npz", "step-00000001.npz"]
    assert sorted(p.name for p in tmp_path.glob("step-*")) == ["step-00000001.npz", "step-00000003.npz"]


def test_the_fault_stages_are_reached_in_order(tmp_path, monkeypatch):
    seen = []

    def listing():
        return sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("."))

    def spy(name):
        seen.append((name, listing()))

    monkeypatch.setattr(checkpoint.fault, "stage", spy)
    write_checkpoint(tmp_path, 1, {"w": np.zeros(2)})
    assert seen == [("checkpoint-before-write", []), ("checkpoint-after-write", ["step-00000001.npz"]),
                    ("checkpoint-after-rename", [MANIFEST, "step-00000001.npz"])]


# -- the lock -------------------------------------------------------------------------------------

def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_the_lock_refuses_a_live_owner_and_takes_over_a_dead_one(tmp_path):
    first = DirectoryLock(tmp_path, "mpiml sgd").acquire()
    with pytest.raises(CheckpointError) as caught:
        DirectoryLock(tmp_path).acquire()
    message = str(caught.value)
    assert f"host {socket.gethostname()}, PID {os.getpid()}" in message and "mpiml sgd" in message
    first.release()
    assert not (tmp_path / LOCK).exists()
    stale = {"host": socket.gethostname(), "pid": _dead_pid(), "start": None}
    (tmp_path / LOCK).write_text(json.dumps(stale))
    lock = DirectoryLock(tmp_path).acquire()
    assert lock.took_over == stale and json.loads((tmp_path / LOCK).read_text())["pid"] == os.getpid()
    lock.release()


def test_a_reused_pid_is_stale_and_another_hosts_lock_is_refused(tmp_path):
    # our own PID, but a process start time that is not ours: the PID was reused
    (tmp_path / LOCK).write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "start": "1"}))
    with DirectoryLock(tmp_path) as lock:
        assert lock.took_over is not None
    (tmp_path / LOCK).write_text(json.dumps({"host": "node17.example", "pid": 4242}))
    with pytest.raises(CheckpointError, match=r"host node17\.example, PID 4242.*remove .*mpiml\.lock"):
        DirectoryLock(tmp_path).acquire()
    (tmp_path / LOCK).write_text("garbage")
    with pytest.raises(CheckpointError, match="in use"):
        DirectoryLock(tmp_path).acquire()


def test_a_requeued_slurm_job_takes_over_its_own_lock_from_another_node(tmp_path, monkeypatch):
    (tmp_path / LOCK).write_text(json.dumps({"host": "node17.example", "pid": 4242, "job": "991", "restart": 0}))
    monkeypatch.setenv("SLURM_JOB_ID", "992")  # another job
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    with pytest.raises(CheckpointError, match="node17"):
        DirectoryLock(tmp_path).acquire()
    monkeypatch.setenv("SLURM_JOB_ID", "991")  # the same job, not restarted: another step of it, running
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")
    with pytest.raises(CheckpointError, match="node17"):
        DirectoryLock(tmp_path).acquire()
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")  # the same job, requeued
    with DirectoryLock(tmp_path) as lock:
        assert lock.took_over["host"] == "node17.example"
        assert json.loads((tmp_path / LOCK).read_text())["restart"] == 1


def test_a_session_refuses_a_fresh_run_over_a_checkpoint_unless_told(tmp_path, capsys):
    _two(tmp_path)
    (tmp_path / ".step-00000003.npz.x.tmp").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"already holds a checkpoint \(step 2\).*--resume.*--overwrite"):
        with session(tmp_path, "sgd", {}):
            pass
    assert not (tmp_path / LOCK).exists() and not list(tmp_path.glob(".*.tmp"))
    with session(tmp_path, "sgd", {}, resume=True) as directory:
        assert isinstance(directory, CheckpointDir) and (tmp_path / LOCK).exists()
        assert os.fspath(directory) == str(tmp_path) and directory.fingerprint == {"command": "sgd"}
        with pytest.raises(CheckpointError, match="in use"), session(tmp_path, "mf", {}, resume=True):
            pass
    assert not (tmp_path / LOCK).exists()
    with session(tmp_path, "sgd", {}, overwrite=True):
        assert not checkpoint.has_checkpoint(tmp_path)


def test_commands_use_their_own_subdirectory_of_the_environment_directory():
    assert from_environment("sgd", {"MPIML_CHECKPOINT_DIR": "/scratch/ck"}) == "/scratch/ck/sgd"
    assert from_environment("mf", {"MPIML_CHECKPOINT_DIR": "/scratch/ck"}) == "/scratch/ck/mf"
    assert from_environment("mf", {"MPIML_CHECKPOINT_DIR": ""}) is None and from_environment("mf", {}) is None


# -- fingerprints ---------------------------------------------------------------------------------

def _reference_rows_hash(X, y) -> str:
    """The digest by its definition, one row at a time (an independent, slow oracle)."""
    mask, total = (1 << 64) - 1, 0
    dense = X.toarray() if sp.issparse(X) else np.asarray(X, dtype=np.float64)

    def mix(v):
        v ^= v >> 30
        v = (v * 0xBF58476D1CE4E5B9) & mask
        v ^= v >> 27
        v = (v * 0x94D049BB133111EB) & mask
        return v ^ (v >> 31)

    def bits(value):
        return int(np.array([value + 0.0]).view(np.uint64)[0])

    for i, row in enumerate(dense):
        h = 0
        for j, value in enumerate(row):
            if bits(value):
                h = (h + mix(bits(value) ^ mix((j + 11) & mask))) & mask
        h = (h + mix(bits(y[i]) ^ mix(13)) + mix((i + 17) & mask)) & mask
        total = (total + mix(h)) & mask
    return f"{total:016x}"


def test_the_rows_digest_matches_its_definition_dense_and_sparse_alike():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(7, 4)) * (rng.random((7, 4)) < 0.6)
    X[2, 1] = -0.0
    y = rng.integers(0, 2, 7).astype(float)
    digest = fingerprint.rows_digest(X, y)
    assert digest == {"rows": 7, "features": 4, "hash": _reference_rows_hash(X, y)}
    assert fingerprint.rows_digest(sp.csr_matrix(X), y) == digest
    changed = X.copy()
    changed[5, 3] = np.nextafter(changed[5, 3], 1.0)
    assert fingerprint.rows_digest(changed, y)["hash"] != digest["hash"]
    assert fingerprint.rows_digest(X[::-1], y[::-1])["hash"] != digest["hash"]  # order matters for SGD
    assert fingerprint.rows_digest(X, 1 - y)["hash"] != digest["hash"]


def test_the_ratings_digest_is_a_set_hash():
    users, items, values = np.array([1, 2, 3]), np.array([5, 5, 6]), np.array([4.0, 3.0, 1.0])
    digest = fingerprint.ratings_digest(users, items, values)
    assert digest["ratings"] == 3
    assert fingerprint.ratings_digest(users[::-1], items[::-1], values[::-1]) == digest
    assert fingerprint.ratings_digest(users, items, values + [0, 0, 1])["hash"] != digest["hash"]
    assert fingerprint.ratings_digest(items, users, values)["hash"] != digest["hash"]


def test_a_fingerprint_mismatch_names_every_difference(tmp_path):
    saved = {"command": "sgd", "settings": {"lr": 0.1, "seed": 0, "model": "logistic"},
             "data": {"rows": 100, "features": 5, "hash": "aa"}}
    same = json.loads(json.dumps(saved))
    fingerprint.check(saved, same, tmp_path)
    mine = {"command": "sgd", "settings": {"lr": 0.05, "seed": 0, "model": "logistic"},
            "data": {"rows": 100, "features": 5, "hash": "bb", "source": "other.svm"}}
    with pytest.raises(CheckpointError) as caught:
        fingerprint.check(saved, mine, tmp_path)
    message = str(caught.value)
    assert f"checkpoint in {tmp_path} was written with lr=0.1, data=(rows 100, features 5, hash aa)" in message
    assert "this run has lr=0.05, data=other.svm (rows 100, features 5, hash bb)" in message
    with pytest.raises(CheckpointError, match="no fingerprint"):
        fingerprint.check(None, mine, tmp_path)
    with pytest.raises(CheckpointError, match="command=mf.*command=sgd"):
        fingerprint.check({**saved, "command": "mf"}, same, tmp_path)


def test_an_intact_checkpoint_of_another_run_is_refused_not_taken_for_corrupt(tmp_path, capsys):
    mine = {"command": "mf", "settings": {"rank": 4}, "data": {"ratings": 10, "hash": "aa"}}
    for step in (1, 2):
        write_checkpoint(tmp_path, step, {"w": np.zeros(3)}, {"fingerprint": {**mine, "settings": {"rank": 3}}})
    with pytest.raises(CheckpointError, match=r"written with rank=3, this run has rank=4"):
        read_checkpoint(tmp_path, _needs_w, mine)  # its shape differs too: the fingerprint speaks first
    assert "warning" not in capsys.readouterr().err


def test_a_restart_by_mpiml_run_takes_over_the_lock_of_its_earlier_attempt(tmp_path, monkeypatch):
    from mpiml.cli.run import attempt_env

    held = {"host": "node17.example", "pid": 4242, "job": "991", "restart": 0, "attempt": 1}
    (tmp_path / LOCK).write_text(json.dumps(held))
    monkeypatch.setenv("SLURM_JOB_ID", "991")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")
    monkeypatch.setenv("MPIML_RUN_ATTEMPT", "1")  # the same attempt, another step of it: still running
    with pytest.raises(CheckpointError, match="node17"):
        DirectoryLock(tmp_path).acquire()
    monkeypatch.setenv("MPIML_RUN_ATTEMPT", attempt_env({}, 2)["MPIML_RUN_ATTEMPT"])  # what mpiml run's restart sets
    with DirectoryLock(tmp_path) as lock:
        assert lock.took_over["host"] == "node17.example"
        assert json.loads((tmp_path / LOCK).read_text())["attempt"] == 2
