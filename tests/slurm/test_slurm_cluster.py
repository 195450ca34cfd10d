"""Reading what a Slurm cluster offers: golden samples of scontrol/sinfo output and job environments."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from mpiml.errors import ArgumentError
from mpiml.slurm import cluster

GOLDEN = Path(__file__).parent / "golden"


def test_scontrol_nodes_are_parsed_with_values_holding_spaces():
    nodes = cluster.parse_scontrol_nodes((GOLDEN / "scontrol-show-node.txt").read_text())
    assert [n["NodeName"] for n in nodes] == ["c001", "c002", "c003", "g001"]
    assert nodes[0]["OS"] == "Linux 5.14.0-362.8.1.el9_3.x86_64 #1 SMP PREEMPT_DYNAMIC Tue Oct 3 11:12:36 EDT 2023"
    assert nodes[0]["CfgTRES"] == "cpu=64,mem=250G,billing=64"
    assert nodes[2]["State"] == "DOWN+DRAIN" and nodes[2]["Reason"] == "bad dimm [root@2024-01-01T00:00:00]"


def test_scontrol_offer_is_the_smallest_usable_node_of_the_partition():
    text = (GOLDEN / "scontrol-show-node.txt").read_text()
    offer = cluster.offer_from_scontrol(text, "compute")  # c003 is down: c001 (64 CPUs) and c002 (48)
    assert (offer.nodes, offer.cpus, offer.mem_bytes) == (2, 48, 192000 << 20)
    gpu = cluster.offer_from_scontrol(text, "gpu")
    assert (gpu.nodes, gpu.cpus, gpu.mem_bytes) == (1, 32, 512000 << 20)
    assert cluster.offer_from_scontrol(text).nodes == 3
    with pytest.raises(ArgumentError, match="no usable node in partition nope"):
        cluster.offer_from_scontrol(text, "nope")


def test_sinfo_rows_and_offer():
    text = (GOLDEN / "sinfo.txt").read_text()
    rows = cluster.parse_sinfo(text)
    assert rows[0] == {"partition": "compute", "default": True, "nodes": 60, "cpus": 64, "mem_mb": 256000,
                       "state": "idle"}
    offer = cluster.offer_from_sinfo(text)  # the default partition: idle + mix + alloc, not down or drained
    assert (offer.partition, offer.nodes, offer.cpus, offer.mem_bytes) == ("compute", 60 + 2 + 1, 64,
                                                                           250000 << 20)
    assert cluster.offer_from_sinfo(text, "debug").nodes == 4
    with pytest.raises(ArgumentError, match="unexpected sinfo line"):
        cluster.parse_sinfo("compute* 4 64 256000 idle")


@pytest.mark.parametrize("state,ok", [("IDLE", True), ("MIXED", True), ("ALLOCATED", True), ("idle~", True),
                                      ("DOWN*", False), ("IDLE+DRAIN", False), ("drng", False), ("MIXED+DRAIN", False),
                                      ("alloc", True), ("down", False), ("maint", False)])
def test_usable_states(state, ok):
    assert cluster.usable(state) is ok


def test_allocation_environment():
    assert cluster.offer_from_allocation({}) is None
    env = {"SLURM_JOB_ID": "7", "SLURM_JOB_NUM_NODES": "3", "SLURM_JOB_CPUS_PER_NODE": "16(x2),8",
           "SLURM_MEM_PER_NODE": "4000", "SLURM_JOB_PARTITION": "debug"}
    assert cluster.offer_from_allocation(env) == cluster.NodeOffer(3, 8, 4000 << 20, "debug",
                                                                    "this Slurm job's allocation")
    offer = cluster.offer_from_allocation({"SLURM_JOB_ID": "7", "SLURM_CPUS_ON_NODE": "4", "SLURM_MEM_PER_CPU": "1000"})
    assert (offer.nodes, offer.cpus, offer.mem_bytes) == (1, 4, 4000 << 20)
    assert cluster.cpus_per_node("64(x2),32") == [64, 64, 32]
    with pytest.raises(ArgumentError):
        cluster.cpus_per_node("64x2")


def test_query_runs_scontrol_and_falls_back_to_sinfo():
    scontrol = (GOLDEN / "scontrol-show-node.txt").read_text()
    sinfo = (GOLDEN / "sinfo.txt").read_text()

    def fake(outputs):
        def run(command, **_):
            out = outputs.get(command[0] if command[-1] != "--format=%P" else "partitions")
            if out is None:
                raise FileNotFoundError(command[0])
            return subprocess.CompletedProcess(command, 0, out, "")
        return run

    assert cluster.query(run=fake({"scontrol": scontrol, "partitions": "compute*\ngpu\n"})).nodes == 2
    assert cluster.query("gpu", run=fake({"scontrol": scontrol})).cpus == 32
    assert cluster.query(run=fake({"sinfo": sinfo})).nodes == 63
    with pytest.raises(ArgumentError, match="cannot read the cluster from Slurm"):
        cluster.query(run=fake({}))
