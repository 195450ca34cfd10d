"""``mpiml bench`` under mpiexec: JSON parsed and checked, CSV and PNG written (bounded runs)."""

from __future__ import annotations

import csv
import json
import sys

import pytest
from mpirun import run_mpi

import mpiml

TIMEOUT = 180
SHORT = ["--sizes", "8,3000,70000", "--iters", "3", "--warmup", "1"]


def bench(ranks, *args, env=None):
    result = run_mpi(ranks, [sys.executable, "-m", "mpiml", "bench", *args], timeout=TIMEOUT, env=env)
    return result


def json_of(result):
    assert not result.hung and result.returncode == 0, result.describe()
    # Launchers tag lines with the rank ("[0] " for MPICH, "[1,0]<stdout>:" for Open MPI).
    lines = [line[line.index("{"):] for line in result.stdout.splitlines() if "{" in line]
    assert len(lines) == 1, result.describe()  # one JSON object, from rank 0 only
    return json.JSONDecoder().raw_decode(lines[0])[0]


@pytest.mark.parametrize("ranks, extra", [(1, []), (2, ["--shared-inputs"]), (3, ["--in-place"]), (4, ["--dtype", "float64"]),
                                          (5, ["--op", "prod", "--dtype", "int32"])])
def test_allreduce_check_json_every_algorithm_correct(ranks, extra):
    report = json_of(bench(ranks, "allreduce", "--check", "--json", *extra, *SHORT))
    assert report["ranks"] == ranks and report["all_correct"] is True
    assert report["shared_inputs"] == ("--shared-inputs" in extra)
    names = set(mpiml.ALGORITHMS["allreduce"]) | {"auto"}
    seen = {(r["bytes"], r["algorithm"]) for r in report["results"]}
    assert seen == {(b, a) for b in (8, 3000, 70000) for a in names}
    for rec in report["results"]:
        assert rec["correct"] is True, rec
        assert rec["in_place"] == ("--in-place" in extra)
        factor = 2 * (ranks - 1) / ranks
        assert rec["busbw_gbps"] == pytest.approx(rec["algbw_gbps"] * factor)
        assert rec["time_min_seconds"] <= rec["time_median_seconds"] <= rec["time_max_seconds"]
        if rec["algorithm"] == "native":
            assert rec["ratio_to_native"] == 1.0
        if rec["algorithm"] == "auto":
            assert rec["runs"] in names - {"auto"}


@pytest.mark.parametrize("collective", ["reduce_scatter", "allgather", "bcast", "reduce"])
def test_other_collectives_at_three_ranks(collective):
    report = json_of(bench(3, collective, "--check", "--json", "--in-place", "--dtype", "int32", *SHORT))
    names = set(mpiml.ALGORITHMS[collective]) | {"auto"}
    assert {r["algorithm"] for r in report["results"]} == names
    assert all(r["correct"] for r in report["results"]), report["results"]


def test_table_csv_and_plot(tmp_path):
    csv_path, png_path = tmp_path / "out.csv", tmp_path / "out.png"
    result = bench(2, "allreduce", "--collective-algorithm", "ring,native", "--op", "max", "--csv", str(csv_path),
                   "--plot", str(png_path), "--roof", *SHORT)
    assert not result.hung and result.returncode == 0, result.describe()
    assert "median_us" in result.stdout and result.stdout.count("ring") == 3 and "of_roof" in result.stdout
    rows = list(csv.DictReader(csv_path.open()))
    assert [(int(r["bytes"]), r["algorithm"]) for r in rows] == [
        (b, a) for b in (8, 3000, 70000) for a in ("ring", "native")]
    for r in rows:  # the roof: one time per size, its busbw and each algorithm's share of it
        roof, median = float(r["roof_seconds"]), float(r["time_median_seconds"])
        assert roof > 0 and float(r["roof_fraction"]) == pytest.approx(roof / median)
        assert float(r["roof_busbw_gbps"]) == pytest.approx(int(r["bytes"]) / roof / 1e9)  # 2 (p-1)/p = 1 at p=2
    assert len({r["roof_seconds"] for r in rows if r["bytes"] == "70000"}) == 1
    import matplotlib.image  # a test dependency: the PNG must be readable

    image = matplotlib.image.imread(png_path)
    assert image.shape[0] > 300 and image.shape[1] > 500


@pytest.mark.parametrize("args,message", [
    (["allreduce", "--collective-algorithm", "ring,nope"], "unknown allreduce algorithm"),
    (["allreduce", "--sizes", "8:4"], "bad size range"),
    (["allgather", "--dtype", "complex64"], "not an integer or floating"),
])
def test_bad_arguments_fail_cleanly_on_every_rank(args, message):
    result = bench(2, *args)
    assert not result.hung and result.returncode == 2, result.describe()
    assert message in result.stderr


def test_quick_runs_every_algorithm_oversubscribed():
    result = bench(4, "allreduce", "--quick")
    assert not result.hung and result.returncode == 0, result.describe()
    assert result.seconds < 60, result.seconds
    for name in mpiml.ALGORITHMS["allreduce"]:
        assert name in result.stdout


def test_plot_without_matplotlib_fails_before_measuring(tmp_path):
    fake = tmp_path / "site"
    (fake / "matplotlib").mkdir(parents=True)
    (fake / "matplotlib" / "__init__.py").write_text("raise ImportError('not installed')\n")
    from mpirun import REPO

    result = bench(2, "allreduce", "--plot", str(tmp_path / "x.png"), "--sizes", "256M", "--iters", "1000",
                   env={"PYTHONPATH": f"{fake}:{REPO}"})
    assert not result.hung and result.returncode == 2, result.describe()
    assert "pip install 'mpiml[plot]'" in result.stderr and "median_us" not in result.stdout
    assert not (tmp_path / "x.png").exists()
