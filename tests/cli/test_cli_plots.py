"""``--plot FILE`` on sgd, mf, tune, model and bench: a readable PNG, said where, stdout still one JSON object."""

from __future__ import annotations

import pytest
from clirun import mpiml, one_error, one_json

matplotlib_image = pytest.importorskip("matplotlib.image")  # the plot extra (a test dependency)


def readable_png(path, min_width=800):
    image = matplotlib_image.imread(path)
    assert image.shape[1] >= min_width and image.shape[0] >= 300, image.shape
    return image


@pytest.mark.parametrize("ranks", [3])  # rank 0 draws: one rank count shows the gathered history
def test_sgd_and_mf_draw_training_runs(tmp_path, ranks):
    for strategy in ("sync", "lbfgs"):
        png = tmp_path / f"sgd-{strategy}.png"
        result = mpiml(ranks, "sgd", "--data", "synthetic:classification,n=900,d=6", "--strategy", strategy,
                       *(["--epochs", "3"] if strategy == "sync" else []), "--plot", png, "--json")
        one_json(result)
        assert f"mpiml: wrote {png}" in result.stderr
        readable_png(png, 1200)  # three panels
    png = tmp_path / "mf.png"
    result = mpiml(ranks, "mf", "--ratings", "synthetic:users=300,items=80,ratings=4000", "--rank", "3", "--iters", "3",
                   "--test-fraction", "0.2", "--plot", png, "--json")
    one_json(result)
    readable_png(png, 1200)


def test_tune_model_and_bench_draw(tmp_path):
    png = tmp_path / "model.png"
    mpiml(1, "model", "--ranks", "2,64,1000", "--sizes", "8:1M:8", "--plot", png)
    readable_png(png, 1200)
    png = tmp_path / "tune.png"
    one_json(mpiml(2, "tune", "--no-compute", "--collective", "bcast", "--sizes", "8,4096", "--min-time", "0.001",
                   "--max-iters", "3",
                   "--repeats", "1", "--out", tmp_path / "t.json", "--plot", png, "--json"))
    readable_png(png)
    png = tmp_path / "bench.png"
    result = mpiml(3, "bench", "allgather", "--sizes", "8,4096,200000", "--iters", "2", "--warmup", "0",
                   "--collective-algorithm", "ring,native", "--plot", png, "--json")
    one_json(result)
    assert f"mpiml: wrote {png}" in result.stderr
    readable_png(png, 1200)  # bandwidth and latency panels


def test_plot_checks_come_before_the_work(tmp_path):
    one_error(mpiml(3, "sgd", "--plot", tmp_path / "no" / "x.png", status=None), "--plot", "does not exist")
    one_error(mpiml(1, "model", "--plot", tmp_path / "no" / "x.png", status=None), "--plot", "does not exist")
