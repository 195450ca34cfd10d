"""``mpiml plan``: how many nodes, ranks and threads to ask for, predicted before the job is queued.

The job is an ``mpiml sgd`` or ``mpiml mf`` command line, given after ``--`` (or after
the plan's own options); its data's sizes are read from the files' headers or a sample
(:mod:`mpiml.plan.jobs`), or given as numbers. The cluster is given (``--nodes-max``,
``--cores-per-node``, ``--mem-per-node``), read from Slurm (``--slurm``), taken from the
Slurm job this runs in, or else this machine. Every candidate layout is priced by
:func:`mpiml.plan.predict`; the table shows the best ones, marks the recommendation
(:func:`mpiml.plan.layouts.choose`) and says why. ``--sbatch TEMPLATE`` renders the job
script with the request filled in. No MPI is needed: it runs on a login node.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from dataclasses import asdict

from mpiml.cli.output import emit_json, say, table
from mpiml.cli.parser import Parser, UsageError, count, split_command
from mpiml.errors import ArgumentError, MpimlError
from mpiml.runtime.threads import usable_cores

EPILOG = """the job: an mpiml sgd or mf command line, after -- (or after the plan's options):
  mpiml plan --nodes-max 64 --cores-per-node 64 --mem-per-node 256G -- mpiml sgd --data train.svm --epochs 5
  mpiml plan --slurm --deadline 2:00:00 -- mpiml mf --algorithm als --ratings ratings.csv
  mpiml plan --rows 1e7 --features 1e6 --nnz 5e8 --nodes-max 16 --cores-per-node 32 sgd --strategy lbfgs
  mpiml plan --users 1e6 --items 1e5 --ratings 1e8 --nodes-max 8 mf --algorithm ials
  mpiml plan --nodes-max 4 --sbatch multi-node --out job.sbatch -- mpiml sgd --data train.svm

goals: fastest (default: of the layouts within 5% of the fastest, the fewest core-hours),
core-hours (the fewest), or --deadline HH:MM:SS (the fewest core-hours that finish in time).
The prediction: mpiml.plan's compute model (calibrated by `mpiml tune` into --tuning) and
the collectives' cost model; it excludes start-up and data loading, which --sbatch's
--time allows for (x --time-margin, plus --startup seconds).
"""

KINDS = ("sgd", "mf")
STARTUP_SECONDS = 120.0
MEM_MARGIN = 1.2  # --mem: predicted peak x this (allocator slack, MPI buffers)


def build_parser():
    from mpiml.plan.layouts import GOALS

    p = Parser(prog="mpiml plan", description="Predict a job's time, cost and memory on every layout the cluster "
               "allows; recommend one, and write its Slurm request.", epilog=EPILOG)
    p.add_argument("job", nargs=argparse.REMAINDER, metavar="-- mpiml sgd|mf ARGS",
                   help="the job's command line (mpiml sgd ... or mpiml mf ...)")
    c = p.add_argument_group("cluster (default: the Slurm job this runs in, else this machine)")
    c.add_argument("--nodes-max", type=count, metavar="N", help="nodes the job may have")
    c.add_argument("--cores-per-node", type=count, metavar="N", help="cores (Slurm CPUs) per node")
    c.add_argument("--mem-per-node", metavar="SIZE", help="memory per node, e.g. 256G")
    c.add_argument("--slurm", nargs="?", const="", metavar="PARTITION",
                   help="read nodes, cores and memory from Slurm (scontrol/sinfo): the default partition, or "
                        "PARTITION")
    c.add_argument("--tuning", metavar="FILE", help="tuning file of `mpiml tune` that calibrates the prediction "
                   "(default: $MPIML_TUNING, else the model's defaults)")
    f = p.add_argument_group("fix a dimension (default: all are weighed)")
    f.add_argument("--nodes", type=count, metavar="N", help="exactly N nodes")
    f.add_argument("--ranks-per-node", type=count, metavar="N", help="exactly N ranks per node")
    f.add_argument("--threads", type=count, metavar="N", help="exactly N threads per rank")
    g = p.add_argument_group("goal")
    g.add_argument("--goal", choices=[x for x in GOALS if x != "deadline"], default=None,
                   help="fastest (default) or fewest core-hours")
    g.add_argument("--deadline", metavar="HH:MM:SS", help="the fewest core-hours that finish within this")
    s = p.add_argument_group("data sizes (default: read from the data's headers or a sample)")
    for flag, text in (("--rows", "sgd: training rows"), ("--features", "sgd: features"),
                       ("--nnz", "sgd: stored nonzeros (sparse data)"), ("--users", "mf: users"),
                       ("--items", "mf: items"), ("--ratings", "mf: ratings (a count; the job's own --ratings is "
                                                                "its file)")):
        s.add_argument(flag, type=count, metavar="N", help=text)
    o = p.add_argument_group("output")
    o.add_argument("--top", type=count, default=10, metavar="N", help="rows of the table (default 10)")
    o.add_argument("--json", action="store_true", help="print one JSON object")
    o.add_argument("--sbatch", metavar="TEMPLATE", help="render this job script template (`mpiml slurm list`) "
                   "with the recommended request: stdout (the table goes to stderr), or --out")
    o.add_argument("--out", metavar="FILE", help="--sbatch: write the script here")
    o.add_argument("--venv", metavar="DIR", help="--sbatch: virtual environment the job activates")
    o.add_argument("--time-margin", type=float, default=1.5, metavar="F",
                   help="--sbatch: --time is the predicted total x F plus --startup (default 1.5)")
    o.add_argument("--startup", type=float, default=STARTUP_SECONDS, metavar="SECONDS",
                   help=f"--sbatch: seconds allowed for start-up and data loading (default {STARTUP_SECONDS:g})")
    return p


def split_job(words) -> tuple[str, list]:
    """``(kind, arguments)`` of the job's words: ``[mpiml] sgd|mf ARGS`` (also ``python -m mpiml ...``)."""
    from mpiml.cli.slurm import mpiml_arguments

    words = list(words)
    if words and words[0] == "--":
        words = words[1:]
    inner = mpiml_arguments(words)
    words = inner if inner is not None else words
    if not words or words[0] not in KINDS:
        got = f"got {' '.join(words[:2])!r}" if words else "none given"
        raise UsageError(f"mpiml plan: give the job as `-- mpiml sgd ...` or `-- mpiml mf ...` ({got})")
    return words[0], words[1:]


def parse_job(kind: str, argv: list):
    """The job's parsed and checked arguments (its own parser and checks: the same verdict as the job)."""
    import importlib

    module = importlib.import_module(f"mpiml.cli.{kind}")  # only the job's own (mf's imports are heavy)
    try:
        args = module.build_parser().parse_args(argv)
        module.check(args)
    except UsageError as exc:
        raise UsageError(f"the job's command: {exc}") from None
    except ArgumentError as exc:
        raise UsageError(f"the job's command: mpiml {kind}: {exc}") from None
    return args


def job_of(kind: str, args, numbers: dict):
    """The :class:`~mpiml.plan.spec.Job` and its :class:`~mpiml.plan.jobs.DataSize`."""
    from mpiml.plan import jobs

    if kind == "sgd":
        numbers = {k: numbers[k] for k in ("rows", "features", "nnz")}
        enough = numbers["rows"] and numbers["features"]
        if enough:
            size = jobs.NONE
        else:
            label = int(args.label_column) if args.label_column.strip().lstrip("-").isdigit() else args.label_column
            size = jobs.sgd_data_size(args.data, args.format, args.n_features, label, args.header)
        if enough and numbers["nnz"] is None:
            numbers["nnz"] = numbers["rows"] * numbers["features"]  # dense
        return jobs.sgd_job(args, jobs.with_numbers(size, **numbers)), jobs.with_numbers(size, **numbers)
    numbers = {k: numbers[k] for k in ("users", "items", "ratings")}
    size = jobs.NONE if all(numbers.values()) else jobs.ratings_size(args.ratings, args.format)
    size = jobs.with_numbers(size, **numbers)
    return jobs.mf_job(args, size), size


def cluster_of(args):
    """``(Cluster, where its figures came from)``: options, else Slurm (``--slurm``/the job), else this machine."""
    from mpiml.perf.sizes import parse_size  # light: mpiml.data's readers (scipy.special) are not needed here
    from mpiml.plan.spec import Cluster
    from mpiml.slurm import cluster as slurm

    offer, source = None, "this machine"
    if args.slurm is not None:
        offer = slurm.query(args.slurm or None)
    else:
        offer = slurm.offer_from_allocation()
    if offer is not None:
        source = offer.source + (f", partition {offer.partition}" if offer.partition else "")
    nodes = args.nodes_max or (offer.nodes if offer else 1)
    cores = args.cores_per_node or (offer.cpus if offer and offer.cpus else usable_cores())
    if args.mem_per_node:
        try:
            mem = parse_size(args.mem_per_node)
        except ArgumentError:
            raise UsageError(f"mpiml plan: --mem-per-node {args.mem_per_node!r} is not a size (e.g. 256G)") from None
    else:
        mem = offer.mem_bytes if offer and offer.mem_bytes else _local_memory()
    if args.nodes_max or args.cores_per_node or args.mem_per_node:
        source = "given" if not offer and (args.nodes_max and args.cores_per_node) else source + " and options"
    return Cluster(nodes_max=nodes, cores_per_node=cores, mem_per_node_bytes=mem, tuning=args.tuning), source




def _local_memory() -> int:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 0


def plan(job, cluster, calibration=None, goal="fastest", deadline=None, parallel=None, grid=None, fixed=None):
    """``(rows, index, why)``: every candidate priced, and the recommended one (pure but for the prediction)."""
    from mpiml.plan import predict
    from mpiml.plan.layouts import candidates, choose, grid_of, rows_of

    layouts = candidates(job, cluster, parallel, **(fixed or {}))
    if grid is not None:
        layouts = [layout for layout in layouts if grid_of(layout) == grid]
        if not layouts:
            raise UsageError(f"mpiml plan: no layout of the cluster has the job's --grid {grid[0]}x{grid[1]}")
    predictions = [predict(job, layout, cluster, calibration) for layout in layouts]
    rows = rows_of(layouts, predictions, cluster, deadline)
    index, why = choose(rows, goal, deadline)
    return rows, index, why


def shown(rows, index, goal, top: int) -> list[int]:
    """The rows of the table: the best ``top`` for the goal, the recommended one and the best of each parallel kind."""
    from mpiml.plan.layouts import key

    order = sorted(range(len(rows)), key=lambda i: (not rows[i].fits, key(goal)(rows[i])))
    keep = set(order[:top]) | {index}
    for kind in ("data", "model", "hybrid"):
        best = [i for i in order if rows[i].layout.parallel == kind]
        if best:
            keep.add(best[0])
    return [i for i in order if i in keep]


def _bytes(n: float) -> str:
    """``812.4 MiB``, ``4.5 GiB``: sizes of ranks and nodes (never below a rank's baseline of ~100 MiB)."""
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def row_cells(row, mark: str) -> list:
    from mpiml.plan.layouts import duration

    lay, pred = row.layout, row.prediction
    grid = f" {lay.grid[0]}x{lay.grid[1]}" if lay.grid else ""
    return [mark, lay.nodes, lay.ranks_per_node, lay.threads_per_rank, lay.parallel + grid,
            f"{pred.seconds_per_step:.3g}", duration(pred.seconds_total), f"{pred.core_hours:.3g}",
            _bytes(pred.memory_bytes_per_rank) + ("" if row.fits else " (too big)"), f"{pred.comm_share:.0%}"]


HEADERS = ("", "nodes", "ranks/node", "threads", "parallel", "s/{step}", "total", "core-h", "mem/rank", "comm")


def row_json(row) -> dict:
    lay, pred = row.layout, row.prediction
    return {"nodes": lay.nodes, "ranks_per_node": lay.ranks_per_node, "threads_per_rank": lay.threads_per_rank,
            "ranks": lay.ranks, "parallel": lay.parallel, "grid": list(_grid(lay)),
            "seconds_per_step": pred.seconds_per_step, "step": pred.step, "seconds_total": pred.seconds_total,
            "core_hours": pred.core_hours, "memory_bytes_per_rank": int(pred.memory_bytes_per_rank),
            "comm_share": pred.comm_share, "fits_memory": row.fits, "meets_deadline": row.meets,
            "notes": list(pred.notes)}


def _grid(layout):
    from mpiml.plan.layouts import grid_of

    return grid_of(layout)


def job_command(kind: str, job_argv: list, layout) -> list:
    """The command the job script runs: the job's own, with the planned grid for sgd unless it set one."""
    command = ["mpiml", kind, *job_argv]
    if kind != "sgd" or layout.parallel == "data" and "--parallel" not in _flags(job_argv):
        return command
    flags = _flags(job_argv)
    if "--parallel" not in flags:
        command += ["--parallel", layout.parallel]
    if "--grid" not in flags and layout.parallel != "data":
        rows, cols = _grid(layout)
        command += ["--grid", f"{rows}x{cols}"]
    return command


def _flags(argv) -> set:
    return {word.split("=", 1)[0] for word in argv if word.startswith("--")}


def request(row, cluster, margin: float, startup: float) -> dict:
    """The sbatch options of a planned row: nodes, tasks per node, CPUs per task, memory and time (with margins)."""
    from mpiml.plan.layouts import clock

    lay, pred = row.layout, row.prediction
    seconds = pred.seconds_total * margin + startup
    minutes = max(1, math.ceil(seconds / 60))
    mem_mb = math.ceil(lay.ranks_per_node * pred.memory_bytes_per_rank * MEM_MARGIN / 2**20)
    if cluster.mem_per_node_bytes:
        mem_mb = min(mem_mb, cluster.mem_per_node_bytes >> 20) if row.fits else mem_mb
    return {"nodes": str(lay.nodes), "ntasks-per-node": str(lay.ranks_per_node),
            "cpus-per-task": str(lay.threads_per_rank), "mem": f"{max(mem_mb, 1)}M",
            "time": clock(minutes * 60)}


def render(template: str, options: dict, command: list, venv=None) -> str:
    """The job script: ``template`` (a name or a file) rendered with ``options`` and ``command`` (pure but for the read)."""
    from mpiml.slurm import templates
    from mpiml.slurm.render import render_script

    path = templates.find(template)
    return render_script(path.read_text(), options, command,
                         os.path.abspath(os.path.expanduser(venv)) if venv else None)


def main(argv=None) -> int:
    argv, job_words = split_command(argv)
    args = build_parser().parse_args(argv)
    job_words = job_words or args.job
    started = time.perf_counter()
    try:
        return _run(args, job_words, started)
    except UsageError:
        raise
    except MpimlError as exc:
        raise UsageError(f"mpiml plan: {exc}") from None


def _run(args, job_words, started) -> int:
    from mpiml.parallel.grid import parse_grid
    from mpiml.plan import load_calibration
    from mpiml.plan.layouts import clock, describe, parse_clock

    kind, job_argv = split_job(job_words)
    if args.out and not args.sbatch:
        raise UsageError("mpiml plan: --out is for --sbatch's script")
    if args.goal and args.deadline:
        raise UsageError("mpiml plan: give --goal or --deadline, not both")
    for flag, value in (("--time-margin", args.time_margin), ("--startup", args.startup)):
        if not (value >= 0 and math.isfinite(value)) or (flag == "--time-margin" and value < 1):
            raise UsageError(f"mpiml plan: {flag} must be {'at least 1' if flag == '--time-margin' else '>= 0'}")
    deadline = parse_clock(args.deadline) if args.deadline else None
    goal = "deadline" if deadline else args.goal or "fastest"
    job_args = parse_job(kind, job_argv)
    numbers = {k: getattr(args, k) for k in ("rows", "features", "nnz", "users", "items", "ratings")}
    wrong = [k for k, v in numbers.items() if v is not None and (k in ("users", "items", "ratings")) != (kind == "mf")]
    if wrong:
        raise UsageError(f"mpiml plan: --{wrong[0]} is for {'mf' if kind == 'sgd' else 'sgd'} jobs")
    job, size = job_of(kind, job_args, numbers)
    cluster, where = cluster_of(args)
    calibration = load_calibration(args.tuning)
    parallel = grid = None
    if kind == "sgd":
        parallel = job_args.parallel if "--parallel" in _flags(job_argv) and job_args.parallel != "auto" else None
        if job_args.grid:
            grid = parse_grid(job_args.grid, _grid_size(job_args.grid))
    fixed = {"nodes": args.nodes, "ranks_per_node": args.ranks_per_node, "threads": args.threads}
    if args.sbatch and not args.nodes and _single_node(args.sbatch):
        fixed["nodes"] = 1  # the template starts its ranks on one node only
    if args.nodes and args.nodes > cluster.nodes_max:
        raise UsageError(f"mpiml plan: --nodes {args.nodes} is more than the cluster's {cluster.nodes_max}")
    rows, index, why = plan(job, cluster, calibration, goal, deadline, parallel, grid, fixed)
    chosen = rows[index]
    seconds = time.perf_counter() - started
    script = options = command = None
    if args.sbatch:
        options = request(chosen, cluster, args.time_margin, args.startup)
        command = job_command(kind, job_argv, chosen.layout)
        from mpiml.cli.slurm import _check_job_command

        script = render(args.sbatch, options, command, args.venv)
        _check_job_command(command, script)
    summary = _describe_job(job, size)
    if script is not None and args.out:
        from mpiml.runtime.files import atomic_write

        with atomic_write(args.out, "w") as handle:
            handle.write(script)
    if args.json:
        picked = shown(rows, index, goal, args.top)
        emit_json({"job": asdict(job), "sizes_from": size.how, "cluster": asdict(cluster), "cluster_from": where,
                   "goal": goal, "deadline_seconds": deadline, "recommended": row_json(chosen), "why": why,
                   "candidates": [row_json(rows[i]) for i in picked], "considered": len(rows),
                   "plan_seconds": seconds, "sbatch": None if script is None else
                   {"template": args.sbatch, "options": options, "command": command, "out": args.out,
                    "script": None if args.out else script}})
        return 0
    # The script alone on stdout (to redirect into a file): the table goes to stderr then.
    stream = sys.stderr if script is not None and not args.out else sys.stdout
    say(f"mpiml plan: {summary}", file=stream)
    say(f"cluster: up to {cluster.nodes_max} node(s) x {cluster.cores_per_node} cores, "
        f"{_bytes(cluster.mem_per_node_bytes)} each ({where}); goal: {goal}"
        + (f" {clock(deadline)}" if deadline else ""), file=stream)
    step = chosen.prediction.step
    say(table([row_cells(rows[i], "*" if i == index else "") for i in shown(rows, index, goal, args.top)],
              [h.format(step=step) for h in HEADERS]), file=stream)
    say(f"recommended: {describe(chosen.layout)} -- {why}", file=stream)
    for note in chosen.prediction.notes:
        say(f"  note: {note}", file=stream)
    say(f"({len(rows)} layouts weighed in {seconds:.2f} s)", file=stream)
    if script is not None:
        if args.out:
            say(f"wrote {args.out}: sbatch {' '.join(f'--{k}={v}' for k, v in options.items())}")
        else:
            say(script.rstrip("\n"))
    return 0


def _single_node(template: str) -> bool:
    """Whether the template runs on one node only (``single-node``: its ranks are started by one srun step there)."""
    from mpiml.slurm import templates

    return templates.find(template).stem == "single-node"


def _grid_size(text: str) -> int:
    try:
        rows, cols = (int(v) for v in str(text).lower().split("x"))
    except ValueError:
        raise UsageError(f"the job's --grid {text!r} is not RxC") from None
    return rows * cols


def _describe_job(job, size) -> str:
    if job.kind == "sgd":
        what = (f"sgd {job.algorithm} {job.model}, {job.rows:,} rows x {job.features:,} features"
                + ("" if job.dense else f", {job.nnz:,} nonzeros"))
        steps = f"{job.max_iter} iterations at most" if job.algorithm == "lbfgs" else f"{job.epochs} epochs"
    else:
        what = f"mf {job.algorithm} rank {job.factors}, {job.users:,} users x {job.items:,} items, {job.ratings:,} ratings"
        steps = f"{job.iterations} iterations"
    return f"{what}, {steps} (sizes: {size.how})"
