"""Parsers, byte-range sharding and synthetic rows, as pure functions (no MPI)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given
from hypothesis import strategies as st

from mpiml.data import parsers, synthetic, text, writers


def test_svmlight_rows_and_line_numbers():
    data = b"# header comment\n1 1:0.5 3:-2\n\n0 qid:4 2:1e-3 # trailing\n-1\n"
    rows = parsers.parse_svmlight(data)
    assert rows.error is None
    dense = sp.csr_matrix((rows.values, rows.indices - 1, rows.indptr), shape=(3, 3)).toarray()
    np.testing.assert_array_equal(dense, [[0.5, 0, -2], [0, 1e-3, 0], [0, 0, 0]])
    np.testing.assert_array_equal(rows.labels, [1, 0, -1])
    np.testing.assert_array_equal(rows.lines, [1, 3, 4])


@pytest.mark.parametrize("line,why", [
    (b"1 3-0.5", "not index:value"), (b"x 1:2", "label 'x' is not a number"), (b"1 2:nan", "not finite"),
    (b"1 -3:1", "negative"), (b"1 a:1", "feature index 'a' is not an integer"), (b"inf 1:1", "not finite"),
    (b"1 1:1_0", "value '1_0' of feature 1 is not a number"), (b"1 1_0:1", "not an integer"),
    (b"1 123456789012345678901:1", "too large"),
])
def test_svmlight_errors_name_the_line(line, why):
    rows = parsers.parse_svmlight(b"1 1:1\n\n" + line + b"\n0 1:1\n")
    assert rows.error is not None and rows.error[0] == 2 and why in rows.error[1]


def test_delimited_header_and_widths():
    rows = parsers.parse_delimited(b"label,a,b\n1,2,3\n0,5,6\n", ",", header=True)
    assert rows.header == ["label", "a", "b"] and rows.error is None
    np.testing.assert_array_equal(rows.values, [[1, 2, 3], [0, 5, 6]])
    bad = parsers.parse_delimited(b"1,2,3\n0,5\n", ",")
    assert bad.error == (1, "row has 2 columns, expected 3")
    assert parsers.parse_delimited(b"label,a\n", ",").error[0] == 0  # a header is only allowed first
    assert "not finite" in parsers.parse_delimited(b"1,2\n1,inf\n", ",").error[1]


@given(lines=st.lists(st.text(alphabet="ab1 :", max_size=12), max_size=25), size=st.integers(1, 7),
       trailing_newline=st.booleans())
def test_byte_ranges_cover_every_line_once(tmp_path_factory, lines, size, trailing_newline):
    body = "\n".join(lines) + ("\n" if trailing_newline and lines else "")
    path = tmp_path_factory.mktemp("ranges") / "f.txt"
    path.write_bytes(body.encode())
    parts = [text.local_parts([path], rank, size)[0] for rank in range(size)]
    assert b"".join(p.data for p in parts) == body.encode()
    assert sum(p.lines for p in parts) == text.count_lines(body.encode())
    # whole lines only: every part but the last non-empty one ends with a newline
    filled = [p.data for p in parts if p.data]
    assert all(d.endswith(b"\n") for d in filled[:-1])


def test_directory_is_the_concatenation(tmp_path):
    (tmp_path / "b.txt").write_bytes(b"3\n4\n5\n")
    (tmp_path / "a.txt").write_bytes(b"1\n2")
    (tmp_path / ".hidden").write_bytes(b"junk\n")
    files = text.input_files(tmp_path)
    assert [f.name for f in files] == ["a.txt", "b.txt"]
    for size in range(1, 6):
        got = [[p.data for p in text.local_parts(files, r, size)] for r in range(size)]
        assert b"".join(ds[0] for ds in got) == b"1\n2" and b"".join(ds[1] for ds in got) == b"3\n4\n5\n"


@pytest.mark.parametrize("spec", ["synthetic:classification,n=3000,d=4", "synthetic:regression,n=3000,d=6,density=0.3",
                                  "synthetic:classification,n=3000,d=9,classes=4,density=0.5"])
def test_synthetic_rows_do_not_depend_on_the_split(spec):
    kind, options = synthetic.parse_spec(spec)
    X, y = synthetic.generate(kind, options, 0, 3000)
    for size in (2, 3, 7):
        blocks = [synthetic.generate(kind, options, *synthetic.row_block(3000, r, size)) for r in range(size)]
        Xs = sp.vstack([b[0] for b in blocks]).toarray() if sp.issparse(X) else np.concatenate([b[0] for b in blocks])
        np.testing.assert_array_equal(Xs, X.toarray() if sp.issparse(X) else X)
        np.testing.assert_array_equal(np.concatenate([b[1] for b in blocks]), y)
    if kind == "classification":
        assert set(np.unique(y)) == set(range(options["classes"]))


def test_writers_round_trip():
    kind, options = synthetic.parse_spec("synthetic:classification,n=50,d=7,density=0.4")
    X, y = synthetic.generate(kind, options, 0, 50)
    rows = parsers.parse_svmlight(writers.svmlight_bytes(X, y))
    back = sp.csr_matrix((rows.values, rows.indices - 1, rows.indptr), shape=X.shape)
    np.testing.assert_array_equal(back.toarray(), X.toarray())
    np.testing.assert_array_equal(rows.labels, y)
    dense = parsers.parse_delimited(writers.csv_bytes(X, y)).values
    np.testing.assert_array_equal(dense, np.column_stack([y, X.toarray()]))
