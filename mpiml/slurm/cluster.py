"""What a Slurm cluster offers a job: nodes, cores and memory, from ``sinfo``, ``scontrol`` or a job's environment.

Pure parsers of the commands' text (tested against golden samples) and of ``SLURM_*``
variables; :func:`query` is the one function that runs the commands. Every reader gives
a :class:`NodeOffer`: how many usable nodes, and the smallest node's CPUs and memory (a
plan sized for the smallest node fits on any of them).

CPUs are Slurm's count (``CPUTot``, hardware threads where ``ThreadsPerCore`` > 1): the
unit of ``--ntasks-per-node`` x ``--cpus-per-task``.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass

from mpiml.errors import ArgumentError

# Node states a job cannot be scheduled on (scontrol's State, sinfo's %t, compact or long).
UNUSABLE = ("DOWN", "DRAIN", "DRNG", "DRAINING", "DRAINED", "FAIL", "FAILING", "NOT_RESPONDING", "INVAL",
            "FUTURE", "MAINT", "POWERED_DOWN", "POWER_DOWN", "UNKNOWN", "UNK", "NPC", "BOOT_FAIL")
_KEY = re.compile(r"(?:^|(?<=\s))([A-Za-z][A-Za-z0-9_]*)=")
_CPUS_PER_NODE = re.compile(r"(\d+)(?:\(x(\d+)\))?")


@dataclass(frozen=True)
class NodeOffer:
    """Usable ``nodes`` of a partition (or a job), each with at least ``cpus`` CPUs and ``mem_bytes`` memory."""

    nodes: int
    cpus: int
    mem_bytes: int
    partition: str | None = None
    source: str = ""


def usable(state: str) -> bool:
    """Whether a node in Slurm state ``state`` (``IDLE``, ``MIXED+DRAIN``, ``down*``, ...) can run jobs."""
    words = re.split(r"[+*~#!%$@^-]", state.upper())
    return not any(word in UNUSABLE for word in words if word)


def parse_scontrol_nodes(text: str) -> list[dict]:
    """Every node of ``scontrol show node`` (one paragraph per node) as ``{key: value}`` text.

    Values may hold spaces (``OS=Linux 5.15 #1 SMP``): a value runs to the next ``Key=``
    that follows whitespace.
    """
    nodes = []
    for block in re.split(r"\n\s*\n", text.strip()):
        block = " ".join(line.strip() for line in block.splitlines())
        keys = list(_KEY.finditer(block))
        if not keys or keys[0].group(1) != "NodeName":
            continue
        node = {}
        for here, after in zip(keys, keys[1:] + [None]):
            node[here.group(1)] = block[here.end():after.start() if after else len(block)].strip()
        nodes.append(node)
    return nodes


def _int(node: dict, key: str, default: int = 0) -> int:
    try:
        return int(node.get(key, default))
    except ValueError:
        return default


def offer_from_scontrol(text: str, partition: str | None = None) -> NodeOffer:
    """The :class:`NodeOffer` of the usable nodes in ``partition`` (None: every node) of ``scontrol show node``."""
    nodes = parse_scontrol_nodes(text)
    if partition:
        nodes = [n for n in nodes if partition in n.get("Partitions", "").split(",")]
    nodes = [n for n in nodes if usable(n.get("State", "UNKNOWN"))]
    if not nodes:
        raise ArgumentError(f"Slurm reports no usable node{' in partition ' + partition if partition else ''}")
    cpus = min(_int(n, "CPUEfctv", _int(n, "CPUTot")) or _int(n, "CPUTot") for n in nodes)
    mem = min(_int(n, "RealMemory") for n in nodes)
    return NodeOffer(len(nodes), cpus, mem << 20, partition, "scontrol show node")


SINFO_FORMAT = "%P|%D|%c|%m|%t"  # partition (default marked *), node count, CPUs, memory (MB), state


def parse_sinfo(text: str) -> list[dict]:
    """Rows of ``sinfo --noheader --format='%P|%D|%c|%m|%t'``: partition, default, nodes, cpus, mem_mb, state.

    A ``64+`` (the group's nodes differ) counts as its smallest value, 64.
    """
    rows = []
    for line in text.splitlines():
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split("|")]
        if len(fields) != 5:
            raise ArgumentError(f"unexpected sinfo line {line!r} (expected {SINFO_FORMAT})")
        name, count, cpus, mem, state = fields
        try:
            rows.append({"partition": name.rstrip("*"), "default": name.endswith("*"), "nodes": int(count),
                         "cpus": int(cpus.rstrip("+")), "mem_mb": int(mem.rstrip("+")), "state": state})
        except ValueError:
            raise ArgumentError(f"unexpected sinfo line {line!r} (expected {SINFO_FORMAT})") from None
    return rows


def offer_from_sinfo(text: str, partition: str | None = None) -> NodeOffer:
    """The :class:`NodeOffer` of ``partition`` (None: the default one) from :func:`parse_sinfo`'s text."""
    rows = parse_sinfo(text)
    if partition is None:
        defaults = [r["partition"] for r in rows if r["default"]]
        partition = defaults[0] if defaults else (rows[0]["partition"] if rows else None)
    rows = [r for r in rows if r["partition"] == partition and usable(r["state"])]
    if not rows:
        raise ArgumentError(f"Slurm reports no usable node in partition {partition}")
    return NodeOffer(sum(r["nodes"] for r in rows), min(r["cpus"] for r in rows),
                     min(r["mem_mb"] for r in rows) << 20, partition, "sinfo")


def cpus_per_node(text: str) -> list[int]:
    """``SLURM_JOB_CPUS_PER_NODE`` (``"64(x2),32"``) -> ``[64, 64, 32]``."""
    out = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        found = _CPUS_PER_NODE.fullmatch(part)
        if not found:
            raise ArgumentError(f"SLURM_JOB_CPUS_PER_NODE={text!r} is not like 64(x2),32")
        out += [int(found.group(1))] * int(found.group(2) or 1)
    return out


def offer_from_allocation(environ=None) -> NodeOffer | None:
    """What the job this process runs in was given (None outside a Slurm job).

    Nodes from ``SLURM_JOB_NUM_NODES``; CPUs per node the smallest of
    ``SLURM_JOB_CPUS_PER_NODE`` (else ``SLURM_CPUS_ON_NODE``); memory from
    ``SLURM_MEM_PER_NODE`` or ``SLURM_MEM_PER_CPU`` x CPUs (MB), 0 when neither is set.
    """
    environ = os.environ if environ is None else environ
    if not environ.get("SLURM_JOB_ID"):
        return None
    try:
        nodes = int(environ.get("SLURM_JOB_NUM_NODES") or environ.get("SLURM_NNODES") or 1)
        listed = cpus_per_node(environ.get("SLURM_JOB_CPUS_PER_NODE", ""))
        cpus = min(listed) if listed else int(environ.get("SLURM_CPUS_ON_NODE") or 0)
        if environ.get("SLURM_MEM_PER_NODE"):
            mem = int(environ["SLURM_MEM_PER_NODE"]) << 20
        elif environ.get("SLURM_MEM_PER_CPU"):
            mem = (int(environ["SLURM_MEM_PER_CPU"]) * cpus) << 20
        else:
            mem = 0
    except ValueError as exc:
        raise ArgumentError(f"unreadable Slurm job environment: {exc}") from None
    return NodeOffer(nodes, cpus, mem, environ.get("SLURM_JOB_PARTITION"), "this Slurm job's allocation")


def query(partition: str | None = None, run=subprocess.run) -> NodeOffer:
    """Ask Slurm (``scontrol show node``, else ``sinfo``) what ``partition`` offers; ArgumentError if it cannot."""
    problems = []
    for command, reader in ((["scontrol", "show", "node"], offer_from_scontrol),
                            (["sinfo", "--noheader", f"--format={SINFO_FORMAT}"], offer_from_sinfo)):
        try:
            done = run(command, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as exc:
            problems.append(f"{command[0]}: {exc}")
            continue
        if done.returncode != 0:
            problems.append(f"{' '.join(command)}: {done.stderr.strip() or 'exit status ' + str(done.returncode)}")
            continue
        if reader is offer_from_scontrol and partition is None:
            default = _default_partition(run)
            return reader(done.stdout, default)
        return reader(done.stdout, partition)
    raise ArgumentError("cannot read the cluster from Slurm (" + "; ".join(problems) + "); give --nodes-max, "
                        "--cores-per-node and --mem-per-node")


def _default_partition(run) -> str | None:
    """The default partition (sinfo marks it with ``*``), or None."""
    try:
        done = run(["sinfo", "--noheader", "--format=%P"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    names = [line.strip() for line in done.stdout.splitlines() if line.strip().endswith("*")]
    return names[0].rstrip("*") if done.returncode == 0 and names else None
