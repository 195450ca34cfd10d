"""``mpiml tune``: measure the machine, fit the cost model, time every algorithm, and
record the measured winners as a tuning file (collective over ``comm``)."""

from __future__ import annotations

import datetime
import json
import math

from mpi4py import MPI

from mpiml.collectives import model
from mpiml.collectives.registry import ALGORITHMS
from mpiml.collectives.select import NATIVE_MARGIN
from mpiml.collectives.tuning import FORMAT, VERSION, rules_document
from mpiml.perf import calibrate
from mpiml.perf.harness import Schedule, run_benchmark
from mpiml.perf.machine import conditions
from mpiml.runtime.files import atomic_write


def node_pairs(comm) -> dict[str, tuple[int, int]]:
    """Rank pairs to ping-pong: ``intra_node`` (rank 0 and another rank of its node) and ``inter_node``
    (rank 0 and the leader of the next node), where they exist. Nodes as the collectives group them
    (:func:`mpiml.collectives.nodes.layout`: ``Split_type``, or emulated by ``MPIML_RANKS_PER_NODE``)."""
    from mpiml.collectives import nodes

    members = nodes.layout(comm).grouping.members
    pairs = {}
    if len(members[0]) > 1:
        pairs["intra_node"] = (members[0][0], members[0][1])
    if len(members) > 1:
        pairs["inter_node"] = (members[0][0], members[1][0])
    return pairs


def measure_params(comm) -> tuple[model.ModelParams, dict]:
    """Fitted :class:`ModelParams` and the raw measurements they came from.

    ``alpha``/``beta``: the slowest link (between nodes when the job has several, else inside
    the node); ``intra_alpha``/``intra_beta``: inside a node, where two ranks share one.
    """
    raw = {"pairs": {}}
    costs = calibrate.python_costs(comm)
    rates = calibrate.stream_rates(comm)
    raw.update(costs, **rates)
    by_size = calibrate.rates_by_size(comm, streamed=rates)
    raw["rates_by_size"] = by_size
    values = dict(model.DEFAULT_PARAMS.to_dict(), copy=rates["copy"], step_overhead=costs["step_overhead"],
                  call_overhead=costs["call_overhead"], gamma=rates["gamma_by_dtype"]["float32"],
                  gamma_by_dtype=rates["gamma_by_dtype"], rates_by_size=by_size)
    links, per_size = {}, {}
    for kind, pair in node_pairs(comm).items():
        times = calibrate.ping_pong(comm, pair, sizes=LINK_BYTES)
        intercept, slope = calibrate.fit_line({n: t for n, t in times.items() if n in calibrate.PING_PONG_BYTES})
        raw["pairs"][kind] = {"ranks": list(pair), "one_way_seconds": {str(k): v for k, v in times.items()},
                              "latency_seconds": intercept, "seconds_per_byte": slope}
        # A Python ping-pong's latency includes one mpi4py call; the step overhead counts it already.
        links[kind] = (max(intercept - costs["mpi4py_call"], 1e-7), slope)
        per_size[kind] = link_by_size(times, intercept)
    # Flat algorithms see one link: the slowest there is (between nodes when the job spans nodes).
    kind = "inter_node" if "inter_node" in links else "intra_node"
    if kind in links:
        values["alpha"], values["beta"] = links[kind]
        values["rates_by_size"] = dict(by_size, beta=per_size[kind])
    if "intra_node" in links:
        values["intra_alpha"], values["intra_beta"] = links["intra_node"]
        values["rates_by_size"]["intra_beta"] = per_size["intra_node"]
    return model.ModelParams.from_dict(values), raw


# The ping-pong's sizes: the line's (latency, and a per-byte time for any size) and, from LINK_MIN_BYTES, the
# per-byte time at each size (a message that fits the caches moves faster than the line's slope, set by the
# largest sizes, says; a streamed one slower), up to the memory point of the copy and add rates.
LINK_BYTES = tuple(sorted({*calibrate.PING_PONG_BYTES, 1 << 20, calibrate.STREAM_BYTES}))
LINK_MIN_BYTES = 64 << 10


def link_by_size(one_way: dict, latency: float) -> list:
    """``[[bytes, seconds per byte], ...]``: each ping-pong size's one-way time beyond the latency, per byte
    (from :data:`LINK_MIN_BYTES`: below, the latency dominates and the quotient is noise)."""
    return [[int(n), max((t - latency) / n, 1e-13)] for n, t in sorted(one_way.items()) if n >= LINK_MIN_BYTES]


def price(rec, params, layouts=None) -> float:
    """The model's seconds for a benchmark record: on its rank count's node layout (``layouts[p]``: the
    nodes' rank counts, :mod:`mpiml.collectives.model_nodes`) where known, else the flat model."""
    sizes = (layouts or {}).get(rec["ranks"])
    if sizes is None:
        return model.predict(rec["algorithm"], rec["bytes"], rec["ranks"], params, collective=rec["collective"],
                             dtype=rec["dtype"])
    from mpiml.collectives import model_nodes

    return model_nodes.predict_nodes(rec["algorithm"], rec["bytes"], sizes, params, collective=rec["collective"],
                                     dtype=rec["dtype"])


def layout_sizes(comm) -> tuple:
    """The rank counts of ``comm``'s nodes, in node order (collective: builds its node layout)."""
    from mpiml.collectives import nodes

    return tuple(len(m) for m in nodes.layout(comm).grouping.members)


def sub_communicator(comm, size):
    """The first ``size`` ranks of ``comm`` (None on the others)."""
    color = 0 if comm.Get_rank() < size else MPI.UNDEFINED
    sub = comm.Split(color, comm.Get_rank())
    return None if sub == MPI.COMM_NULL else sub


def measured_rules(records) -> dict:
    """``{(collective, p): [(min_bytes, winner), ...]}`` from benchmark records.

    The winner of a size is the fastest median, except that ``native`` stays the winner
    unless beaten by the same margin ``auto`` asks of the model (``NATIVE_MARGIN``), so
    noise alone does not move a size away from the library. It holds down to the
    geometric midpoint with the size below; the first range starts at 0.
    """
    by_key: dict = {}
    native: dict = {}
    for rec in records:
        key = (rec["collective"], rec["ranks"])
        if rec["algorithm"] == "native":
            native[(key, rec["bytes"])] = rec["time_median_seconds"]
        best = by_key.setdefault(key, {}).get(rec["bytes"])
        if best is None or rec["time_median_seconds"] < best[1]:
            by_key[key][rec["bytes"]] = (rec["algorithm"], rec["time_median_seconds"])
    for key, by_size in by_key.items():
        for nbytes, (_, seconds) in by_size.items():
            reference = native.get((key, nbytes))
            if reference is not None and seconds > NATIVE_MARGIN * reference:
                by_size[nbytes] = ("native", reference)
    rules = {}
    for key, by_size in by_key.items():
        sizes = sorted(by_size)
        ranges = [(0, by_size[sizes[0]][0])]
        for lower, upper in zip(sizes, sizes[1:]):
            name = by_size[upper][0]
            if name != ranges[-1][1]:
                ranges.append((int(math.sqrt(lower * upper)) + 1, name))
        rules[key] = ranges
    return rules


def _median_residual_per_byte(records, params, keep, layouts=None):
    residuals = sorted(
        max(rec["time_median_seconds"] - price(rec, params, layouts), 0.0) / rec["bytes"]
        for rec in records if rec["algorithm"] == "native" and rec["ranks"] > 1 and keep(rec))
    return residuals[len(residuals) // 2] if residuals else None


MIN_BY_SIZE = 32 << 10   # below, a call's time is latency: per-byte excesses there are noise


def fit_native(params, records, min_bytes=1 << 20, min_by_size=MIN_BY_SIZE, layouts=None) -> model.ModelParams:
    """What the MPI library costs beyond the textbook formulas, from its large messages.

    ``native_extra[collective]``: the median excess per byte from ``min_bytes`` up to
    ``fault_bytes``; ``native_fault``: allreduce's further excess from ``fault_bytes`` up.
    ``native_extra_by_size[collective]``: the excess per byte at each measured size from
    ``min_by_size`` up (:func:`extra_by_size`), which the model uses where it exists.
    Collectives or ranges that were not measured keep their previous values. ``layouts``: the node
    layout per rank count (:func:`price`), so that a run inside one node is priced on the intra-node link.
    """
    values = params.to_dict()
    extra = dict(values["native_extra"])
    for collective in {rec["collective"] for rec in records}:
        bare = model.ModelParams.from_dict(dict(values, native_extra={}, native_fault=0.0))
        fitted = _median_residual_per_byte(
            records, bare,
            lambda rec: rec["collective"] == collective and min_bytes <= rec["bytes"] < params.fault_bytes, layouts)
        if fitted is not None:
            extra[collective] = fitted
    values["native_extra"] = extra
    no_faults = model.ModelParams.from_dict(dict(values, native_fault=0.0))
    fault = _median_residual_per_byte(
        records, no_faults, lambda rec: rec["collective"] == "allreduce" and rec["bytes"] >= params.fault_bytes,
        layouts)
    if fault is not None:
        values["native_fault"] = fault
    values["native_extra_by_size"] = extra_by_size(model.ModelParams.from_dict(values), records, min_by_size, layouts)
    return model.ModelParams.from_dict(values)


def extra_by_size(params, records, min_bytes=MIN_BY_SIZE, layouts=None) -> dict:
    """``native_extra_by_size``: per collective and measured size from ``min_bytes`` up, the median over
    rank counts of the library's excess per byte beyond the textbook formula and the faults (negative
    where the library beats the formula: :func:`mpiml.collectives.model.with_native_extra` keeps the
    price positive); collectives not measured keep ``params``' points."""
    bare = model.ModelParams.from_dict(dict(params.to_dict(), native_extra={}, native_extra_by_size={}))
    by_size = dict(params.native_extra_by_size)
    residuals: dict = {}
    for rec in records:
        if rec["algorithm"] == "native" and rec["ranks"] > 1 and rec["bytes"] >= min_bytes:
            excess = rec["time_median_seconds"] - price(rec, bare, layouts)
            residuals.setdefault(rec["collective"], {}).setdefault(rec["bytes"], []).append(excess / rec["bytes"])
    for collective, sizes in residuals.items():
        by_size[collective] = [[nbytes, sorted(v)[len(v) // 2]] for nbytes, v in sorted(sizes.items())]
    return by_size


def explain_rows(records, params, layouts=None) -> list[dict]:
    """Prediction against measurement (on each rank count's node layout, :func:`price`), and efficiency
    against the lower bound, per record."""
    rows = []
    for rec in records:
        predicted = price(rec, params, layouts)
        bound = model.lower_bound(rec["collective"], rec["bytes"], rec["ranks"], params, dtype=rec["dtype"])
        measured = rec["time_median_seconds"]
        rows.append({**rec, "predicted_seconds": predicted, "measured_over_predicted": measured / predicted,
                     "efficiency": bound / measured if measured > 0 else None})
    return rows


def combine_repeats(records) -> list[dict]:
    """One record per (collective, p, size, algorithm) from repeated passes: the median
    of the medians (a burst of load in one pass does not decide a winner), the extreme
    minimum and maximum, the total iterations."""
    groups: dict = {}
    for rec in records:
        groups.setdefault((rec["collective"], rec["ranks"], rec["bytes"], rec["algorithm"]), []).append(rec)
    combined = []
    for group in groups.values():
        medians = sorted(rec["time_median_seconds"] for rec in group)
        combined.append({**group[0], "time_median_seconds": medians[len(medians) // 2], "repeats": len(group),
                         "time_min_seconds": min(rec["time_min_seconds"] for rec in group),
                         "time_max_seconds": max(rec["time_max_seconds"] for rec in group),
                         "iterations": sum(rec["iterations"] for rec in group)})
    return combined


def tune(comm, sizes, collectives, rank_counts, schedule: Schedule, dtype="float32", repeats=3,
         on_size=None) -> dict:
    """Run the whole calibration; returns the tuning document (the same on every rank).

    ``on_size(records)`` is called after each measured size (progress), as by
    :func:`mpiml.perf.harness.run_benchmark`.
    """
    facts = conditions(comm)
    params, raw = measure_params(comm)
    records, layouts = [], {}
    for size in rank_counts:
        sub = sub_communicator(comm, size)
        if sub is not None:
            layouts[size] = layout_sizes(sub)
            for _ in range(repeats):
                for collective in collectives:
                    records += run_benchmark(collective, sizes, list(ALGORITHMS[collective]), dtype=dtype,
                                             schedule=schedule, comm=sub, on_size=on_size)
            sub.Free()
        comm.Barrier()
    records = combine_repeats(comm.bcast(records, root=0))  # rank 0 took part in every subset
    layouts = comm.bcast(layouts, root=0)
    params = fit_native(params, records, layouts=layouts)
    hosts = len(set(comm.allgather(MPI.Get_processor_name())))
    return {
        "format": FORMAT, "version": VERSION,
        "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "mpi_library": MPI.Get_library_version().strip().splitlines()[0],
        "ranks": comm.Get_size(), "hosts": hosts, "dtype": str(dtype),
        "params": params.to_dict(),
        "rules": rules_document(measured_rules(records)),
        "calibration": raw,
        "conditions": facts,
        "nodes": {str(p): list(sizes) for p, sizes in sorted(layouts.items())},   # ranks per node, per rank count
        "measurements": explain_rows(records, params, layouts),
    }


def write_tuning(path, document) -> None:
    with atomic_write(path, "w") as handle:
        json.dump(document, handle, indent=1, sort_keys=True)
        handle.write("\n")
