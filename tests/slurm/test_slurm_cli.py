"""``mpiml slurm`` as users run it (bounded runs of ``python -m mpiml``); sbatch is a stand-in here.

The real sbatch is exercised in test_slurm_templates_cluster.py.
"""

from __future__ import annotations

import json
import os
import stat
import sys

import pytest
from mpirun import run_mpi

from mpiml.slurm import templates
from mpiml.slurm.render import render_script

MPIML = [sys.executable, "-m", "mpiml"]

FAKE_SBATCH = """#!/bin/sh
cat > "$SBATCH_RECORD"
echo "$@" > "$SBATCH_RECORD.args"
if [ -n "$SBATCH_REFUSE" ]; then echo "sbatch: error: $SBATCH_REFUSE" >&2; exit 1; fi
echo "4242;mycluster"
"""


@pytest.fixture
def fake_sbatch(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(FAKE_SBATCH)
    (bin_dir / "sbatch").chmod(stat.S_IRWXU)
    record = tmp_path / "submitted.sbatch"
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "SBATCH_RECORD": str(record)}, record


def test_render_to_stdout_and_to_a_file_agree_with_the_library(tmp_path):
    argv = ["slurm", "render", "hybrid", "--nodes", "2", "--cpus-per-task", "8", "--time", "3:00:00",
            "--sbatch", "exclusive", "--venv", str(tmp_path / "env"), "--", "mpiml", "info", "--json"]
    expected = render_script(templates.find("hybrid").read_text(),
                             {"nodes": "2", "cpus-per-task": "8", "time": "3:00:00", "exclusive": None},
                             ["mpiml", "info", "--json"], str(tmp_path / "env"))
    printed = run_mpi(1, [*MPIML, *argv], timeout=120)
    assert printed.returncode == 0, printed.describe()
    assert printed.stdout == expected
    written = run_mpi(1, [*MPIML, *argv[:2], *argv[2:-4], "--out", str(tmp_path / "job.sbatch"), *argv[-4:]],
                      timeout=120)
    assert written.returncode == 0 and written.stdout == "", written.describe()
    assert (tmp_path / "job.sbatch").read_text() == expected


def test_render_refuses_bad_values_with_a_clear_message():
    result = run_mpi(1, [*MPIML, "slurm", "render", "single-node", "--time", "25:61", "--", "true"], timeout=120)
    assert result.returncode == 2 and result.stdout == ""
    assert "mpiml: error: mpiml slurm render: --time: '25:61' is not a Slurm time" in result.stderr
    result = run_mpi(1, [*MPIML, "slurm", "render", "no-such-template"], timeout=120)
    assert result.returncode == 2 and "no template 'no-such-template' (known: evaluate, hybrid" in result.stderr


def test_list_names_every_template():
    result = run_mpi(1, [*MPIML, "slurm", "list"], timeout=120)
    assert result.returncode == 0, result.describe()
    listed = [line.split()[0] for line in result.stdout.splitlines()[2:]]
    assert listed == list(templates.available())


def test_submit_hands_the_rendered_script_to_sbatch_and_prints_the_job_id(fake_sbatch):
    env, record = fake_sbatch
    result = run_mpi(1, [*MPIML, "slurm", "submit", "evaluate", "--after", "77", "--json", "--", "mpiml", "info"],
                     env=env, timeout=120)
    assert result.returncode == 0, result.describe()
    assert json.loads(result.stdout) == {"job_id": "4242"}
    assert record.read_text() == render_script(templates.find("evaluate").read_text(),
                                               {"dependency": "afterok:77"}, ["mpiml", "info"])
    assert "--parsable" in (record.parent / (record.name + ".args")).read_text()


def test_submit_reports_sbatch_refusing(fake_sbatch):
    env, _ = fake_sbatch
    env["SBATCH_REFUSE"] = "invalid partition specified: gpu"
    result = run_mpi(1, [*MPIML, "slurm", "submit", "single-node", "--partition", "gpu"], env=env, timeout=120)
    assert result.returncode == 2
    assert "sbatch refused the job: sbatch: error: invalid partition specified: gpu" in result.stderr


def test_env_outside_slurm_reports_each_rank():
    result = run_mpi(2, [*MPIML, "slurm", "env", "--json"], timeout=120)
    assert result.returncode == 0, result.describe()
    seen = json.loads(result.stdout)
    assert seen["size"] == 2 and [r["rank"] for r in seen["ranks"]] == [0, 1]
    assert all(r["job_id"] is None and r["restart_count"] == 0 for r in seen["ranks"])
