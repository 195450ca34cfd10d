"""Every template in slurm/, submitted to a real (local) Slurm cluster at small sizes.

The cluster (slurm/testing/local-cluster.sh: slurmctld + 2 slurmd of 4 CPUs each) is
started once per session by the ``slurm_cluster`` fixture. Each test renders a template
with ``mpiml.slurm``, submits it with sbatch and asserts on the job's final state and on
what the job wrote. The jobs run this Python (``sys.executable``) and its mpiexec.
"""

from __future__ import annotations

import json
import shlex
import sys

import numpy as np
import pytest
from example_oracle import EXAMPLE_PATH, gradient_descent
from localslurm import job_log, last_json, render, skip_or_fail, why_not_here
from mpirun import REPO

MPIML = [sys.executable, "-m", "mpiml"]
EXAMPLE = [sys.executable, str(EXAMPLE_PATH)]


def test_cluster_tests_run_only_when_asked_and_install_nothing_unasked(monkeypatch):
    assert "only when asked" in why_not_here({})  # a plain `pytest`, even as root: skipped
    with pytest.raises(pytest.skip.Exception, match="MPIML_SLURM_TESTS=1"):
        skip_or_fail(why_not_here({}), {})
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    for asked in ({"MPIML_SLURM_TESTS": "1"}, {"CI": "true"}):
        reason = why_not_here(asked)
        assert reason and "needs root" in reason
        with pytest.raises(pytest.fail.Exception, match="asked for, but cannot run"):
            skip_or_fail(reason, asked)
    monkeypatch.setattr("os.geteuid", lambda: 0)
    monkeypatch.setattr("pathlib.Path.exists", lambda self: False)  # no Slurm on this machine
    assert "MPIML_SLURM_INSTALL=1" in why_not_here({"MPIML_SLURM_TESTS": "1"})
    assert "MPIML_SLURM_INSTALL" not in (why_not_here({"MPIML_SLURM_TESTS": "1", "MPIML_SLURM_INSTALL": "1"}) or "")
    assert "MPIML_SLURM_INSTALL" not in (why_not_here({"CI": "true"}) or "")


def submit_env_job(cluster, tmp_path, template, env=None, **options):
    script = render(template, tmp_path / f"{template}.sbatch", [*MPIML, "slurm", "env", "--json"],
                    output=str(tmp_path / "job-%j.out"), **options)
    job_id = cluster.sbatch(script, workdir=tmp_path, env=env)
    job = cluster.wait(job_id)
    assert job.ok, (job.states, job_log(tmp_path, job_id).read_text())
    return job_id, last_json(job_log(tmp_path, job_id))


def test_single_node_runs_every_rank_as_one_task(slurm_cluster, tmp_path):
    job_id, seen = submit_env_job(slurm_cluster, tmp_path, "single-node", ntasks_per_node=3)
    ranks = seen["ranks"]
    assert seen["size"] == 3
    assert [r["procid"] for r in ranks] == [r["rank"] for r in ranks] == [0, 1, 2]
    assert {r["nodeid"] for r in ranks} == {0}
    assert all(r["run_id"] == job_id and r["ntasks"] == 3 and r["omp_num_threads"] == "1" for r in ranks)


@pytest.mark.parametrize("launcher", ["srun", "mpiexec"])
def test_multi_node_spans_both_nodes(slurm_cluster, tmp_path, launcher):
    job_id, seen = submit_env_job(slurm_cluster, tmp_path, "multi-node", env={"MPIML_LAUNCHER": launcher},
                                  nodes=2, ntasks_per_node=2)
    ranks = seen["ranks"]
    assert seen["size"] == 4
    per_node = {}
    for r in ranks:
        per_node.setdefault(r["nodename"], []).append(r["rank"])
    assert sorted(per_node) == ["node1", "node2"] and all(len(v) == 2 for v in per_node.values()), per_node
    assert all(r["job_id"] == job_id for r in ranks)
    if launcher == "srun":  # srun makes every rank a task; mpiexec starts one helper task per node
        assert [r["procid"] for r in ranks] == [0, 1, 2, 3]
    log = job_log(tmp_path, job_id).read_text()
    assert f"via {launcher}" in log


def test_hybrid_gives_each_rank_its_threads(slurm_cluster, tmp_path):
    _, seen = submit_env_job(slurm_cluster, tmp_path, "hybrid", ntasks_per_node=2, cpus_per_task=2)
    assert seen["size"] == 2
    for r in seen["ranks"]:
        assert r["cpus_per_task"] == 2 and r["omp_num_threads"] == "2"
        assert r["blas_threads"] == 2, r  # numpy's BLAS really runs 2 threads per rank


def test_sweep_array_and_gathered_table(slurm_cluster, tmp_path):
    rates = [0.05, 0.1, 0.2]
    sweep = tmp_path / "sweep.txt"
    sweep.write_text("".join(f"--rate {rate}\n" for rate in rates))
    results = tmp_path / "results"
    script = render("sweep", tmp_path / "sweep.sbatch", [*EXAMPLE, "--steps", "30", "--json"],
                    array=f"0-{len(rates) - 1}", ntasks_per_node=2, output=str(tmp_path / "job-%A_%a.out"))
    env = {"MPIML_SWEEP_FILE": str(sweep), "MPIML_RESULTS_DIR": str(results)}
    array_id = slurm_cluster.sbatch(script, workdir=tmp_path, env=env)
    gather_cmd = shlex.join([*MPIML, "slurm", "gather", str(results), "--json"])
    gather_id = slurm_cluster.sbatch_wrap(gather_cmd, f"--dependency=afterok:{array_id}",
                                          f"--output={tmp_path}/gather.out", workdir=tmp_path)
    array = slurm_cluster.wait(array_id)
    assert len(array.records) == len(rates) and array.ok, array.states
    gathered = slurm_cluster.wait(gather_id)
    assert gathered.ok, (gathered.states, (tmp_path / "gather.out").read_text())
    rows = last_json(tmp_path / "gather.out")["rows"]
    assert [row["task"] for row in rows] == [0, 1, 2]
    for row, rate in zip(rows, rates):
        assert row["args"] == f"--rate {rate}" and row["rate"] == rate and row["ranks"] == 2
        x, objective = gradient_descent(rate, 30)
        np.testing.assert_allclose(row["x"], x, rtol=1e-10, atol=1e-12)
        assert row["objective"] == pytest.approx(objective, rel=1e-10)


def _chain(cluster, tmp_path, train_command):
    """Submit train (preemptible template) then evaluate through slurm/chain.sh; wait for both.

    No checkpoint folder is given: the jobs must agree on the templates' default one.
    """
    train = render("preemptible", tmp_path / "train.sbatch", train_command, ntasks_per_node=2,
                   output=str(tmp_path / "job-%j.out"))
    evaluate = render("evaluate", tmp_path / "evaluate.sbatch", [*EXAMPLE, "--evaluate", "--json"],
                      ntasks_per_node=2, output=str(tmp_path / "job-%j.out"))
    done = cluster.run("bash", str(REPO / "slurm" / "chain.sh"), str(train), str(evaluate),
                       env={"SBATCH_ARGS": "--comment=chained"}, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    train_id, evaluate_id = done.stdout.split()
    return cluster.wait(train_id), cluster.wait(evaluate_id)


def test_chain_evaluates_after_training_succeeded(slurm_cluster, tmp_path):
    trained, evaluated = _chain(slurm_cluster, tmp_path, [*EXAMPLE, "--steps", "20", "--resume",
                                                          "--result", str(tmp_path / "trained.json")])
    assert trained.ok and evaluated.ok, (trained.states, evaluated.states)
    assert evaluated.records[0]["StartTime"] >= trained.records[0]["EndTime"]
    assert trained.records[0]["Comment"] == evaluated.records[0]["Comment"] == "chained"  # SBATCH_ARGS
    assert f"after afterok:{trained.job_id}" in job_log(tmp_path, evaluated.job_id).read_text()
    assert (tmp_path / "checkpoints" / trained.job_id / "manifest.json").exists()
    result = last_json(job_log(tmp_path, evaluated.job_id))
    x, objective = gradient_descent(0.1, 20)
    assert result["steps"] == 20 and result["x"] == json.loads((tmp_path / "trained.json").read_text())["x"]
    np.testing.assert_allclose(result["x"], x, rtol=1e-10, atol=1e-12)
    assert result["objective"] == pytest.approx(objective, rel=1e-10)


def test_chain_cancels_evaluation_when_training_fails(slurm_cluster, tmp_path):
    trained, evaluated = _chain(slurm_cluster, tmp_path, [*EXAMPLE, "--steps", "-1"])
    assert trained.states == [("FAILED", "2:0")], trained.states
    assert evaluated.states[0][0] == "CANCELLED", evaluated.states
    assert not job_log(tmp_path, evaluated.job_id).exists()  # it never ran


CANARY = "canary-must-not-exist"
NASTY = ['"; touch ' + CANARY + '; echo "', "$(touch " + CANARY + ")", "`touch " + CANARY + "`",
         "it's; touch " + CANARY, "a  b\n; touch " + CANARY, "*", "~", "#not a comment"]


def test_submit_quotes_every_value(slurm_cluster, tmp_path):
    """`mpiml slurm submit` with shell syntax in values: Slurm and the program get them verbatim."""
    job_name = '"; touch ' + CANARY + '; echo "'
    printer = "import json, sys; print(json.dumps({'argv': sys.argv[1:]}))"
    done = slurm_cluster.run(*MPIML, "slurm", "submit", "single-node", "--ntasks-per-node", "1",
                             "--job-name", job_name, "--output", str(tmp_path / "job-%j.out"),
                             "--", sys.executable, "-c", printer, *NASTY, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.strip()
    assert job_id.isdigit(), done.stdout
    job = slurm_cluster.wait(job_id)
    assert job.ok, (job.states, job_log(tmp_path, job_id).read_text())
    assert job.records[0]["JobName"] == job_name
    assert last_json(job_log(tmp_path, job_id)) == {"argv": NASTY}
    assert not list(tmp_path.rglob(CANARY)) and not (REPO / CANARY).exists()
