"""Progress of long phases on rank 0's stderr, "resuming from", "wrote FILE"; stdout stays one JSON object."""

from __future__ import annotations

import io
import re
import time

import pytest
from clirun import mpiml, one_json

from mpiml.runtime.progress import Phase, note

FAST = {"MPIML_PROGRESS": "always", "MPIML_PROGRESS_EVERY": "0"}  # every update is a line, from the start


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_lines_when_not_a_terminal():
    out = io.StringIO()
    with Phase("crunching", total=4, unit="blocks", stream=out, delay=0, every=0.05, enabled=True) as phase:
        phase.update(2, "loss 0.5")
        time.sleep(0.3)
    lines = out.getvalue().splitlines()
    assert any(re.fullmatch(r"mpiml: crunching: 50% \(2/4 blocks\), \d+ s, about \d+ s left, loss 0.5", line)
               for line in lines), lines
    assert lines[-1].startswith("mpiml: crunching: done after") and "\r" not in out.getvalue()


def test_a_bar_with_time_left_on_a_terminal():
    out = Terminal()
    with Phase("crunching", total=10, stream=out, delay=0, enabled=True) as phase:
        phase.update(3)
        time.sleep(0.5)
    text = out.getvalue()
    assert "\rcrunching: [######..............]  30% 3/10" in text and "left" in text
    assert text.endswith("done after 1 s\n") or text.endswith("done after 0 s\n")


def test_short_phases_and_other_ranks_stay_silent():
    out = io.StringIO()
    with Phase("quick", total=3, stream=out, delay=5, every=0.01, enabled=True) as phase:
        phase.update(3)
        time.sleep(0.1)
    with Phase("elsewhere", stream=out, delay=0, every=0.01, enabled=False):
        time.sleep(0.05)
    assert out.getvalue() == ""
    note("wrote x.npz", stream=out)
    assert out.getvalue() == "mpiml: wrote x.npz\n"


@pytest.mark.parametrize("ranks", [1, 3])
def test_sgd_json_shows_progress_on_stderr_and_says_it_resumed(ranks, tmp_path):
    common = ["sgd", "--data", "synthetic:classification,n=900,d=6", "--strategy", "sync", "--json",
              "--checkpoint-dir", tmp_path / "ck"]
    first = mpiml(ranks, *common, "--epochs", "2", "--out", tmp_path / "m.npz", env=FAST)
    report = one_json(first)
    assert first.stderr.count("mpiml: training: 100% (2/2 epochs)") == 1, first.stderr  # rank 0 only
    assert f"mpiml: wrote {tmp_path / 'm.npz'}" in first.stderr
    again = mpiml(ranks, *common, "--epochs", "3", "--resume", env=FAST)
    assert one_json(again)["resumed_from_update"] == report["updates"]
    assert again.stderr.count(f"mpiml: resuming from update {report['updates']} of checkpoint {tmp_path / 'ck'}") == 1


def test_mf_says_it_resumed_and_what_it_wrote(tmp_path):
    common = ["mf", "--ratings", "synthetic:users=300,items=80,ratings=4000", "--rank", "3", "--json",
              "--checkpoint-dir", tmp_path / "ck"]
    one_json(mpiml(3, *common, "--iters", "2"))
    again = mpiml(3, *common, "--iters", "3", "--resume", "--out", tmp_path / "mf.npz")
    assert one_json(again)["iterations"] == 3
    assert again.stderr.count("mpiml: resuming from iteration 2 of checkpoint") == 1
    assert f"mpiml: wrote {tmp_path / 'mf.npz'}" in again.stderr


def test_datagen_and_bench_progress_and_wrote(tmp_path):
    gen = mpiml(3, "datagen", "ratings", "--users", "3000", "--items", "100", "--ratings", "9000", "--out",
                tmp_path / "r.npz", "--json", env=FAST)
    one_json(gen)
    assert gen.stderr.count("mpiml: generating ratings: 100% (") == 1 and f"wrote {tmp_path / 'r.npz'}" in gen.stderr
    bench = mpiml(3, "bench", "allreduce", "--sizes", "8,64", "--iters", "2", "--warmup", "0",
                  "--collective-algorithm", "native", "--json", env=FAST)
    one_json(bench)
    assert "mpiml: measuring: 100% (2/2 sizes)" in bench.stderr
