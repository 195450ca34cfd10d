"""``mpiml plan --slurm --sbatch``: the cluster read from the real (local) Slurm, the script it writes run there.

The local cluster (2 virtual nodes x 4 CPUs, see ``conftest.slurm_cluster``) is read by
``scontrol show node``; the rendered job must finish, on the layout planned, within the
``--time`` it asked for.
"""

from __future__ import annotations

import json
import sys

from localslurm import job_log, last_json

from mpiml.slurm.options import time_seconds

MPIML = [sys.executable, "-m", "mpiml"]


def test_planned_script_runs_within_its_time_limit(slurm_cluster, tmp_path):
    script = tmp_path / "planned.sbatch"
    done = slurm_cluster.run(*MPIML, "plan", "--slurm", "--json", "--sbatch", "multi-node", "--out", str(script),
                             "--", "mpiml", "sgd", "--data", "synthetic:classification,n=4000,d=10", "--epochs", "2",
                             "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["cluster_from"].startswith("scontrol show node")
    assert (doc["cluster"]["nodes_max"], doc["cluster"]["cores_per_node"]) == (slurm_cluster.nodes, 4)
    text = script.read_text().replace("--output=%x-%j.out", f"--output={tmp_path}/job-%j.out")
    script.write_text(text)
    job_id = slurm_cluster.sbatch(script, workdir=tmp_path)
    job = slurm_cluster.wait(job_id, timeout=300)
    assert job.ok, (job.states, job_log(tmp_path, job_id).read_text())
    record = job.records[0]
    assert time_seconds(record["TimeLimit"]) == time_seconds(doc["sbatch"]["options"]["time"])
    assert time_seconds(record["RunTime"]) <= time_seconds(record["TimeLimit"])
    planned = doc["recommended"]
    result = last_json(job_log(tmp_path, job_id))
    assert result["ranks"] == planned["nodes"] * planned["ranks_per_node"]
    assert int(record["NumNodes"]) == planned["nodes"]
