"""Run ``python -m mpiml ...`` under a bounded mpiexec and read what it printed, as users see it."""

from __future__ import annotations

import json
import sys

from mpirun import run_mpi

MPIML = [sys.executable, "-m", "mpiml"]
TIMEOUT = 180


def mpiml(ranks, *args, env=None, cwd=None, timeout=TIMEOUT, status=0):
    """The finished run of ``mpiml ARGS`` on ``ranks`` ranks; asserts its exit status (None: any)."""
    kwargs = {"cwd": cwd} if cwd else {}
    # Progress lines only where a test asks for them (a loaded machine can make any phase long).
    env = {"MPIML_PROGRESS": "never", **(env or {})}
    result = run_mpi(ranks, [*MPIML, *map(str, args)], timeout=timeout, env=env, **kwargs)
    assert not result.hung, result.describe()
    if status is not None:
        assert result.returncode == status, result.describe()
    return result


def one_json(result) -> dict:
    """stdout must be exactly one JSON object (from rank 0)."""
    text = result.stdout.strip()
    assert text.count("\n") == 0 and text.startswith("{"), result.describe()
    return json.loads(text)


def one_error(result, *parts) -> str:
    """stderr must be one ``mpiml: error:`` line (one rank) containing ``parts``; exit status 2."""
    assert result.returncode == 2, result.describe()
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("mpiml: error: "), result.describe()
    assert result.stdout.strip() == "", result.describe()
    for part in parts:
        assert part in lines[0], result.describe()
    return lines[0]
