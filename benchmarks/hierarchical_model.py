"""``mpiml model`` against measured time for the node-aware collectives, at p = 2, 3, 4 with emulated nodes.

    python benchmarks/hierarchical_model.py [--ranks 2,3,4] [--sizes 64K,1M,16M] [--repeats 3] [--bind core] [--json]

Issue 18's goal: "``mpiml model`` predicts the hierarchical algorithms within 30% of measured
at p=2..4 (emulated nodes)". For each rank count the script starts one ``mpiexec -n p`` job
(bounded) that

runs ``--repeats`` passes, each of which

1. calibrates the model with the code ``mpiml tune`` runs (:func:`mpiml.perf.tune.measure_params`:
   ping-pong inside a node and between nodes of the emulated layout, numpy rates, Python costs;
   then the library's extras per size, :func:`mpiml.perf.tune.fit_native`, from timing ``native``
   alone) with nodes of 2 ranks from p = 3, so that both links exist;
2. for each emulated node size ``MPIML_RANKS_PER_NODE`` = 1, 2, 3 (those < p, and p itself: one
   node) times the node-aware algorithms (allreduce ``hierarchical``, ``hierarchical_slices``,
   ``shared_memory``; bcast, allgather, reduce_scatter ``hierarchical``) (``mpiml bench``'s
   harness, float32 sum, out of place);
3. prices each with :func:`mpiml.collectives.model_nodes.predict_nodes` on that layout (what
   ``mpiml model --nodes N --ranks-per-node K`` prints, and ``mpiml tune --explain`` on such a job)
   and this pass's calibration.

A pass takes seconds, its calibration one of them: on a machine whose speed moves within minutes
(this VM: the same 1 MiB allreduce 0.12 ms, then 0.54 ms) a calibration made once, before all the
passes, priced a faster or slower machine than some passes ran on.

It prints predicted/measured per case and a verdict: within 30% means 0.7 <= predicted/measured
<= 1.3, the median over passes of each pass's prediction over its median call (``pred/min``,
against the pass's fastest call, is printed beside it for a loaded machine: not the goal's measure).
On a 2-core machine p = 3 and 4 run more ranks than cores: the model does not price oversubscription
(a waiting MPICH rank polls and holds a core), so those rank counts are reported separately, plainly,
with one repeat, and not folded into the p = 2 verdict.
Emulated nodes on one host talk through shared memory between nodes too: inter ~ intra measured.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys

CASES = (("allreduce", "hierarchical"), ("allreduce", "hierarchical_slices"), ("allreduce", "shared_memory"),
         ("bcast", "hierarchical"), ("allgather", "hierarchical"), ("reduce_scatter", "hierarchical"))
CALIBRATION = ("allreduce", "reduce", "allgather", "bcast", "reduce_scatter")
TOLERANCE = 0.3


def node_counts(p: int) -> list:
    """The emulated node sizes measured at ``p`` ranks: 1, 2 and 3 where they fit (``p`` = one node)."""
    return [k for k in (1, 2, 3) if k <= p]


def worker(args) -> None:
    """One ``mpiexec -n p`` job: calibrate, time, predict; rank 0 prints one JSON line."""
    from mpi4py import MPI

    from mpiml.collectives import model_nodes, nodes, select
    from mpiml.collectives.tuning import Tuning
    from mpiml.perf.harness import Schedule, run_benchmark
    from mpiml.perf.sizes import parse_sizes
    from mpiml.perf.tune import fit_native, layout_sizes, measure_params

    comm = MPI.COMM_WORLD
    p = comm.Get_size()
    sizes = parse_sizes(args.sizes)
    counts = node_counts(p)
    schedule = Schedule(min_time=args.min_time, max_iters=200)
    shares, cases = {}, {}
    for _ in range(args.repeats):
        # Each pass calibrates anew and is priced by its own calibration: this VM's speed moves up to 4x
        # within minutes (a 1 MiB allreduce 0.12 ms, then 0.54 ms), so a calibration minutes old prices
        # another machine. Both links where the layout has them: nodes of 2 at p >= 3.
        nodes.set_ranks_per_node(2 if p >= 3 else 1)
        params, raw = measure_params(comm)
        nodes.set_ranks_per_node(None)
        native = []
        for collective in CALIBRATION:   # the library alone, flat, as ``mpiml tune`` times it
            native += run_benchmark(collective, sizes, ["native"], schedule=schedule, comm=comm)
        params = fit_native(params, native, layouts={p: layout_sizes(comm)})   # flat: one real node
        # in force while the pass is timed, as a tuning file is in a job: the leaders' allreduce is picked on it
        select.set_tuning(Tuning({}, params))
        for k in counts:
            nodes.set_ranks_per_node(k)
            shares[k] = nodes.layout(comm).shares_memory
            layout = model_nodes.node_sizes(p, k)
            for collective in dict.fromkeys(c for c, _ in CASES):
                names = [name for c, name in CASES if c == collective]
                for rec in run_benchmark(collective, sizes, names, comm=comm, schedule=schedule):
                    predicted = model_nodes.predict_nodes(rec["algorithm"], rec["bytes"], layout, params,
                                                          collective=collective, dtype="float32",
                                                          shares_memory=shares[k])
                    cases.setdefault((k, collective, rec["algorithm"], rec["bytes"]), []).append(
                        (predicted, rec["time_median_seconds"], rec["time_min_seconds"]))
    nodes.set_ranks_per_node(None)
    select.set_tuning(None)
    rows = []
    for k in counts:
        layout = model_nodes.node_sizes(p, k)
        for collective, name in CASES:
            for nbytes in sizes:
                passes = cases[(k, collective, name, nbytes)]
                rows.append({"ranks": p, "ranks_per_node": k, "layout": list(layout), "collective": collective,
                             "algorithm": name, "bytes": nbytes,
                             "measured_seconds": statistics.median(m for _, m, _ in passes),
                             "fastest_seconds": min(f for _, _, f in passes),
                             "predicted_seconds": statistics.median(q for q, _, _ in passes),
                             "predicted_over_measured": statistics.median(q / m for q, m, _ in passes),
                             "predicted_over_fastest": statistics.median(q / f for q, _, f in passes)})
    if comm.Get_rank() == 0:
        print("RESULT " + json.dumps({"ranks": p, "params": params.to_dict(), "pairs": raw["pairs"], "rows": rows}))


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def run_job(p: int, args) -> dict:
    """Start the worker at ``p`` ranks (bounded) and return its result; more ranks than cores (reported,
    not judged) get one repeat, to keep the run short."""
    from mpiml.runtime.launcher import MPICH_BIND_TO_CORE, find_mpiexec

    repeats = args.repeats if p <= cores() else 1
    bind = MPICH_BIND_TO_CORE if args.bind == "core" else ()
    command = [find_mpiexec(), *bind, "-n", str(p), sys.executable, os.path.abspath(__file__), "--worker",
               "--sizes", args.sizes, "--repeats", str(repeats), "--min-time", str(args.min_time)]
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1",
               NUMBA_NUM_THREADS="1")
    env.pop("MPIML_RANKS_PER_NODE", None)
    job = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                           start_new_session=True)
    try:
        stdout, stderr = job.communicate(timeout=args.timeout)
    except subprocess.TimeoutExpired:
        os.killpg(job.pid, signal.SIGKILL)   # the launcher and its ranks, all of them
        job.communicate()
        return {"ranks": p, "timed_out": args.timeout}
    lines = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
    if job.returncode != 0 or not lines:
        raise SystemExit(f"p={p}: exit status {job.returncode}\n{stdout[-3000:]}\n{stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def within(row) -> bool:
    return 1 - TOLERANCE <= row["predicted_over_measured"] <= 1 + TOLERANCE


def report(results) -> None:
    from mpiml.perf.sizes import format_bytes

    print("# node-aware collectives: mpiml model (model_nodes, calibrated in the same job by mpiml tune's code) "
          "against measured (median of repeats, slowest rank); float32 sum, out of place")
    for result in results:
        if "timed_out" in result:
            print(f"## p={result['ranks']}: no result, the job ran past --timeout {result['timed_out']:.0f} s")
            continue
        pairs = result["pairs"]
        links = ", ".join(f"{kind} {v['latency_seconds'] * 1e6:.2f} us + {1 / max(v['seconds_per_byte'], 1e-15) / 1e9:.2f} GB/s"
                          for kind, v in pairs.items())
        print(f"## p={result['ranks']}  links: {links or 'none'}")
        print(f"{'nodes':>9} {'collective':>14} {'algorithm':>19} {'size':>6} {'predicted':>10} {'measured':>10} "
              f"{'pred/meas':>9} {'pred/min':>8}  verdict")
        for row in result["rows"]:
            print(f"{'x'.join(map(str, row['layout'])):>9} {row['collective']:>14} {row['algorithm']:>19} "
                  f"{format_bytes(row['bytes']):>6} {row['predicted_seconds'] * 1e3:8.3f}ms "
                  f"{row['measured_seconds'] * 1e3:8.3f}ms {row['predicted_over_measured']:9.2f} "
                  f"{row['predicted_over_fastest']:8.2f}  "
                  f"{'within 30%' if within(row) else 'OFF'}")
    print(f"# verdict (goal: within 30% at p=2..4, emulated nodes; {cores()} cores here)")
    for result in results:
        if "timed_out" in result:
            print(f"  p={result['ranks']}: timed out -> MISSED")
            continue
        rows = result["rows"]
        good = sum(within(r) for r in rows)
        ratios = sorted(r["predicted_over_measured"] for r in rows)
        over = result["ranks"] > cores()
        print(f"  p={result['ranks']}{' (oversubscribed: not modelled; 1 repeat)' if over else ''}: {good}/{len(rows)} within "
              f"30%, predicted/measured median {statistics.median(ratios):.2f}, range {ratios[0]:.2f}-{ratios[-1]:.2f}"
              f" -> {'met' if good == len(rows) else 'MISSED'}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ranks", default="2,3,4")
    parser.add_argument("--sizes", default="64K,1M,16M")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--min-time", type=float, default=0.03)
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--bind", choices=("core", "none"), default="none",
                        help="core: MPICH's mpiexec binds each rank to a core (default none)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    results = [run_job(int(p), args) for p in args.ranks.split(",")]
    if args.json:
        print(json.dumps(results))
    else:
        report(results)


if __name__ == "__main__":
    main()
