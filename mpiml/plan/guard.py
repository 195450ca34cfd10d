"""Before work starts: warn (once, on rank 0) when a run holds more than its nodes give it.

Two checks, run by every ``mpiml`` command that computes (``sgd``, ``mf``, ``tune``,
``bench``) right after its arguments are checked:

- **cores**: the ranks on a node (``comm.Split_type(COMM_TYPE_SHARED)``) times their
  threads (``OMP_NUM_THREADS`` if the user set it, else 1: mpiml caps BLAS threads at the
  node's share) exceed the cores the node gave the job: ``SLURM_CPUS_ON_NODE`` inside a
  Slurm job, else the union of the ranks' CPU affinity (``os.sched_getaffinity``);
- **memory**: the job's predicted peak per rank (:func:`mpiml.plan.predict`) times the
  ranks on the node exceeds what the node has (Slurm's ``--mem`` if set, else the node's
  available memory).

Either prints one ``mpiml: warning:`` line on stderr with the numbers and what ``mpiml
plan`` suggests instead (where oversubscribed ranks are not bound to cores, how to bind
them), and the run goes on. ``MPIML_GUARD=off`` silences it (the test
suite runs more ranks than cores on purpose).
"""

from __future__ import annotations

import os
import sys

VARIABLE = "MPIML_GUARD"
_checked = False  # once per process, on every rank alike (the check is collective)


def node_facts(environ) -> dict:
    """What this process knows of its node without talking to the others (pure but for the affinity)."""
    from mpiml.data.memory import node_available

    from mpiml.runtime.threads import own_cpus

    cpus = sorted(own_cpus())
    threads = environ.get("OMP_NUM_THREADS", "")
    slurm_mem = 0
    if environ.get("SLURM_MEM_PER_NODE", "").isdigit():
        slurm_mem = int(environ["SLURM_MEM_PER_NODE"]) << 20
    elif environ.get("SLURM_MEM_PER_CPU", "").isdigit() and environ.get("SLURM_CPUS_ON_NODE", "").isdigit():
        slurm_mem = (int(environ["SLURM_MEM_PER_CPU"]) * int(environ["SLURM_CPUS_ON_NODE"])) << 20
    return {"cpus": cpus, "threads": int(threads) if threads.isdigit() and int(threads) > 0 else 1,
            "slurm_cpus": int(environ["SLURM_CPUS_ON_NODE"]) if environ.get("SLURM_CPUS_ON_NODE", "").isdigit()
            else None, "memory": slurm_mem or node_available(),
            "memory_from": "Slurm's --mem" if slurm_mem else "available memory"}


def summarize(nodes: list[dict]) -> dict:
    """The busiest node of per-node facts ``{host, ranks, cpus (union), bound, threads, slurm_cpus, memory,
    memory_from}``."""
    def load(node):
        return node["ranks"] * node["threads"] / max(cores_of(node), 1)

    worst = max(nodes, key=load)
    return {**worst, "cores": cores_of(worst), "nodes": len(nodes)}


def cores_of(node: dict) -> int:
    """Cores the node gave the job: Slurm's count where set, else the ranks' affinity (the smaller)."""
    cores = len(node["cpus"])
    return min(cores, node["slurm_cpus"]) if node.get("slurm_cpus") else cores


# Where ranks outnumber the cores and nothing binds them, the scheduler moves them at will, and how it happens to
# place them holds for a run: 4 unbound ranks of one mf job on 2 cores took 13-16 ms an iteration in some
# launches and 23-29 in others; bound to cores (2 a core), 14-17 in every launch.
BIND_HINT = ("bind the ranks to cores (MPICH: mpiexec -bind-to core; Open MPI: --bind-to core; Slurm: "
             "srun --cpu-bind=cores), or unbound oversubscribed runs take 1-2x as long from launch to launch")


def bound(masks: list) -> bool:
    """Whether the ranks' CPU affinity ``masks`` (one per rank of a node) bind them: each narrower than all of
    them together (a node of one CPU counts as bound: there is nowhere to move)."""
    union = set().union(*map(set, masks)) if masks else set()
    return len(union) <= 1 or all(len(set(mask)) < len(union) for mask in masks)


def core_warning(node: dict) -> str | None:
    """The warning for an oversubscribed node, or None (pure); with :data:`BIND_HINT` where ``node["bound"]`` is
    False."""
    demand = node["ranks"] * node["threads"]
    if demand <= node["cores"]:
        return None
    threads = f" x {node['threads']} threads" if node["threads"] > 1 else ""
    fit = max(node["cores"] // node["threads"], 1)
    hint = f"; else {BIND_HINT}" if node.get("bound") is False else ""
    return (f"{node['ranks']} ranks{threads} on {node['host']} share {node['cores']} cores: oversubscribed ranks "
            f"wait for each other, and most of the run can go to communication; run at most {fit} rank(s) per "
            f"node{' with ' + str(node['threads']) + ' threads' if node['threads'] > 1 else ''}{hint}")


def memory_warning(node: dict, per_rank: float) -> str | None:
    """The warning when ``ranks x per_rank`` exceeds the node's memory, or None (pure)."""
    from mpiml.data.memory import show

    need = node["ranks"] * per_rank
    if not node["memory"] or need <= node["memory"]:
        return None
    return (f"{node['ranks']} ranks on {node['host']} are predicted to need {show(need)} ({show(per_rank)} each), "
            f"more than the node's {show(node['memory'])} ({node['memory_from']}): spread the ranks over more nodes")


def check_resources(comm=None, kind: str | None = None, args=None, environ=None, stream=None) -> str | None:
    """Warn once on rank 0 when the run's ranks exceed its cores or its predicted memory the node's (collective).

    Parameters
    ----------
    comm : mpi4py.MPI.Intracomm, optional
        The job's ranks (default COMM_WORLD).
    kind, args : str and argparse.Namespace, optional
        ``"sgd"`` or ``"mf"`` and the command's checked arguments: the job whose memory is
        predicted and planned (None: cores only).
    environ : mapping, optional
        Default ``os.environ``.
    stream : file, optional
        Where the warning goes (default stderr).

    Returns
    -------
    str or None
        The warning printed (rank 0), else None.
    """
    global _checked
    environ = os.environ if environ is None else environ
    if _checked or environ.get(VARIABLE, "").lower() in ("off", "0", "no", "false"):
        return None
    _checked = True
    from mpi4py import MPI

    from mpiml.runtime.comm import private_comm, resolve_comm

    comm = private_comm(resolve_comm(comm))
    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    try:
        mine = node_facts(environ)
        cpus = node.allgather(mine["cpus"])
        ranks = node.Get_size()
    finally:
        node.Free()
    mine.update(host=MPI.Get_processor_name(), ranks=ranks, cpus=sorted(set().union(*cpus)), bound=bound(cpus))
    everyone = comm.gather(mine, root=0)
    if comm.Get_rank() != 0:
        return None
    nodes = list({n["host"]: n for n in everyone}.values())
    worst = summarize(nodes)
    problems = [core_warning(worst)]
    if kind is not None:
        problems.append(_memory_and_suggestion(kind, args, worst, bool(problems[0])))
    text = "; ".join(p for p in problems if p)
    if not text:
        return None
    text = f"mpiml: warning: {text}"
    print(text, file=stream or sys.stderr, flush=True)
    return text


def _memory_and_suggestion(kind, args, node, oversubscribed: bool) -> str | None:
    """The memory warning and ``mpiml plan``'s choice for this job on these nodes (None when all is well)."""
    try:
        from mpiml.plan import Cluster, Layout, load_calibration, predict
        from mpiml.plan.jobs import job_from_args
        from mpiml.plan.layouts import candidates, choose, describe, duration, rows_of

        job = job_from_args(kind, args)
        cluster = Cluster(node["nodes"], node["cores"], node["memory"])
        calibration = load_calibration(None)
        parallel = getattr(args, "parallel", "data")
        now = Layout(node["nodes"], node["ranks"], node["threads"], "data" if parallel == "auto" else parallel,
                     _grid(args, node["nodes"] * node["ranks"], parallel))
        current = predict(job, now, cluster, calibration)
    except Exception:  # noqa: BLE001 - a job the planner cannot size is the loader's to report, not ours
        return None
    memory = memory_warning(node, current.memory_bytes_per_rank)
    if not (memory or oversubscribed):
        return None
    layouts = candidates(job, cluster, nodes=node["nodes"])
    rows = rows_of(layouts, [predict(job, layout, cluster, calibration) for layout in layouts], cluster)
    best = rows[choose(rows)[0]]
    suggestion = (f"on these nodes `mpiml plan` suggests {describe(best.layout)} ({duration(best.prediction.seconds_total)}"
                  f" predicted, against {duration(current.seconds_total)} as run)")
    return f"{memory}; {suggestion}" if memory else suggestion


def _grid(args, ranks: int, parallel: str):
    """The hybrid ``(R, C)`` of ``--grid`` (None for data/model layouts or when not given)."""
    text = getattr(args, "grid", None)
    if parallel != "hybrid" or not text:
        return None
    rows, cols = (int(v) for v in str(text).lower().split("x"))
    return (rows, cols) if rows * cols == ranks else None
