"""Each rank reads its own shard; together the shards are the file; bad input fails alike everywhere."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from mpi4py import MPI
from mpi_helpers import agree

from mpiml.data import load_shard, read_shard, split_holdout, synthetic, writers
from mpiml.errors import DataError
from mpiml.sgd.estimator import check_labels
from mpiml.sgd.group import Group
from mpiml.sgd.models import make_model

COMM = MPI.COMM_WORLD


def dataset(n=37, d=6, density=0.5, seed=2):
    kind, options = synthetic.parse_spec(f"synthetic:classification,n={n},d={d},density={density},seed={seed}")
    X, y = synthetic.generate(kind, options, 0, n)
    return (X.toarray() if sp.issparse(X) else X), y


def write_on_root(path, data: bytes):
    if COMM.rank == 0:
        path.write_bytes(data)
    COMM.Barrier()


def gathered(shard):
    X = shard.X.toarray() if sp.issparse(shard.X) else shard.X
    return np.concatenate(COMM.allgather(X)), np.concatenate(COMM.allgather(shard.y))


@pytest.mark.mpi
@pytest.mark.parametrize("fmt", ["svmlight", "csv", "npy", "npz", "npz-sparse", "svmlight-dir"])
def test_shards_together_are_the_data(shared_tmp, fmt):
    X, y = dataset()
    if fmt == "svmlight":
        path = shared_tmp / "d.svm"
        write_on_root(path, writers.svmlight_bytes(X, y))
    elif fmt == "csv":
        path = shared_tmp / "d.csv"
        write_on_root(path, b"label," + ",".join(f"x{i}" for i in range(X.shape[1])).encode() + b"\n"
                      + writers.csv_bytes(X, y))
    elif fmt == "svmlight-dir":
        path = shared_tmp / "parts"
        if COMM.rank == 0:
            path.mkdir()
            for i, (lo, hi) in enumerate([(0, 5), (5, 6), (6, 30), (30, 37)]):
                (path / f"p{i}.svm").write_bytes(writers.svmlight_bytes(X[lo:hi], y[lo:hi]))
        COMM.Barrier()
    else:
        path = shared_tmp / ("d.npy" if fmt == "npy" else "d.npz")
        if COMM.rank == 0:
            if fmt == "npy":
                np.save(path, np.column_stack([X, y]))
            elif fmt == "npz":
                np.savez(path, X=X, y=y)
            else:
                S = sp.csr_matrix(X)
                np.savez(path, data=S.data, indices=S.indices, indptr=S.indptr, shape=np.array(S.shape),
                         format=np.array("csr"), y=y)
        COMM.Barrier()
    shard = read_shard(path, label_column=X.shape[1] if fmt == "npy" else 0)
    Xg, yg = gathered(shard)
    agree(COMM, np.array_equal(Xg, X) and np.array_equal(yg, y), f"{fmt}: shards differ from the data")
    agree(COMM, shard.n_rows > 0 and shard.X.shape[1] == X.shape[1])
    if fmt.startswith("svmlight"):
        agree(COMM, sp.isspmatrix_csr(shard.X) or isinstance(shard.X, sp.csr_array), "svmlight stays sparse")


@pytest.mark.mpi
def test_holdout_split_is_the_same_for_any_p(shared_tmp):
    shard = load_shard("synthetic:classification,n=500,d=3")
    train, test = split_holdout(shard, 0.3, seed=4)
    _, yt = gathered(test)
    _, ytr = gathered(train)
    kind, options = synthetic.parse_spec("synthetic:classification,n=500,d=3")
    _, y = synthetic.generate(kind, options, 0, 500)
    mask = synthetic.holdout_mask(4, 0, 500, 0.3)
    agree(COMM, np.array_equal(yt, y[mask]) and np.array_equal(ytr, y[~mask]))


def _error_everywhere(call):
    try:
        call()
    except DataError as exc:
        message = str(exc)
    else:
        message = None
    messages = COMM.allgather(message)
    agree(COMM, messages[0] is not None and all(m == messages[0] for m in messages), messages)
    return messages[0]


BAD_SVMLIGHT = [
    (b"1 1:0.5 2:1\n0 1:1\n# note\n1 2:3\n0 1:1\n1 2:3\n1 1:x\n0 1:1\n0 2:2\n", 7, "malformed"),
    (b"1 1:0.5\n0 1:1\n1 2:3\n0 1:1\n1 2:nan\n0 1:1\n", 5, "not finite"),
    (b"1 1:0.5\n0 1:1\n1 2:3\n0 1:1\n1 2:3\n0 1:1\n1 1:1\n0 1:1\n1 2:3\n0 1:1 2 3\n", 10, "malformed"),
]


@pytest.mark.mpi
@pytest.mark.parametrize("body,line,why", BAD_SVMLIGHT)
def test_malformed_svmlight_names_file_and_line_on_every_rank(shared_tmp, body, line, why):
    path = shared_tmp / "bad.svm"
    write_on_root(path, body)
    message = _error_everywhere(lambda: read_shard(path))
    agree(COMM, message.startswith(f"{path}:{line}: ") and why in message, message)


@pytest.mark.mpi
def test_wrong_column_count_in_csv(shared_tmp):
    path = shared_tmp / "bad.csv"
    write_on_root(path, b"y,a,b\n" + b"1,2,3\n" * 7 + b"0,1\n" + b"1,2,3\n" * 5)
    message = _error_everywhere(lambda: read_shard(path))
    agree(COMM, message.startswith(f"{path}:9: ") and "2 columns, expected 3" in message, message)


def _csv(path, width):
    path.write_bytes((b",".join([b"1"] * width) + b"\n") * 6)


def _npy(path, width):
    np.save(path, np.ones((6, width)))


@pytest.mark.mpi
@pytest.mark.parametrize("ext,write,where,why", [
    ("csv", _csv, ":1: ", "4 columns, expected 3"),
    ("npy", _npy, ": ", "disagree on the feature count"),
])
def test_files_of_a_directory_that_disagree_on_width(shared_tmp, ext, write, where, why):
    path = shared_tmp / "parts"
    if COMM.rank == 0:
        path.mkdir()
        write(path / f"a.{ext}", 3)
        write(path / f"b.{ext}", 4)
    COMM.Barrier()
    message = _error_everywhere(lambda: read_shard(path))
    agree(COMM, message.startswith(f"{path / ('b.' + ext)}{where}") and why in message, message)


@pytest.mark.mpi
def test_labels_the_model_cannot_take(shared_tmp):
    path = shared_tmp / "labels.svm"
    write_on_root(path, b"1 1:1\n0 1:2\n" * 4 + b"2 1:1\n" + b"1 1:3\n" * 4)
    shard = read_shard(path)
    model = make_model("logistic", shard.X.shape[1])
    message = _error_everywhere(lambda: check_labels(model, shard.y, Group.from_comm(COMM), shard.where))
    agree(COMM, message.startswith(f"{path}:9: ") and "label 2 is not valid for the logistic model" in message,
          message)


@pytest.mark.mpi
def test_too_few_rows_for_the_ranks(shared_tmp):
    path = shared_tmp / "tiny.svm"
    write_on_root(path, b"1 1:1\n0 2:1\n")
    if COMM.size <= 2:
        agree(COMM, gathered(read_shard(path))[1].tolist() == [1.0, 0.0])
    else:
        message = _error_everywhere(lambda: read_shard(path))
        agree(COMM, message.startswith(f"{path}: ") and "got no rows" in message, message)
