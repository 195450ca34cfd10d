"""examples/tune_allreduce.py: the tuning file it writes is what auto then runs; the job's sum is right."""

from __future__ import annotations

import json

import pytest
from examples_helpers import lines, number, run_example

from mpiml.collectives import select


@pytest.mark.parametrize("ranks", [2, 3])
def test_auto_follows_the_measured_winner(tmp_path, ranks):
    floats = 20_000
    out = run_example("tune_allreduce.py", ranks, "--floats", floats, "--out", tmp_path / "t.json",
                      "--iters", 5).stdout
    [model_line] = lines(out, "model pick")
    assert model_line.split()[0] == select.model_winner("allreduce", floats * 8, ranks)
    [measured] = lines(out, "measured ms")
    timed = measured.split()[::2]
    assert timed[0] == "native" and len(timed) == 2
    [winner] = lines(out, "measured winner")
    assert winner in timed
    rules = json.loads((tmp_path / "t.json").read_text())["rules"]
    assert rules == {"allreduce": {str(ranks): [{"min_bytes": 0, "algorithm": winner}]}}
    assert lines(out, "auto with t.json runs") == [winner]
    # every rank contributed arange(n) * (rank + 1), five times: exact in float64
    expected = 5 * sum(r + 1 for r in range(ranks)) * floats * (floats - 1) / 2
    assert number(out, "job checksum") == expected
