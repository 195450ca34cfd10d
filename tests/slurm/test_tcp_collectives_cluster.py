"""The between-node path: every collective over TCP on the local cluster's two Slurm nodes (issue 18).

Both virtual nodes live on this host, so MPI is kept off shared memory for the job (MPICH's
netmod over TCP only) and mpiml's node grouping is told the Slurm layout; the job
(``tcp_collectives.py``) checks every registered algorithm's contract, the node-aware ones
included, at 2 nodes x 2 ranks.
"""

from __future__ import annotations

import sys
from pathlib import Path

from localslurm import job_log, last_json, render

import mpiml

JOB = Path(__file__).resolve().parent / "tcp_collectives.py"
TCP_ONLY = {"MPIR_CVAR_NOLOCAL": "1", "FI_PROVIDER": "tcp", "OMPI_MCA_btl": "self,tcp"}


def test_every_collective_meets_its_contract_over_tcp_on_two_nodes(slurm_cluster, tmp_path):
    script = render("multi-node", tmp_path / "tcp.sbatch", [sys.executable, str(JOB)],
                    output=str(tmp_path / "job-%j.out"), nodes=2, ntasks_per_node=2, time="00:05:00")
    env = {**TCP_ONLY, "MPIML_RANKS_PER_NODE": "2", "MPIML_LAUNCHER": "srun"}
    job_id = slurm_cluster.sbatch(script, workdir=tmp_path, env=env)
    job = slurm_cluster.wait(job_id, timeout=300)
    log = job_log(tmp_path, job_id).read_text()
    assert job.ok, (job.states, log[-4000:])
    seen = last_json(job_log(tmp_path, job_id))
    assert (seen["ranks"], seen["nodes"], seen["shared_memory_off"]) == (4, 2, True), seen
    registry = mpiml.collectives.registry  # filled by importing mpiml
    expected = {f"{c}:{a}" for c in registry.COLLECTIVES for a in ("auto", *registry.ALGORITHMS[c])}
    assert set(seen["checked"]) == expected
    assert {"allreduce:hierarchical", "allreduce:hierarchical_slices", "allreduce:shared_memory"} <= expected
