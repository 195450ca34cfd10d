"""The compiled svmlight/CSV parsers against the Python references (seeded fuzz, no MPI)."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from mpiml.data import fastparse, parsers

SEPARATORS = [" ", " ", " ", "\t", "  ", "\r", "\x0b", "\x0c"]


def random_number(rng: random.Random) -> str:
    """A number token as data files write them, or a near miss."""
    kind = rng.randrange(12)
    if kind == 0:
        return repr(rng.uniform(-1e3, 1e3))
    if kind == 1:
        return f"{rng.uniform(-1, 1) * 10.0 ** rng.randint(-30, 30):.17g}"
    if kind == 2:
        return f"{rng.gauss(0, 1):.{rng.randint(0, 12)}e}"
    if kind == 3:
        return str(rng.randint(-10 ** 6, 10 ** 6))
    if kind == 4:  # long mantissas and large exponents: the fallback path
        whole = "".join(rng.choice("0123456789") for _ in range(rng.randint(0, 25)))
        frac = "".join(rng.choice("0123456789") for _ in range(rng.randint(0, 25)))
        text = whole + ("." + frac if frac or rng.random() < 0.3 else "")
        if rng.random() < 0.5:
            text += rng.choice("eE") + rng.choice(["", "+", "-"]) + str(rng.randint(0, 400))
        return rng.choice(["", "+", "-"]) + text
    if kind == 5:  # the edges of the exact fast path
        mant = rng.choice([2 ** 53 - 1, 2 ** 53, 2 ** 53 + 1, 10 ** 15 + 7, 999999999999999999, 1])
        return f"{mant}e{rng.randint(-24, 24)}"
    if kind == 6:
        return rng.choice(["inf", "-inf", "+Infinity", "nan", "NaN", "-nan", "infinit", "na", "1_0", "1__0",
                           "0x10", "1e", "1e+", ".", "-.", "+", "-", "", "e5", ".e1", "1.2.3", "--1", "+-1",
                           "1e400", "-1e400", "1e-400", "4.9e-324", "2.5e-324", "1.7976931348623157e308",
                           "1.7976931348623159e308", "-0", "-0.0", "+.5", "5.", "00000.00001", "\u0661",
                           "\uff11", "1\xa0", "0e99999999999999999999", "1e-99999999999999999999"])
    if kind == 7:
        return str(rng.choice([0, 1, -1, 2, 0.5, 0.25, 1e-3, 123.456]))
    return f"{rng.random():.{rng.randint(1, 8)}f}"


def random_index(rng: random.Random) -> str:
    kind = rng.randrange(10)
    if kind < 7:
        return str(rng.randint(0, 40))
    return rng.choice(["+2", "-3", "-0", "007", "a", "", "1a", "99999999999999999999", "999999999999999999",
                       "1000000000000000000", "000000000000000000000012", "-99999999999999999999", "qid",
                       "QID", "\u0662", " "])


def random_line(rng: random.Random) -> str:
    kind = rng.randrange(20)
    if kind == 0:
        return ""
    if kind == 1:
        return rng.choice(["# a comment 1:2", "#", "   ", "\t\r", "  # x"])
    tokens = [rng.choice(["1", "-1", "0", "+1", "2"]) if rng.random() < 0.8 else random_number(rng)]
    for _ in range(rng.randint(0, 6)):
        r = rng.random()
        if r < 0.8:
            value = rng.choice(["1", "0.5", "-2"]) if rng.random() < 0.5 else random_number(rng)
            tokens.append(f"{random_index(rng)}:{value}")
        elif r < 0.85:
            tokens.append(f"qid:{rng.choice(['3', 'x', ''])}")
        elif r < 0.9:
            tokens.append(rng.choice(["3", "abc", "1:2:3", ":", "1:", ":1"]))
        else:
            tokens.append(random_number(rng))
    line = "".join(t + rng.choice(SEPARATORS) for t in tokens).rstrip(" ") if rng.random() < 0.5 \
        else rng.choice(SEPARATORS).join(tokens)
    if rng.random() < 0.15:
        line = rng.choice(SEPARATORS) + line
    if rng.random() < 0.1:
        line += rng.choice([" # trailing", "#c 1:x", "\r"])
    return line


def random_text(rng: random.Random, line) -> bytes:
    lines = [line(rng) for _ in range(rng.randint(0, 12))]
    text = "".join(item + rng.choice(["\n", "\n", "\r\n"]) for item in lines)
    if lines and rng.random() < 0.3:
        text = text.rstrip("\r\n")
    raw = text.encode("utf-8")
    if raw and rng.random() < 0.05:  # a stray non-UTF-8 byte
        at = rng.randrange(len(raw))
        raw = raw[:at] + b"\xff" + raw[at:]
    return raw


def same(a, b) -> bool:
    """Equal arrays (floats bit for bit, dtypes too) and the same error."""
    assert a.error == b.error, (a.error, b.error)
    for name in a.__dataclass_fields__:
        x, y = getattr(a, name), getattr(b, name)
        if isinstance(x, np.ndarray):
            assert x.dtype == y.dtype and x.shape == y.shape, (name, x, y)
            if x.dtype.kind == "f":
                np.testing.assert_array_equal(x.view(np.int64), y.view(np.int64), err_msg=name)
            else:
                np.testing.assert_array_equal(x, y, err_msg=name)
        else:
            assert x == y, (name, x, y)
    return True


def test_numbers_are_bit_identical_to_float():
    rng = random.Random(7)
    tokens = [random_number(rng).encode() for _ in range(20000)]
    tokens += [f"{v!r}".encode() for v in np.random.default_rng(1).standard_normal(2000) * 1e-5]
    tokens += [f"{m}e{e}".encode() for m in (1, 9007199254740991, 123456789) for e in range(-25, 26)]
    text = b"\n".join(tokens)
    spans, start = [], 0
    for t in tokens:
        spans.append((start, start + len(t)))
        start += len(t) + 1
    spans = np.array(spans, dtype=np.int64)
    buf = np.frombuffer(text, dtype=np.uint8)
    values, status = fastparse._numbers(text, buf, spans, len(tokens))
    fast_paths = 0
    for t, value, code in zip(tokens, values, status):
        expected = parsers.number(t)
        if expected is None:
            assert code == fastparse.NOT_A_NUMBER, t
        elif not math.isfinite(expected):
            assert code == fastparse.NOT_FINITE, t
        else:
            assert code == fastparse.OK and np.float64(value).view(np.int64) == np.float64(expected).view(np.int64), \
                (t, value, expected)
            fast_paths += 1
    assert fast_paths > 10000


def test_full_precision_output_parses_in_the_kernel_bit_for_bit():
    """``%.17g``, ``%.18e`` and ``repr`` of doubles across the exponent range, and known hard cases."""
    rng = np.random.default_rng(11)
    values = rng.standard_normal(30000) * 10.0 ** rng.integers(-300, 300, 30000)
    tokens = [f"{v:.17g}".encode() for v in values] + [f"{v:.18e}".encode() for v in values]
    tokens += [repr(float(v)).encode() for v in values]
    tokens += [b"9007199254740993", b"9007199254740995", b"2.2250738585072014e-308", b"2.2250738585072011e-308",
               b"1.7976931348623157e308", b"4.9406564584124654e-324", b"1e23", b"8.98846567431158e307",
               b"1.00000000000000011102230246251565404236316680908203125", b"9999999999999999999",
               b"0.1000000000000000055511151231257827", b"7.038531e-26", b"3.4e-322"]
    text = b"\n".join(tokens)
    ends = np.cumsum([len(t) + 1 for t in tokens]) - 1
    spans = np.column_stack([ends - [len(t) for t in tokens], ends]).astype(np.int64)
    buf = np.frombuffer(text, dtype=np.uint8)
    out, status = np.empty(len(tokens)), np.empty(len(tokens), dtype=np.uint8)
    fastparse._parse_numbers(buf, spans, len(tokens), fastparse.POW10, fastparse.WORDS, fastparse.POW10_HIGH,
                             fastparse.POW10_LOW, out, status)
    assert np.count_nonzero(status[:90000] == fastparse.FALLBACK) < 900  # subnormals only, about
    values, _ = fastparse._numbers(text, buf, spans, len(tokens))
    expected = np.array([float(t) for t in tokens])
    np.testing.assert_array_equal(values.view(np.int64), expected.view(np.int64))


def test_python_float_quirks_are_not_numbers():
    for token in (b"1_0", b"\xd9\xa1", b"\xef\xbc\x91", b"0x1p3", b" 1", b"1 "):
        assert parsers.number(token) is None
    assert parsers.number(b"-0").hex() == "-0x0.0p+0" and parsers.number(b"+.5") == 0.5
    assert parsers.number_problem(b"nan", "label") == "label 'nan' is not finite"
    assert parsers.number_problem(b"1e999", "label") == "label '1e999' is not finite"


def test_svmlight_kernel_equals_reference_on_random_text():
    rng = random.Random(2024)
    errors = 0
    for _ in range(3000):
        data = random_text(rng, random_line)
        ref = parsers.parse_svmlight(data)
        assert same(fastparse.parse_svmlight(data), ref), data
        errors += ref.error is not None
    assert 300 < errors < 2700  # both clean and broken inputs were exercised


@pytest.mark.parametrize("data", [
    b"", b"\n", b"\n\n", b"1", b"1\n", b"#only\n", b"1 1:1\r\n0 2:2\r\n", b"1 1:1\r0 2:2\n",
    b"1 qid:7 3:1 # c\n", b"1 3:1 2:1 3:4\n", b"-1 0:1\n+1 1:+2.5e+3\n", b"1 1:1_0\n", b"1 1_0:1\n",
    b"1 99999999999999999999:1\n", b"1 -0:2\n", b"1 -00:2 +3:1\n", b"1 1:2 2 3:zz\n", b"zz 1:x\n",
    b"1 -3:zz\n", b"1 1:inf\n", b"NaN 1:1\n", b"1 1:1e400 2:q\n", b"1 1:1e-400\n", b"1 1:1:1\n",
    b"1 :1\n", b"1 1:\n", b"1 \xc2\xa01:1\n", b"1\x001:1\n", b"1 1:1\n\xff\n", b"  \t 1 1:1  \n",
])
def test_svmlight_kernel_equals_reference_on_edge_cases(data):
    assert same(fastparse.parse_svmlight(data), parsers.parse_svmlight(data))


def csv_line(rng: random.Random) -> str:
    kind = rng.randrange(15)
    if kind == 0:
        return rng.choice(["", "# comment,1", "  ", " #x"])
    if kind == 1:
        return rng.choice(["label,a,b", "a, b ,c", "x"])
    width = 3 if rng.random() < 0.85 else rng.randint(1, 5)
    fields = [rng.choice(["1", "0.5", "-2", "3e2"]) if rng.random() < 0.6 else random_number(rng)
              for _ in range(width)]
    return ",".join(f.center(len(f) + rng.randint(0, 2)) if rng.random() < 0.2 else f for f in fields)


@pytest.mark.parametrize("header", [False, True])
def test_delimited_kernel_equals_reference_on_random_text(header):
    rng = random.Random(5 + header)
    headers = errors = 0
    for _ in range(2000):
        data = random_text(rng, csv_line)
        ref = parsers.parse_delimited(data, ",", header)
        assert same(fastparse.parse_delimited(data, ",", header), ref), data
        headers += ref.header is not None
        errors += ref.error is not None
    assert errors > 200 and (headers > 50 if header else headers == 0)


@pytest.mark.parametrize("data,delimiter", [
    (b"", ","), (b"1,2\n3,4\n", ","), (b"1\t2\n3\t4\t\n", "\t"), (b"\t1\t2\t\n", "\t"), (b"1,2,\n", ","),
    (b"a,b\n", ","), (b"a,b\n1,2\n1\n", ","), (b"1,2\n1,x,3\n", ","), (b"1,2\n1,2,3\n", ","),
    (b"1,2\n,\n", ","), (b"#h\n1;2\n", ";"), (b"1 2\n3  4\n", " "),
])
def test_delimited_kernel_equals_reference_on_edge_cases(data, delimiter):
    for header in (False, True):
        expected = parsers.parse_delimited(data, delimiter, header)
        assert same(fastparse.parse_delimited(data, delimiter, header), expected)
