"""The readers' stated rules, one by one: the header rule, BOMs, line ends, control characters,
plain integer ids, duplicate indices, array shapes and dtypes, memory before allocation, labels."""

from __future__ import annotations

import numpy as np
import pytest

from mpiml.data import read_shard, text
from mpiml.data.ratings import read_ratings
from mpiml.errors import DataError


@pytest.mark.parametrize("fields, header", [
    ([b"label", b"x1"], True), ([b"_a", b'"b"', b"'c'"], True), ([b"nan", b"1"], False), ([b"NaN", b"a"], False),
    ([b"label", b"1"], False), ([b"inf", b"x"], False), ([b"a", b""], False), ([b"1.5", b"x"], False),
    ([b"\xef\xbb\xbflabel", b"x"], False), ([b"Infinity", b"y"], False), ([b"infix", b"y"], True),
])
def test_the_header_rule(fields, header):
    assert text.is_header(fields) is header


def read_csv(tmp_path, data: bytes, **options):
    path = tmp_path / "d.csv"
    path.write_bytes(data)
    shard = read_shard(path, **options)
    return np.column_stack([shard.y, shard.X]), shard.row_line


def test_csv_first_rows_are_never_dropped_by_a_guess(tmp_path):
    with pytest.raises(DataError, match=r"d.csv:1: .*not finite") as info:
        read_csv(tmp_path, b"nan,1,2\n1,2,3\n")
    assert info.value.line == 1 and info.value.path.endswith("d.csv") and info.value.collective
    values, lines = read_csv(tmp_path, b"\xef\xbb\xbf1,2,3\n0,5,6\n")  # a BOM: stripped, the row kept
    np.testing.assert_array_equal(values, [[1, 2, 3], [0, 5, 6]])
    values, lines = read_csv(tmp_path, b"\xef\xbb\xbflabel,a,b\n1,2,3\n")
    np.testing.assert_array_equal(values, [[1, 2, 3]])
    assert lines.tolist() == [2]
    values, _ = read_csv(tmp_path, b"1,2,3\n0,5,6\n", header="yes")  # told: the first line is a header
    np.testing.assert_array_equal(values, [[0, 5, 6]])
    with pytest.raises(DataError, match=r"d.csv:1: "):
        read_csv(tmp_path, b"label,a,b\n1,2,3\n", header="no")
    with pytest.raises(DataError, match=r"d.csv:2: row has 3 columns, expected 2"):
        read_csv(tmp_path, b"label,a\n1,2,3\n")  # a header counts for the width


@pytest.mark.parametrize("ends", [b"\n", b"\r\n", b"\r"])
def test_line_ends_read_alike(tmp_path, ends):
    values, lines = read_csv(tmp_path, ends.join([b"1,2,3", b"", b"0,5,6"]) + ends)
    np.testing.assert_array_equal(values, [[1, 2, 3], [0, 5, 6]])
    assert lines.tolist() == [1, 3]


def test_control_characters_are_errors(tmp_path):
    with pytest.raises(DataError, match=r"d.csv:2: form feed"):
        read_csv(tmp_path, b"1,2,3\n0,5\x0c,6\n")
    (tmp_path / "d.svm").write_bytes(b"1 1:2\n0 1:3\x0b2:4\n")
    with pytest.raises(DataError, match=r"d.svm:2: vertical tab"):
        read_shard(tmp_path / "d.svm")


@pytest.mark.parametrize("line, words", [
    (b"1 3:1 3:2", "appears twice"), (b"1 +3:1", "not an integer"), (b"1 -3:1", "negative feature index -3"),
    (b"1 1_0:1", "not an integer"), (b"1 3:1_0", "not a number"),
])
def test_svmlight_index_rules(tmp_path, line, words):
    (tmp_path / "d.svm").write_bytes(b"1 1:1\n" + line + b"\n")
    with pytest.raises(DataError, match=f"d.svm:2: .*{words}"):
        read_shard(tmp_path / "d.svm")


def test_a_huge_index_is_refused_before_allocating(tmp_path, monkeypatch):
    monkeypatch.setenv("MPIML_MEMORY_LIMIT", "1G")
    (tmp_path / "d.svm").write_bytes(b"1 1:1\n0 1099511627776:1\n")
    with pytest.raises(DataError, match=r"d.svm:2: feature index 1099511627776: .*32.0 TiB.*1.0 GiB"):
        read_shard(tmp_path / "d.svm")


@pytest.mark.parametrize("arrays, words", [
    ({"X": np.ones((4, 2)), "y": np.ones(3)}, "4 rows but 'y' has 3"),
    ({"X": np.ones((3, 2)) + 1j, "y": np.ones(3)}, "complex"),
    ({"X": np.ones((3, 2)), "y": np.ones((3, 1))}, "1-D"),
    ({"data": np.ones(2), "indices": np.array([0, 5]), "indptr": np.array([0, 1, 2]), "shape": np.array([2, 3]),
      "format": np.array("csr"), "y": np.ones(2)}, r"d.npz:2: column index 5 lies outside the declared shape"),
    ({"data": np.ones(2), "indices": np.array([1, 1]), "indptr": np.array([0, 2, 2]), "shape": np.array([2, 3]),
      "format": np.array("csr"), "y": np.ones(2)}, r"d.npz:1: a column index appears twice"),
    ({"data": np.ones(1), "indices": np.array([1]), "indptr": np.array([0, 1, 1]),
      "shape": np.array([2, 2**40]), "y": np.ones(2)}, "would need at least"),
])
def test_npz_structure(tmp_path, monkeypatch, arrays, words):
    monkeypatch.setenv("MPIML_MEMORY_LIMIT", "1G")
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(DataError, match=words):
        read_shard(tmp_path / "d.npz")


def test_a_truncated_npz_is_a_data_error(tmp_path):
    np.savez(tmp_path / "d.npz", X=np.ones((3, 2)), y=np.ones(3))
    raw = (tmp_path / "d.npz").read_bytes()
    for cut in (10, len(raw) // 2, len(raw) - 5):
        (tmp_path / "d.npz").write_bytes(raw[:cut])
        with pytest.raises(DataError, match="d.npz"):
            read_shard(tmp_path / "d.npz")


@pytest.mark.parametrize("line, words", [
    (b"1_0,2,3", "user id '1_0' is not an integer"), (b"1.5,2,3", "user id '1.5' is not an integer"),
    (b"+1,2,3", "is not an integer"), (b"nan,2,3", "is not an integer"), (b"1,2,1_0", "not a number"),
    (b"1,2,3,4", "expected 3 fields"),
])
def test_ratings_ids_are_plain_integers(tmp_path, line, words):
    (tmp_path / "r.csv").write_bytes(b"1,2,3\n" + line + b"\n")
    with pytest.raises(DataError, match=f"r.csv:2: .*{words}"):
        read_ratings(tmp_path / "r.csv")


def test_ratings_first_line_rules(tmp_path):
    path = tmp_path / "r.csv"
    path.write_bytes(b"1.5,2,3\n1,2,3\n")  # a float id is no header
    with pytest.raises(DataError, match="r.csv:1: user id '1.5'"):
        read_ratings(path)
    path.write_bytes(b"\xef\xbb\xbf1,2,3\n4,5,6\n")  # a BOM is no header either
    assert read_ratings(path).users.tolist() == [1, 4]
    path.write_bytes(b"\xef\xbb\xbfuser,item,rating\r4,5,6\r")
    shard = read_ratings(path)
    assert shard.users.tolist() == [4] and shard.keys.tolist() == [2]
    with pytest.raises(DataError, match="r.csv:1: user id 'user'"):
        read_ratings(path, header="no")


def test_binary_labels_may_not_mix_minus_one_and_zero(tmp_path):
    from mpiml.sgd.estimator import check_labels
    from mpiml.sgd.group import Group
    from mpiml.sgd.models import make_model

    model = make_model("logistic", 2)
    where = lambda row: ("d.csv", row + 1)  # noqa: E731
    with pytest.raises(DataError, match=r"d.csv:3: labels mix -1 and 0"):
        check_labels(model, np.array([0.0, 1.0, -1.0]), Group(None), where)
    for labels in ([0.0, 1.0, 0.0], [-1.0, 1.0, 1.0]):
        assert check_labels(model, np.array(labels), Group(None), where).tolist() == [x > 0 for x in labels]
