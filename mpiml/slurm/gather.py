"""Collect the results of a job-array sweep into one table.

The sweep template leaves, per array task ``N``, ``task-N.args`` (that task's line of the
sweep file) and ``task-N.json`` (the command's JSON output; its last line is one JSON
object, as every ``mpiml ... --json`` prints).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from mpiml.errors import DataError

_RESULT = re.compile(r"task-(\d+)\.json\Z")


def read_result(path: Path) -> dict:
    """The last non-empty line of ``path`` as a JSON object."""
    lines = [(number, line) for number, line in enumerate(path.read_text().splitlines(), 1) if line.strip()]
    if not lines:
        raise DataError("empty result file", str(path))
    number, line = lines[-1]
    try:
        value = json.loads(line)
    except ValueError as exc:
        raise DataError(f"last line is not JSON ({exc})", str(path), number) from None
    if not isinstance(value, dict):
        raise DataError("last line is not a JSON object", str(path), number)
    return value


def gather(directory) -> list[dict]:
    """One row per task, ordered by task index: ``task``, ``args``, then the result's fields."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError("no such results folder", str(directory))
    rows = []
    for path in directory.iterdir():
        match = _RESULT.match(path.name)
        if not match:
            continue
        task = int(match.group(1))
        args_file = directory / f"task-{task}.args"
        args = args_file.read_text().strip() if args_file.exists() else ""
        rows.append({"task": task, "args": args, **read_result(path)})
    if not rows:
        raise DataError("no task-N.json results", str(directory))
    return sorted(rows, key=lambda row: row["task"])


def columns(rows: list[dict]) -> list[str]:
    """Every field of ``rows`` in first-seen order."""
    seen = {}
    for row in rows:
        seen.update(dict.fromkeys(row))
    return list(seen)


def cell(value) -> str:
    """A table cell: scalars as they are, lists and objects as compact JSON."""
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(",", ":"))
    return "" if value is None else str(value)
