"""Output paths: refused before any work when they cannot be written; a result whose write fails is rescued."""

from __future__ import annotations

import errno
from pathlib import Path

import numpy as np
import pytest

from mpiml.cli import outputs
from mpiml.cli.parser import UsageError
from mpiml.errors import MpimlError


def test_unwritable_outputs_are_refused_before_any_work(tmp_path, monkeypatch):
    afile = tmp_path / "a-file"
    afile.write_text("x")
    refused = {
        str(tmp_path): "is a folder: give a file name in it",
        "/dev/null": "is not a regular file",
        str(tmp_path / "missing" / "m.npz"): "folder " + str(tmp_path / "missing") + " does not exist",
        str(afile / "m.npz"): "is not a folder",
    }
    for path, message in refused.items():
        with pytest.raises(UsageError, match="--out") as caught:
            outputs.check_output(path, "--out")
        assert message in str(caught.value)
    outputs.check_output(str(tmp_path / "m.npz"), "--out")  # a new file in a writable folder
    outputs.check_output(str(afile), "--out")                # an existing file is replaced
    outputs.check_output(None, "--out")
    # Folders of files (checkpoints, shards): created on use below an existing writable folder.
    outputs.check_output(str(tmp_path / "new" / "deeper"), "--checkpoint-dir", folder=True)
    outputs.check_output(str(tmp_path), "--checkpoint-dir", folder=True)
    with pytest.raises(UsageError, match="is a file, not a folder"):
        outputs.check_output(str(afile), "--checkpoint-dir", folder=True)
    with pytest.raises(UsageError, match="is not a folder"):
        outputs.check_output(str(afile / "ck"), "--checkpoint-dir", folder=True)
    monkeypatch.setattr(outputs, "free_bytes", lambda folder: 0)
    with pytest.raises(UsageError, match=r"the disk holding .* is full \(0 bytes free\)"):
        outputs.check_output(str(tmp_path / "m.npz"), "--out")


def failing_writer(refuse, written):
    """A writer that fails with 'No space left on device' for the paths ``refuse(path)`` picks."""
    def write(path):
        if refuse(Path(path)):
            raise OSError(errno.ENOSPC, "No space left on device")
        np.savez(path, theta=np.arange(3.0))
        written.append(Path(path))
    return write


def test_a_result_that_cannot_be_written_is_rescued_and_the_message_says_where(tmp_path):
    target = tmp_path / "out" / "model.npz"
    target.parent.mkdir()
    written = []
    error = outputs.rescue(failing_writer(lambda p: p == target, written), target, "--out", "trained model",
                           tmpdir=tmp_path / "tmp")
    assert written and written[0].parent == target.parent and written[0].suffix == ".npz"
    assert str(error) == (f"cannot write --out {target} (No space left on device); the trained model is in "
                          f"{written[0]} instead")
    assert np.load(written[0], allow_pickle=False)["theta"].tolist() == [0.0, 1.0, 2.0]
    # The whole disk of the target is full: the temporary folder takes it.
    (tmp_path / "tmp").mkdir()
    written.clear()
    error = outputs.rescue(failing_writer(lambda p: p.parent == target.parent, written), target, "--out", "model",
                           tmpdir=tmp_path / "tmp")
    assert written[0].parent == tmp_path / "tmp" and written[0].name.startswith("mpiml-model.rescued-")
    assert str(written[0]) in str(error)
    # Nowhere to write: the checkpoint still holds it, or the message says it is lost.
    nowhere = failing_writer(lambda p: True, written)
    error = outputs.rescue(nowhere, target, "--out", "model", checkpoint_dir="ck", tmpdir=tmp_path / "tmp")
    assert "the model is in the checkpoint in ck: rerun with --resume and another --out" in str(error)
    error = outputs.rescue(nowhere, target, "--out", "model", tmpdir=tmp_path / "tmp")
    assert str(error).endswith("the model is lost")
    assert outputs.rescue(failing_writer(lambda p: False, written), target, "--out", "model") is None


def test_sgd_rescues_its_model_when_the_final_write_fails(tmp_path, monkeypatch, capsys):
    """The disk fills up during training: the model is written next to --out, and the run says where."""
    from mpiml.cli import main as cli_main
    from mpiml.sgd import estimator

    target = tmp_path / "model.npz"
    real = estimator.save_npz_atomic

    def save(path, **arrays):
        if Path(path) == target:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, **arrays)

    monkeypatch.setattr(estimator, "save_npz_atomic", save)
    monkeypatch.setenv("MPIML_PROGRESS", "never")
    with pytest.raises(MpimlError) as caught:
        cli_main.main(["sgd", "--data", "synthetic:classification,n=300,d=4", "--epochs", "1", "--out", str(target),
                       "--json"])
    assert caught.value.collective  # one line, exit status 2, from the entry point
    rescued = list(tmp_path.glob("model.rescued-*.npz"))
    assert len(rescued) == 1 and not target.exists()
    assert str(caught.value) == (f"cannot write --out {target} (No space left on device); the trained model is in "
                                 f"{rescued[0]} instead")
    assert np.isfinite(np.load(rescued[0], allow_pickle=False)["theta"]).all()
