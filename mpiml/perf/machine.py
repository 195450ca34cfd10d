"""How busy the machine is while measuring: oversubscription and load (for the report)."""

from __future__ import annotations

import os

from mpi4py import MPI


def conditions(comm) -> dict:
    """Ranks per host against the cores there, and the host load average (collective)."""
    host = MPI.Get_processor_name()
    cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = None
    per_rank = comm.allgather((host, cores, load))
    hosts = {}
    for name, host_cores, host_load in per_rank:
        entry = hosts.setdefault(name, {"ranks": 0, "cores": host_cores, "load_average": host_load})
        entry["ranks"] += 1
    oversubscribed = any(h["ranks"] > h["cores"] for h in hosts.values())
    busy = any(h["load_average"] is not None and h["load_average"] > h["cores"] for h in hosts.values())
    return {"hosts": hosts, "oversubscribed": oversubscribed, "busy": busy}


def warning(facts: dict) -> str | None:
    """A one-line caution for the table header, or None."""
    notes = []
    if facts["oversubscribed"]:
        notes.append("more ranks than cores (oversubscribed): timings show scheduling, not the algorithms")
    if facts["busy"]:
        loads = ", ".join(f"{h['load_average']:.1f} on {h['cores']} cores" for h in facts["hosts"].values()
                          if h["load_average"] is not None)
        notes.append(f"load average {loads} before the run: other work shares the cores")
    return "# CAUTION: " + "; ".join(notes) if notes else None
