"""``mpiml tune`` writes a tuning file that ``auto`` then follows; ``mpiml model`` predicts."""

from __future__ import annotations

import json
import sys

import pytest
from mpirun import run_mpi

from mpiml.collectives import select
from mpiml.collectives.tuning import load_tuning

TIMEOUT = 240


def mpiml(ranks, *args, env=None):
    result = run_mpi(ranks, [sys.executable, "-m", "mpiml", *args], timeout=TIMEOUT, env=env)
    assert not result.hung and result.returncode == 0, result.describe()
    return result


def json_of(result):
    lines = [line[line.index("{"):] for line in result.stdout.splitlines() if "{" in line]
    assert len(lines) == 1, result.describe()
    return json.JSONDecoder().raw_decode(lines[0])[0]


def test_tune_explain_writes_a_file_auto_then_follows(tmp_path):
    path = tmp_path / "tuning.json"
    sizes = "8,4096,300000"
    # emulated nodes of 2: ranks 0, 1 on one node, rank 2 on another (both links measured)
    result = mpiml(3, "tune", "--explain", "--no-compute", "--out", str(path), "--sizes", sizes, "--ranks", "2,3",
                   "--collective", "allreduce,bcast", "--min-time", "0.002", "--max-iters", "5",
                   env={"MPIML_RANKS_PER_NODE": "2"})
    assert "measured/predicted" in result.stdout and "efficiency" in result.stdout
    assert "intra-node link (ranks 0 and 1)" in result.stdout and "inter-node link (ranks 0 and 2)" in result.stdout
    document = json.loads(path.read_text())
    assert document["nodes"] == {"2": [2], "3": [2, 1]}
    assert set(document["calibration"]["pairs"]) == {"intra_node", "inter_node"}
    tuning = load_tuning(path, select.ALGORITHMS)
    assert set(tuning.rules) == {(c, p) for c in ("allreduce", "bcast") for p in (2, 3)}
    assert tuning.params is not None and tuning.params.alpha > 0 and tuning.params.beta > 0
    assert tuning.params.intra_alpha > 0 and tuning.params.intra_beta > 0
    assert set(tuning.params.native_extra_by_size) == {"allreduce", "bcast"}   # from 32 KiB: the 300000-byte runs
    for name in ("copy", "float32", "float64"):   # rates per size, from inside the caches to memory's
        points = [nbytes for nbytes, _ in tuning.params.rates_by_size[name]]
        assert points == sorted(points) and len(points) == 5
        assert all(0 < rate < 1e-8 for _, rate in tuning.params.rates_by_size[name])
    for name in ("beta", "intra_beta"):   # each link's per-byte time by message size, from the ping-pong
        assert [n for n, _ in tuning.params.rates_by_size[name]] == [64 << 10, 512 << 10, 1 << 20, 4 << 20, 16 << 20]
    # Every measurement carries its prediction; the recorded winner is the fastest measured
    # (native unless beaten by more than the margin auto asks of the model).
    winners, native = {}, {}
    for row in document["measurements"]:
        assert row["predicted_seconds"] > 0
        key = (row["collective"], row["ranks"], row["bytes"])
        if row["algorithm"] == "native":
            native[key] = row["time_median_seconds"]
        if key not in winners or row["time_median_seconds"] < winners[key][1]:
            winners[key] = (row["algorithm"], row["time_median_seconds"])
    for key, (_, seconds) in winners.items():
        if seconds > select.NATIVE_MARGIN * native[key]:
            winners[key] = ("native", native[key])
    for (collective, p, nbytes), (name, _) in winners.items():
        assert tuning.lookup(collective, nbytes, p) == name
    # auto with that file runs the recorded winner at each measured size (p = 3 here).
    report = json_of(mpiml(3, "bench", "allreduce", "--collective-algorithm", "auto", "--sizes", sizes, "--iters", "2",
                           "--check", "--json", env={"MPIML_TUNING": str(path)}))
    for rec in report["results"]:
        assert rec["correct"] and rec["runs"] == winners[("allreduce", 3, rec["bytes"])][0]


def test_bench_tuning_option_forces_auto(tmp_path):
    path = tmp_path / "fake.json"
    rules = {"allreduce": {"2": [{"min_bytes": 0, "algorithm": "tree"}]}}
    path.write_text(json.dumps({"format": "mpiml-tuning", "version": 1, "rules": rules}))
    report = json_of(mpiml(2, "bench", "allreduce", "--collective-algorithm", "auto", "--sizes", "8,1M", "--iters", "2",
                           "--check", "--json", "--tuning", str(path)))
    assert [(r["runs"], r["correct"]) for r in report["results"]] == [("tree", True), ("tree", True)]


def test_model_predicts_far_beyond_the_machine():
    report = json_of(mpiml(1, "model", "--ranks", "2,1000,100000", "--sizes", "8,1M,1G", "--json"))
    assert {(r["ranks"], r["bytes"]) for r in report["predictions"]} == {
        (p, s) for p in (2, 1000, 100000) for s in (8, 1 << 20, 1 << 30)}
    for rec in report["predictions"]:
        times = rec["predicted_seconds"]
        assert times[rec["fastest"]] == min(times.values())
        assert all(t >= rec["lower_bound_seconds"] for t in times.values())
    assert all(c["from"] != c["to"] for c in report["crossovers"])
    text = mpiml(1, "model", "--ranks", "1024", "--sizes", "8:1G:64", "--set", "alpha=2e-5").stdout
    assert "Crossovers" in text and "p=1024" in text


@pytest.mark.parametrize("args", [["model", "--ranks", "0"], ["model", "--set", "warp=1"],
                                  ["tune", "--ranks", "9"], ["bench", "allreduce", "--tuning", "/nonexistent"]])
def test_bad_arguments_exit_2(args):
    result = run_mpi(2, [sys.executable, "-m", "mpiml", *args], timeout=TIMEOUT)
    assert not result.hung and result.returncode == 2, result.describe()
    assert "mpiml: error" in result.stderr
