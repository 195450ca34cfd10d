"""The layouts ``mpiml plan`` weighs, the one it recommends for a goal, and why.

Pure: a function of the job, the cluster and the predictions. Candidates are ``nodes x
ranks per node x threads per rank`` (nodes and ranks per node in powers of two and the
maximum, threads 1 or the rest of the node's cores) and, for ``sgd``, every process
grid mpiml trains on (:func:`mpiml.parallel.grid.factorizations`: ``p x 1`` data,
``1 x p`` model, the rest hybrid; model blocks no more than the features). ``mf`` splits
its ratings one way only (data parallel).
"""

from __future__ import annotations

from dataclasses import dataclass

from mpiml.errors import ArgumentError
from mpiml.parallel.grid import factorizations

GOALS = ("fastest", "core-hours", "deadline")
TOLERANCE = 0.05  # "fastest": layouts this close to the fastest count as tied; the cheapest of them wins


def _steps(top: int) -> list[int]:
    """1, 2, 4, ... up to ``top``, and ``top`` itself."""
    out, value = [], 1
    while value < top:
        out.append(value)
        value *= 2
    return out + [top]


def kind_of(grid: tuple[int, int]) -> str:
    """``data`` (``p x 1``), ``model`` (``1 x p``, p > 1) or ``hybrid``."""
    rows, cols = grid
    return "data" if cols == 1 else "model" if rows == 1 else "hybrid"


def grids(job, ranks: int, parallel=None) -> list[tuple[str, tuple | None]]:
    """``(parallel, grid)`` pairs ``ranks`` can train ``job`` on; ``parallel`` (a kind or None) restricts them."""
    if job.kind != "sgd" or ranks == 1:
        found = [("data", None)]
    else:
        blocks = max(int(job.features), job.outputs, 1)  # a features split, or a classes split of softmax
        found = []
        for rows, cols in factorizations(ranks):
            if cols > blocks:
                continue
            kind = kind_of((rows, cols))
            found.append((kind, (rows, cols) if kind == "hybrid" else None))
    return [f for f in found if parallel in (None, f[0])]


def candidates(job, cluster, parallel: str | None = None, nodes=None, ranks_per_node=None, threads=None) -> list:
    """Every :class:`~mpiml.plan.spec.Layout` to weigh, bounded by ``cluster`` and what is fixed.

    ``nodes``, ``ranks_per_node``, ``threads`` (None: free) pin one dimension each; a
    layout never holds more cores on a node than it has.
    """
    from mpiml.plan.spec import Layout

    cores = int(cluster.cores_per_node)
    out = []
    for n in [nodes] if nodes else _steps(int(cluster.nodes_max)):
        for r in [ranks_per_node] if ranks_per_node else _steps(cores):
            if r > cores and not ranks_per_node:
                continue
            room = max(cores // r, 1)
            for t in [threads] if threads else sorted({1, room}):
                if r * t > cores and not (ranks_per_node or threads):
                    continue
                for kind, grid in grids(job, n * r, parallel):
                    out.append(Layout(n, r, t, kind, grid))
    if not out:
        raise ArgumentError(f"no {parallel or ''} layout fits: the job needs a grid that {cluster} cannot hold"
                            .replace("  ", " "))
    return out


@dataclass
class Row:
    """One candidate: its layout, prediction, whether it fits the node's memory and meets the deadline."""

    layout: object
    prediction: object
    fits: bool = True
    meets: bool = True


def rows_of(layouts, predictions, cluster, deadline: float | None = None) -> list[Row]:
    """Pair layouts with predictions and mark memory fit (``ranks per node x memory per rank``) and the deadline."""
    out = []
    for layout, prediction in zip(layouts, predictions):
        need = layout.ranks_per_node * prediction.memory_bytes_per_rank
        fits = not cluster.mem_per_node_bytes or need <= cluster.mem_per_node_bytes
        out.append(Row(layout, prediction, fits, deadline is None or prediction.seconds_total <= deadline))
    return out


def key(goal: str):
    """Sort key of a goal: fastest by total time (then core-hours), the others by core-hours (then time; a
    deadline's misses last); fewer nodes break ties (less traffic between them)."""
    if goal == "fastest":
        return lambda row: (row.prediction.seconds_total, row.prediction.core_hours, row.layout.nodes)
    if goal == "deadline":
        return lambda row: (not row.meets, row.prediction.core_hours, row.prediction.seconds_total, row.layout.nodes)
    return lambda row: (row.prediction.core_hours, row.prediction.seconds_total, row.layout.nodes)


def choose(rows: list[Row], goal: str = "fastest", deadline: float | None = None) -> tuple[int, str]:
    """``(index, why)``: the recommended row for ``goal`` and a one-line reason.

    ``fastest``: of the layouts within :data:`TOLERANCE` of the fastest total time, the one
    with the fewest core-hours; ``core-hours``: the fewest core-hours; ``deadline``: the
    fewest core-hours among the layouts that finish by ``deadline`` seconds (the fastest
    if none does). Layouts that do not fit in a node's memory are chosen only if none does.
    """
    if goal not in GOALS:
        raise ArgumentError(f"unknown goal {goal!r}; choose from {', '.join(GOALS)}")
    if not rows:
        raise ArgumentError("no candidate layouts")
    pool = [i for i, row in enumerate(rows) if row.fits]
    memo = ""
    if not pool:
        pool = list(range(len(rows)))
        memo = "; no layout fits in a node's memory: ask for nodes with more"
    fastest = min(pool, key=lambda i: key("fastest")(rows[i]))
    best_time = rows[fastest].prediction.seconds_total
    if goal == "fastest":
        tied = [i for i in pool if rows[i].prediction.seconds_total <= best_time * (1 + TOLERANCE)]
        pick = min(tied, key=lambda i: key("core-hours")(rows[i]))
        why = (f"fastest ({duration(best_time)})" if pick == fastest else
               f"within {TOLERANCE:.0%} of the fastest ({duration(best_time)}) for {_ratio(rows[pick], rows[fastest])} "
               f"of its core-hours")
    elif goal == "core-hours":
        pick = min(pool, key=lambda i: key("core-hours")(rows[i]))
        why = f"fewest core-hours ({rows[pick].prediction.core_hours:.3g}) of {len(pool)} layouts that fit"
    else:
        meeting = [i for i in pool if rows[i].prediction.seconds_total <= deadline]
        if meeting:
            pick = min(meeting, key=lambda i: key("core-hours")(rows[i]))
            why = (f"fewest core-hours ({rows[pick].prediction.core_hours:.3g}) of {len(meeting)} layouts that "
                   f"finish within the deadline {clock(deadline)}")
        else:
            pick = fastest
            why = f"no layout finishes within the deadline {clock(deadline)}; this is the fastest ({duration(best_time)})"
    return pick, why + _contrast(rows, pool, pick) + memo


def _ratio(a: Row, b: Row) -> str:
    return f"{a.prediction.core_hours / b.prediction.core_hours:.0%}" if b.prediction.core_hours else "-"


def _contrast(rows, pool, pick) -> str:
    """How the best layout of another kind compares (why model/hybrid parallelism, or why not)."""
    chosen = rows[pick]
    others = [rows[i] for i in pool if rows[i].layout.parallel != chosen.layout.parallel]
    if not others:
        return f"; communication {chosen.prediction.comm_share:.0%} of each {chosen.prediction.step}"
    other = min(others, key=key("fastest"))
    times = other.prediction.seconds_total / chosen.prediction.seconds_total if chosen.prediction.seconds_total \
        else float("inf")
    return (f"; the best {other.layout.parallel}-parallel layout would take {times:.2f}x the time; communication "
            f"{chosen.prediction.comm_share:.0%} of each {chosen.prediction.step}")


def parse_clock(text: str) -> float:
    """Seconds of ``HH:MM:SS``, ``MM:SS``, ``D-HH:MM:SS`` (Slurm's time forms, :func:`mpiml.slurm.options.time_seconds`)."""
    from mpiml.slurm.options import time_seconds

    try:
        return float(time_seconds(text))
    except ArgumentError as exc:
        raise ArgumentError(str(exc).replace("--time", "--deadline", 1)) from None


def clock(seconds: float) -> str:
    """``H:MM:SS`` (``D-HH:MM:SS`` from a day), rounded up to the second."""
    total = int(-(-seconds // 1))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{hours}:{minutes:02d}:{secs:02d}"
    return f"{days}-{hours:02d}:{minutes:02d}:{secs:02d}" if days else text


def duration(seconds: float) -> str:
    """``12.3 s`` under a minute, else :func:`clock`'s ``H:MM:SS``."""
    return f"{seconds:.3g} s" if seconds < 60 else clock(seconds)


def describe(layout) -> str:
    """``4 nodes x 8 ranks x 2 threads, hybrid 8x4``."""
    grid = f" {layout.grid[0]}x{layout.grid[1]}" if layout.grid else ""
    return (f"{layout.nodes} node{'s' if layout.nodes > 1 else ''} x {layout.ranks_per_node} rank"
            f"{'s' if layout.ranks_per_node > 1 else ''} x {layout.threads_per_rank} thread"
            f"{'s' if layout.threads_per_rank > 1 else ''}, {layout.parallel}{grid}")


def grid_of(layout) -> tuple[int, int]:
    """``(R, C)`` of the layout's process grid (``mpiml sgd --grid RxC``)."""
    if layout.grid:
        return tuple(layout.grid)
    return (1, layout.ranks) if layout.parallel == "model" else (layout.ranks, 1)
