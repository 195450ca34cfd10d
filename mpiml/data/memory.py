"""How much memory a rank may fill with data and model: checked before anything is allocated.

A rank has ``MPIML_MEMORY_LIMIT`` bytes (``512M``, ``4G``, ... or plain bytes) if that is
set, else the node's available memory (``MemAvailable``) shared equally by the ranks on the
node. The verdict is agreed: every rank uses the smallest rank's figure.
"""

from __future__ import annotations

import os
import re

from mpiml.errors import ArgumentError

# A linear model holds at least four float64 vectors per feature (weights, gradient and an
# optimizer's two moments; L-BFGS holds more): the floor a feature count is checked against.
BYTES_PER_FEATURE = 32
_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def parse_size(text: str) -> int:
    """Bytes of ``512M``, ``4G``, ``1.5T`` or ``1000000`` (binary units, an optional ``B`` or ``iB``)."""
    found = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGT]?)(?:i?B)?\s*", text, re.IGNORECASE)
    if not found:
        raise ArgumentError(f"MPIML_MEMORY_LIMIT={text!r} is not a size (e.g. 4G, 512M or bytes)")
    return int(float(found.group(1)) * _UNITS[found.group(2).upper()])


def show(n: float) -> str:
    """``n`` bytes for people: ``8.0 TiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"


def node_available() -> int:
    """``MemAvailable`` of this node in bytes (physical memory if /proc/meminfo is missing)."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 2**62


def rank_budget(comm) -> tuple[int, str]:
    """``(bytes, how)``: what the smallest rank may use, and where the figure came from (collective)."""
    from mpi4py import MPI

    from mpiml.runtime.comm import private_comm

    limit = os.environ.get("MPIML_MEMORY_LIMIT")
    if limit:
        return parse_size(limit), "MPIML_MEMORY_LIMIT"
    everyone = private_comm(comm).allgather((MPI.Get_processor_name(), node_available()))
    hosts = [host for host, _ in everyone]
    share = min(available // hosts.count(host) for host, available in everyone)
    return share, "available memory of the node / ranks on it"


def features_problem(width: int, budget: tuple[int, str]) -> str | None:
    """Why a model of ``width`` features does not fit ``budget`` (:func:`rank_budget`), or None."""
    need = width * BYTES_PER_FEATURE
    have, how = budget
    if need <= have:
        return None
    return (f"{width} features would need at least {show(need)} per rank for the model "
            f"({BYTES_PER_FEATURE} bytes a feature), more than the {show(have)} a rank has ({how}); "
            f"check the feature indices, or pass --n-features")
