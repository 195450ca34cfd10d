"""Output conventions: humans read tables from rank 0; machines read JSON from rank 0."""

from __future__ import annotations

import json
import sys

from mpiml.runtime.progress import job_rank


def is_root(comm=None) -> bool:
    """Rank 0 of ``comm``, else of the job (known without starting MPI: ``mpiml slurm`` needs none)."""
    return comm.Get_rank() == 0 if comm is not None else job_rank() == 0


def say(*parts, comm=None, file=None) -> None:
    """``print`` on rank 0 only, flushed (so output interleaves sanely under mpiexec)."""
    if is_root(comm):
        print(*parts, file=file or sys.stdout, flush=True)


def emit_json(obj, comm=None) -> None:
    """Print one JSON object on rank 0."""
    if is_root(comm):
        print(json.dumps(obj, sort_keys=True), flush=True)


def table(rows, headers) -> str:
    """A plain left-aligned text table."""
    cells = [[str(h) for h in headers]] + [[str(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
