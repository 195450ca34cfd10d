"""Compiled svmlight and CSV parsers: the same rows and errors as :mod:`mpiml.data.parsers`.

Two passes over the raw bytes, both numba kernels: a *scan* finds the rows, the feature
indices and the byte span of every number (and the first structural problem: a token
without ``:``, a bad index, a row of the wrong width); then :func:`_parse_numbers` turns
the spans into doubles. A number whose significant digits fit below ``2**53`` and whose
decimal exponent is at most 22 in size is ``digits * 10**e`` or ``digits / 10**-e``: one
correctly rounded IEEE operation on exact operands, so bit-identical to Python's
``float`` (Clinger's fast path). Up to 19 significant digits (``%.17g`` and ``%.18e``
output), the Eisel-Lemire algorithm gives the correctly rounded double from a 128-bit
product, or says it cannot be sure. What neither settles (more digits, subnormals,
overflow, the rare unsure case) is marked and handed to ``float`` afterwards. The first error is the one
at the lowest byte position, which is the one the line-by-line reference meets first.
"""

from __future__ import annotations

import math

import numpy as np
from numba.extending import register_jitable

from mpiml.data import parsers
from mpiml.runtime.jit import kernel

# number status
OK, NOT_A_NUMBER, FALLBACK, NOT_FINITE = 0, 1, 2, 3
# structural problems found by the scans
NO_COLON, BAD_INDEX, NEGATIVE_INDEX, HUGE_INDEX, WIDTH = 1, 2, 3, 4, 5

POW10 = np.array([10.0 ** k for k in range(23)])  # all exact doubles
WORDS = np.frombuffer(b"infinitynan", dtype=np.uint8)
MAX_DIGITS = 18  # an int64 holds any 18-digit integer (feature indices)
MAX_MANTISSA_DIGITS = 19  # a uint64 holds any 19-digit integer
POW10_MIN, POW10_MAX = -348, 347


def _pow10_table():
    """``floor(10**e * 2**k)`` in [2**127, 2**128) for ``e`` in [-348, 347]: high and low words."""
    high = np.empty(POW10_MAX - POW10_MIN + 1, dtype=np.uint64)
    low = np.empty_like(high)
    for i, e in enumerate(range(POW10_MIN, POW10_MAX + 1)):
        if e >= 0:
            p = 10 ** e
            k = 128 - p.bit_length()
            v = p << k if k >= 0 else p >> -k
        else:
            q = 10 ** -e
            k = 127 + q.bit_length()
            v = (1 << k) // q
            while v >= 1 << 128:
                k -= 1
                v = (1 << k) // q
            while v < 1 << 127:
                k += 1
                v = (1 << k) // q
        high[i], low[i] = v >> 64, v & ((1 << 64) - 1)
    return high, low


POW10_HIGH, POW10_LOW = _pow10_table()


@register_jitable
def _mul_128(a, b):
    """``a * b`` for uint64 ``a, b`` as the (high, low) uint64 halves of the 128-bit product."""
    mask32, s32 = np.uint64(0xFFFFFFFF), np.uint64(32)
    p0 = (a & mask32) * (b & mask32)
    p1 = (a & mask32) * (b >> s32)
    p2 = (a >> s32) * (b & mask32)
    mid = (p0 >> s32) + (p1 & mask32) + (p2 & mask32)
    return (a >> s32) * (b >> s32) + (p1 >> s32) + (p2 >> s32) + (mid >> s32), (p0 & mask32) | (mid << s32)


@kernel
def _parse_numbers(buf, spans, count, pow10, words, pow10_high, pow10_low, out, status):
    """Parse ``buf[spans[t, 0]:spans[t, 1]]`` for ``t < count`` into ``out``; ``status`` as above.

    Up to 19 significant digits: Clinger's fast path when exact, else the Eisel-Lemire
    algorithm (as in Go's strconv): the mantissa times a 128-bit approximation of the
    power of ten, accepted only when the rounding it implies is certain. Everything it
    cannot decide is left to ``float`` (status FALLBACK).
    """
    zero, one, ten = np.uint64(0), np.uint64(1), np.uint64(10)
    low9 = np.uint64(0x1FF)
    top = np.uint64(1) << np.uint64(63)
    for t in range(count):
        a, b = spans[t, 0], spans[t, 1]
        i = a
        neg = False
        if i < b and (buf[i] == 43 or buf[i] == 45):
            neg = buf[i] == 45
            i += 1
        if i < b and buf[i] != 46 and not (48 <= buf[i] <= 57):
            length = b - i
            word = length == 3 or length == 8
            if word:  # inf, infinity (a prefix of "infinity") or nan, any case
                first = 0 if (buf[i] | 32) == 105 else 8
                if first == 8 and length != 3:
                    word = False
                for k in range(length if word else 0):
                    if (buf[i + k] | 32) != words[first + k]:
                        word = False
                        break
            status[t] = NOT_FINITE if word else NOT_A_NUMBER
            continue
        mant = zero
        sig = 0
        digits = 0
        exp10 = 0
        while i < b and 48 <= buf[i] <= 57:
            d = buf[i] - 48
            if mant != zero or d != 0:
                sig += 1
                if sig <= MAX_MANTISSA_DIGITS:
                    mant = mant * ten + np.uint64(d)
            digits += 1
            i += 1
        if i < b and buf[i] == 46:
            i += 1
            while i < b and 48 <= buf[i] <= 57:
                d = buf[i] - 48
                if mant != zero or d != 0:
                    sig += 1
                    if sig <= MAX_MANTISSA_DIGITS:
                        mant = mant * ten + np.uint64(d)
                exp10 -= 1
                digits += 1
                i += 1
        if digits == 0:
            status[t] = NOT_A_NUMBER
            continue
        if i < b and (buf[i] == 101 or buf[i] == 69):
            i += 1
            eneg = False
            if i < b and (buf[i] == 43 or buf[i] == 45):
                eneg = buf[i] == 45
                i += 1
            e = 0
            edigits = 0
            while i < b and 48 <= buf[i] <= 57:
                if e < 100000:  # beyond any double: keeps the integer from overflowing
                    e = e * 10 + (buf[i] - 48)
                edigits += 1
                i += 1
            if edigits == 0:
                status[t] = NOT_A_NUMBER
                continue
            exp10 += -e if eneg else e
        if i != b:
            status[t] = NOT_A_NUMBER
            continue
        status[t] = OK
        if mant == zero:
            value = 0.0
        elif sig > MAX_MANTISSA_DIGITS or exp10 < POW10_MIN or exp10 > POW10_MAX:
            status[t] = FALLBACK
            continue
        elif mant < np.uint64(9007199254740992) and -22 <= exp10 <= 22:
            value = float(mant)
            value = value * pow10[exp10] if exp10 >= 0 else value / pow10[-exp10]
        else:
            m = mant
            clz = 0
            while m < top:
                m = m << one
                clz += 1
            exp2 = ((217706 * exp10) >> 16) + 64 + 1023 - clz
            x_hi, x_lo = _mul_128(m, pow10_high[exp10 - POW10_MIN])
            if (x_hi & low9) == low9 and x_lo + m < m:  # the truncated table may matter: widen
                y_hi, y_lo = _mul_128(m, pow10_low[exp10 - POW10_MIN])
                merged_hi = x_hi
                merged_lo = x_lo + y_hi
                if merged_lo < x_lo:
                    merged_hi += one
                if (merged_hi & low9) == low9 and merged_lo + one == zero and y_lo + m < m:
                    status[t] = FALLBACK
                    continue
                x_hi, x_lo = merged_hi, merged_lo
            msb = x_hi >> np.uint64(63)
            ret = x_hi >> (msb + np.uint64(9))
            exp2 -= 1 - int(msb)
            if x_lo == zero and (x_hi & low9) == zero and (ret & np.uint64(3)) == one:
                status[t] = FALLBACK  # exactly half way as far as 128 bits tell
                continue
            ret += ret & one
            ret >>= one
            if ret >> np.uint64(53) > zero:
                ret >>= one
                exp2 += 1
            if exp2 <= 0 or exp2 >= 0x7FF:  # subnormal or overflow: float() decides
                status[t] = FALLBACK
                continue
            value = math.ldexp(float(ret), exp2 - 1075)
        out[t] = -value if neg else value


@kernel
def _svmlight_scan(buf, label_spans, value_spans, indices, indptr, lines):
    """Rows, index:value spans and the first structural problem of svmlight text."""
    n = buf.shape[0]
    pos = line = rows = nl = nv = 0
    err = err_a = err_b = 0
    err_line = -1
    canonical = True
    indptr[0] = 0
    while pos < n:
        end = pos
        while end < n and buf[end] != 10:
            end += 1
        stop = pos
        while stop < end and buf[stop] != 35:
            stop += 1
        i = pos
        first = True
        last_index = -1
        while True:
            while i < stop and (buf[i] == 32 or 9 <= buf[i] <= 13):
                i += 1
            if i >= stop:
                break
            a = i
            while i < stop and not (buf[i] == 32 or 9 <= buf[i] <= 13):
                i += 1
            b = i
            if first:
                label_spans[nl, 0] = a
                label_spans[nl, 1] = b
                nl += 1
                first = False
                continue
            c = a
            while c < b and buf[c] != 58:
                c += 1
            if c == b:
                err, err_a, err_b = NO_COLON, a, b
                break
            if c - a == 3 and buf[a] == 113 and buf[a + 1] == 105 and buf[a + 2] == 100:  # qid
                continue
            k = a
            neg = False
            if k < c and buf[k] == 45:  # "-3" is negative; "+3" is no plain index
                neg = True
                k += 1
            bad = k == c
            index = 0
            sig = 0
            while k < c:
                d = buf[k] - 48
                if d < 0 or d > 9:
                    bad = True
                    break
                if index != 0 or d != 0:
                    sig += 1
                    if sig <= MAX_DIGITS:
                        index = index * 10 + d
                k += 1
            if bad:
                err, err_a, err_b = BAD_INDEX, a, c
                break
            if neg:
                err, err_a, err_b = NEGATIVE_INDEX, a, c
                break
            if sig > MAX_DIGITS:
                err, err_a, err_b = HUGE_INDEX, a, c
                break
            if index <= last_index:
                canonical = False
            last_index = index
            indices[nv] = index
            value_spans[nv, 0] = c + 1
            value_spans[nv, 1] = b
            nv += 1
        if err != 0:
            err_line = line
            break
        if not first:
            lines[rows] = line
            rows += 1
            indptr[rows] = nv
        line += 1
        pos = end + 1
    return rows, nl, nv, err, err_a, err_b, err_line, canonical


@kernel
def _delimited_scan(buf, delim, spans, lines):
    """Rows and field spans of delimited text; the first row whose width differs from the first's."""
    n = buf.shape[0]
    pos = line = rows = ns = 0
    width = -1
    err = err_pos = err_count = 0
    err_line = -1
    while pos < n:
        end = pos
        while end < n and buf[end] != 10:
            end += 1
        s, e = pos, end
        while s < e and (buf[s] == 32 or 9 <= buf[s] <= 13):
            s += 1
        while e > s and (buf[e - 1] == 32 or 9 <= buf[e - 1] <= 13):
            e -= 1
        if s < e and buf[s] != 35:
            count = 0
            fa = s
            while True:
                fb = fa
                while fb < e and buf[fb] != delim:
                    fb += 1
                a, b = fa, fb
                while a < b and (buf[a] == 32 or 9 <= buf[a] <= 13):
                    a += 1
                while b > a and (buf[b - 1] == 32 or 9 <= buf[b - 1] <= 13):
                    b -= 1
                spans[ns, 0] = a
                spans[ns, 1] = b
                ns += 1
                count += 1
                if fb >= e:
                    break
                fa = fb + 1
            if width < 0:
                width = count
            elif count != width:
                # after every field of the line: a bad number in it is reported first
                err, err_pos, err_line, err_count = WIDTH, e, line, count
                break
            lines[rows] = line
            rows += 1
        line += 1
        pos = end + 1
    return rows, ns, width, err, err_pos, err_line, err_count


def _numbers(data, buf, spans, count):
    """Values and statuses of ``count`` spans; the fallback ones parsed by ``float``."""
    out = np.empty(count)
    status = np.empty(count, dtype=np.uint8)
    _parse_numbers(buf, spans, count, POW10, WORDS, POW10_HIGH, POW10_LOW, out, status)
    for t in np.flatnonzero(status == FALLBACK):
        value = float(data[spans[t, 0]:spans[t, 1]])
        out[t] = value
        status[t] = OK if math.isfinite(value) else NOT_FINITE
    return out, status


def _first_bad(status, spans, start=0):
    """``(byte position, span number)`` of the first bad number from ``start``, or None."""
    bad = np.flatnonzero(status[start:])
    return None if not bad.size else (int(spans[start + bad[0], 0]), start + int(bad[0]))


def _line_of(buf, pos) -> int:
    return int(np.count_nonzero(buf[:pos] == 10))


def parse_svmlight(data: bytes) -> parsers.SparseRows:
    """:func:`mpiml.data.parsers.parse_svmlight` by the kernels (same arrays, same error)."""
    data = bytes(data)
    buf = np.frombuffer(data, dtype=np.uint8)
    n_lines = int(np.count_nonzero(buf == 10)) + 1
    n_pairs = int(np.count_nonzero(buf == 58))
    label_spans = np.empty((n_lines, 2), dtype=np.int64)
    value_spans = np.empty((n_pairs, 2), dtype=np.int64)
    indices = np.empty(n_pairs, dtype=np.int64)
    indptr = np.empty(n_lines + 1, dtype=np.int64)
    lines = np.empty(n_lines, dtype=np.int64)
    rows, nl, nv, err, err_a, err_b, err_line, _ = _svmlight_scan(buf, label_spans, value_spans, indices,
                                                                  indptr, lines)
    labels, label_status = _numbers(data, buf, label_spans, nl)
    values, value_status = _numbers(data, buf, value_spans, nv)
    candidates = []
    if err:
        token = data[err_a:err_b]
        message = {NO_COLON: f"token {parsers.show(token)} is not index:value",
                   BAD_INDEX: f"feature index {parsers.show(token)} is not an integer",
                   NEGATIVE_INDEX: f"negative feature index {token.decode() if err == NEGATIVE_INDEX else 0}",
                   HUGE_INDEX: f"feature index {parsers.show(token)} is too large"}[err]
        candidates.append((err_a, message))
    bad = _first_bad(label_status, label_spans)
    if bad is not None:
        a, b = label_spans[bad[1]]
        candidates.append((bad[0], parsers.number_problem(data[a:b], "label")))
    bad = _first_bad(value_status, value_spans)
    if bad is not None:
        a, b = value_spans[bad[1]]
        candidates.append((bad[0], parsers.number_problem(data[a:b], "value", f" of feature {indices[bad[1]]}")))
    error = None
    if candidates:
        pos, message = min(candidates, key=lambda c: c[0])
        line = _line_of(buf, pos)
        rows = int(np.searchsorted(lines[:rows], line))
        error = (line, parsers.SVMLIGHT + message)
    nnz = int(indptr[rows])
    return parsers.SparseRows(labels[:rows], indptr[:rows + 1], indices[:nnz], values[:nnz], lines[:rows], error)


def parse_delimited(data: bytes, delimiter: str = ",", header: bool = False) -> parsers.DenseRows:
    """:func:`mpiml.data.parsers.parse_delimited` by the kernels (a one-byte ``delimiter``)."""
    data = bytes(data)
    delim = delimiter.encode()
    buf = np.frombuffer(data, dtype=np.uint8)
    n_lines = int(np.count_nonzero(buf == 10)) + 1
    spans = np.empty((int(np.count_nonzero(buf == delim[0])) + n_lines, 2), dtype=np.int64)
    lines = np.empty(n_lines, dtype=np.int64)
    rows, ns, width, err, err_pos, err_line, err_count = _delimited_scan(buf, delim[0], spans, lines)
    values, status = _numbers(data, buf, spans, ns)
    names, skip = None, 0
    if header and rows:
        names = [data[a:b].decode("utf-8", errors="replace") for a, b in spans[:width]]
        skip = 1
    header = names
    candidates = []
    if err:
        candidates.append((err_pos, 1, f"row has {err_count} columns, expected {width}"))
    bad = _first_bad(status, spans, skip * width)
    if bad is not None:
        a, b = spans[bad[1]]
        candidates.append((bad[0], 0, parsers.ROW + parsers.number_problem(data[a:b], "value")))
    error = None
    if candidates:
        pos, _, message = min(candidates)  # a bad number ahead of a width problem at the same place
        line = _line_of(buf, pos)
        rows = int(np.searchsorted(lines[:rows], line))
        error = (line, message)
    kept = rows - skip
    if not kept and header is None:
        width = 0
    width = max(width, 0)
    out = values[skip * width:(skip + kept) * width].reshape(kept, width)
    return parsers.DenseRows(out, lines[skip:rows], header, error)
