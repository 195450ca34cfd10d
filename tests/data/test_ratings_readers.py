"""Ratings readers against independent parses (numpy/scipy) and bad-input cases (serial)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.io
import scipy.sparse
from hypothesis import given
from hypothesis import strategies as st

from mpiml.data.ratings import (
    RatingsShard,
    global_ids,
    hash_uniform,
    lookup,
    read_ratings,
    split_fraction,
)
from mpiml.errors import ArgumentError, DataError

ROWS = [(196, 242, 3.0, 881250949), (186, 302, 3.0, 891717742), (22, 377, 1.0, 878887116),
        (244, 51, 2.0, 880606923), (166, 346, 1.0, 886397596), (298, 474, 4.5, 884182806)]


def _expected():
    a = np.array(ROWS, dtype=np.float64)
    return a[:, 0].astype(np.int64), a[:, 1].astype(np.int64), a[:, 2]


def _check(shard, first_key=1):
    users, items, values = _expected()
    assert np.array_equal(shard.users, users) and np.array_equal(shard.items, items)
    assert np.array_equal(shard.values, values)
    assert np.array_equal(shard.keys, np.arange(first_key, first_key + len(ROWS)))


def test_movielens_udata_tab(tmp_path):
    path = tmp_path / "u.data"
    path.write_text("".join(f"{u}\t{i}\t{int(r) if r == int(r) else r}\t{t}\n" for u, i, r, t in ROWS))
    _check(read_ratings(path))


def test_movielens_dat_double_colon(tmp_path):
    path = tmp_path / "ratings.dat"
    path.write_text("".join(f"{u}::{i}::{r}::{t}\n" for u, i, r, t in ROWS))
    _check(read_ratings(path))


def test_csv_with_header_and_crlf(tmp_path):
    path = tmp_path / "ratings.csv"
    path.write_bytes(("userId,movieId,rating,timestamp\r\n"
                      + "".join(f"{u},{i},{r},{t}\r\n" for u, i, r, t in ROWS)).encode())
    _check(read_ratings(path), first_key=2)


def test_whitespace_without_time_and_no_final_newline(tmp_path):
    path = tmp_path / "r.txt"
    path.write_text("\n".join(f"{u}  {i} {r}" for u, i, r, _ in ROWS))
    _check(read_ratings(path))


def test_matrix_market_is_one_based(tmp_path):
    users, items, values = _expected()
    matrix = scipy.sparse.coo_matrix((values, (users - 1, items - 1)))
    scipy.io.mmwrite(tmp_path / "r.mtx", matrix)
    shard = read_ratings(tmp_path / "r.mtx")
    got = sorted(zip(shard.users.tolist(), shard.items.tolist(), shard.values.tolist()))
    assert got == sorted(zip(users.tolist(), items.tolist(), values.tolist()))


def test_npz_coo(tmp_path):
    users, items, values = _expected()
    np.savez(tmp_path / "r.npz", users=users, items=items, ratings=values)
    shard = read_ratings(tmp_path / "r.npz")
    assert np.array_equal(shard.users, users) and np.array_equal(shard.values, values)


BAD = [
    ("1\t2\t3\n4\t5\n", 2, "field"),
    ("1\t2\t3\n4\tx\t5\n", 2, "item id 'x' is not an integer"),
    ("1\t2\t3\n4\t5\tfive\n", 2, "rating 'five' is not a number"),
    ("1\t2\t3\n1\t2\t3\n4\t5\tnan\n", 3, "not a finite number"),
    ("-1\t2\t3\n", 1, "user id -1 is negative"),
    ("1\t99999999999999999999\t3\n", 1, "above the limit"),
    ("1\t2\tinf\n", 1, "not a finite number"),
]


@pytest.mark.parametrize("text, line, words", BAD)
def test_bad_lines_name_file_and_line(tmp_path, text, line, words):
    path = tmp_path / "bad.tsv"
    path.write_text(text)
    with pytest.raises(DataError, match=f"{path}:{line}: .*{words}"):
        read_ratings(path)


def test_empty_and_missing_files(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match="no ratings"):
        read_ratings(tmp_path / "empty.csv")
    (tmp_path / "header.csv").write_text("user,item,rating\n")
    with pytest.raises(DataError, match="no ratings"):
        read_ratings(tmp_path / "header.csv")
    with pytest.raises(DataError, match="no such file"):
        read_ratings(tmp_path / "missing.csv")


def test_npz_bad_entries(tmp_path):
    np.savez(tmp_path / "n.npz", users=np.array([1, 2]), items=np.array([1, 2]), ratings=np.array([1.0, np.nan]))
    with pytest.raises(DataError, match=r"n.npz:2: .*not a finite"):
        read_ratings(tmp_path / "n.npz")
    np.savez(tmp_path / "m.npz", a=np.arange(3))
    with pytest.raises(DataError, match="needs arrays"):
        read_ratings(tmp_path / "m.npz")


def test_unknown_format_is_refused(tmp_path):
    with pytest.raises(ArgumentError, match="unknown ratings format 'parquet'"):
        read_ratings(tmp_path / "x", fmt="parquet")


@given(st.lists(st.integers(0, 10**9), max_size=50), st.lists(st.integers(0, 10**9), max_size=20))
def test_lookup_matches_a_dict(ids, queries):
    table = global_ids(np.array(ids, dtype=np.int64))
    assert np.array_equal(table, np.unique(np.array(ids, dtype=np.int64)))
    position = {v: j for j, v in enumerate(table.tolist())}
    assert lookup(table, np.array(queries, dtype=np.int64)).tolist() == [position.get(q, -1) for q in queries]


def test_split_fraction_is_about_right_and_depends_only_on_keys():
    n = 20000
    shard = RatingsShard.from_arrays(np.arange(n), np.arange(n), np.ones(n))
    train, test = split_fraction(shard, 0.2, seed=3)
    assert len(train) + len(test) == n and abs(len(test) / n - 0.2) < 0.015
    # Any subset (another rank's part) makes the same choice for each key.
    part = shard.subset(np.arange(n) % 3 == 1)
    _, part_test = split_fraction(part, 0.2, seed=3)
    assert set(part_test.keys.tolist()) == set(test.keys.tolist()) & set(part.keys.tolist())
    u = hash_uniform(np.arange(n), 5)
    assert 0 <= u.min() and u.max() < 1 and abs(u.mean() - 0.5) < 0.01
