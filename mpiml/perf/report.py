"""Benchmark records for people (a table), for machines (CSV) and as a plot (PNG)."""

from __future__ import annotations

import csv
import io

from mpiml.perf.sizes import format_bytes
from mpiml.errors import ArgumentError
from mpiml.runtime.files import atomic_write

TABLE_HEADERS = ("size", "algorithm", "median_us", "min_us", "max_us", "algbw_GB/s", "busbw_GB/s",
                 "x_native", "check")
ROOF_HEADERS = ("roof_busbw", "of_roof")
CSV_FIELDS = ("collective", "algorithm", "runs", "ranks", "bytes", "count", "dtype", "op", "in_place",
              "iterations", "time_median_seconds", "time_min_seconds", "time_max_seconds",
              "algbw_gbps", "busbw_gbps", "ratio_to_native", "correct", "roof_seconds", "roof_busbw_gbps",
              "roof_fraction")


WIDTHS = (6, 26, 10, 10, 10, 10, 10, 8, 5, 10, 7)


def headers(roof: bool = False) -> tuple:
    """The table's column names (with the roof's two when ``roof``)."""
    return TABLE_HEADERS + (ROOF_HEADERS if roof else ())


def add_roof(records, roof_seconds: float) -> None:
    """Give one size's records the roof: its seconds, its busbw, and each record's share of it."""
    from mpiml.perf.metrics import busbw_gbps

    for rec in records:
        rec["roof_seconds"] = roof_seconds
        rec["roof_busbw_gbps"] = busbw_gbps(rec["collective"], rec["bytes"], roof_seconds, rec["ranks"])
        median = rec["time_median_seconds"]
        rec["roof_fraction"] = roof_seconds / median if median > 0 else None


def fixed_width(row) -> str:
    """One line of a table whose columns keep :data:`WIDTHS` (so rows can be printed as measured)."""
    return "  ".join(str(v).rjust(w) if i > 1 else str(v).ljust(w)
                     for i, (v, w) in enumerate(zip(row, WIDTHS))).rstrip()


def _verdict(correct):
    return "-" if correct is None else ("ok" if correct else "WRONG")


def table_rows(records):
    """Rows of :data:`TABLE_HEADERS`; ``auto`` shows the algorithm it ran."""
    rows = []
    for rec in records:
        name = rec["algorithm"]
        if name == "auto":
            name = f"auto->{rec['runs']}"
        ratio = rec["ratio_to_native"]
        rows.append((
            format_bytes(rec["bytes"]), name,
            f"{rec['time_median_seconds'] * 1e6:.1f}", f"{rec['time_min_seconds'] * 1e6:.1f}",
            f"{rec['time_max_seconds'] * 1e6:.1f}",
            f"{rec['algbw_gbps']:.3f}", f"{rec['busbw_gbps']:.3f}",
            "-" if ratio is None else f"{ratio:.2f}", _verdict(rec["correct"]),
        ) + ((f"{rec['roof_busbw_gbps']:.3f}", "-" if rec["roof_fraction"] is None else f"{rec['roof_fraction']:.2f}")
             if "roof_seconds" in rec else ()))
    return rows


def csv_text(records) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    return buffer.getvalue()


def write_csv(path, records) -> None:
    """The records as CSV (one row per size and algorithm), written atomically."""
    with atomic_write(path, "w") as handle:
        handle.write(csv_text(records))


def require_matplotlib():
    """The ``matplotlib`` module, set to draw files only, or an ArgumentError saying how to get it."""
    try:
        import matplotlib
    except ImportError:
        raise ArgumentError("--plot needs matplotlib: pip install 'mpiml[plot]'") from None
    matplotlib.use("Agg")
    return matplotlib
