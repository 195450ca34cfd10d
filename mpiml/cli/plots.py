"""The pictures of ``--plot FILE``: training runs, tuning, the cost model's view, benchmarks.

matplotlib is the optional ``plot`` extra: :func:`require` (called while the arguments
are checked, before any work) names the extra when it is missing. Every function here
writes one PNG atomically and runs on rank 0 only, from plain records (the JSON the
command prints), so what is drawn is what ``--json`` reports.
"""

from __future__ import annotations

from mpiml.perf.sizes import format_bytes

PARTS = (("compute_seconds", "compute", "#4c72b0"), ("comm_seconds", "communication", "#dd8452"),
         ("wait_seconds", "waiting", "#c44e52"))
LATENCY_BYTES = 64 * 1024  # the latency panel of bench: sizes up to this


def require():
    """``matplotlib.pyplot`` drawing to files, or :class:`~mpiml.errors.ArgumentError` naming the extra."""
    from mpiml.perf.report import require_matplotlib

    require_matplotlib()
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path) -> None:
    from mpiml.runtime.files import atomic_write

    fig.tight_layout()
    with atomic_write(path, "wb") as handle:
        fig.savefig(handle, format="png")
    import matplotlib.pyplot as plt

    plt.close(fig)


def _bytes_axis(ax) -> None:
    import matplotlib.ticker

    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: format_bytes(int(round(v)))))


def _per_rank_bars(ax, per_rank) -> None:
    """Stacked compute / communication / wait seconds of every rank."""
    ranks = [r["rank"] for r in per_rank]
    bottom = [0.0] * len(ranks)
    for key, label, color in PARTS:
        values = [float(r.get(key) or 0.0) for r in per_rank]
        ax.bar(ranks, values, bottom=bottom, label=label, color=color)
        bottom = [b + v for b, v in zip(bottom, values)]
    ax.set_xlabel("rank")
    ax.set_ylabel("seconds")
    ax.set_xticks(ranks)
    ax.set_title("time per rank")
    ax.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3, frameon=False)


def training(path, title: str, curves: list, per_rank: list, step: str, note: str = "") -> None:
    """Curves against ``step`` (epochs or iterations) and against seconds, and the per-rank time bars.

    ``curves``: ``(label, steps, seconds, values, side)`` with ``side`` ``"left"`` (a loss,
    log scale) or ``"right"`` (an accuracy or error, linear).
    """
    plt = require()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6), dpi=110, gridspec_kw={"width_ratios": [3, 3, 2]})
    for ax, key, xlabel in ((axes[0], 1, step), (axes[1], 2, "seconds of training")):
        right = None
        for label, *columns, side in curves:
            xs, ys = columns[key - 1], columns[2]
            if side == "right":
                right = right or ax.twinx()
                right.plot(xs, ys, marker="s", markersize=3, linestyle="--", color="#55a868", label=label)
                right.set_ylabel(label)
            else:
                ax.plot(xs, ys, marker="o", markersize=3, label=label)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("loss" if any(c[-1] == "left" for c in curves) else "")
        if all(v > 0 for c in curves if c[-1] == "left" for v in c[3]):
            import matplotlib.ticker

            ax.set_yscale("log")
            for axis in (ax.yaxis.set_major_formatter, ax.yaxis.set_minor_formatter):
                axis(matplotlib.ticker.FormatStrFormatter("%.3g"))
        ax.grid(True, which="both", alpha=0.3)
        handles, labels = ax.get_legend_handles_labels()
        if right is not None:
            more = right.get_legend_handles_labels()
            handles, labels = handles + more[0], labels + more[1]
        ax.legend(handles, labels, fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3,
                  frameon=False)
    axes[0].set_title(f"per {step}")
    axes[1].set_title("per second")
    _per_rank_bars(axes[2], per_rank)
    fig.suptitle(title + (f"\n{note}" if note else ""), fontsize="medium")
    _save(fig, path)


def sgd(path, summary: dict, lbfgs_trace=None) -> None:
    """``mpiml sgd --plot``: loss (and test accuracy) per epoch and per second; L-BFGS: the objective per iteration."""
    history = summary["history"]
    if lbfgs_trace is not None:
        objective, seconds = lbfgs_trace
        curves = [("objective", list(range(1, len(objective) + 1)), list(seconds), list(objective), "left")]
        step = "L-BFGS iteration"
    else:
        epochs = [r["epoch"] for r in history]
        seconds = [r.get("seconds", 0.0) for r in history]
        curves = [(f"{name} loss", epochs, seconds, [r[f"{name}_loss"] for r in history], "left")
                  for name in ("train", "test") if history and history[0].get(f"{name}_loss") is not None]
        if history and history[0].get("test_accuracy") is not None:
            curves.append(("test accuracy", epochs, seconds, [r["test_accuracy"] for r in history], "right"))
        step = "epoch"
    final = [f"{k.replace('_', ' ')} {summary[k]:.4g}" for k in ("train_loss", "test_loss", "test_accuracy")
             if summary.get(k) is not None]
    title = (f"mpiml sgd: {summary['model']} by {summary['strategy']} on {summary['ranks']} rank(s), "
             f"{summary['parallel']} parallel ({summary['grid']})")
    training(path, title, curves, summary["per_rank"], step, ", ".join(final))


def mf(path, result: dict, iterations: list) -> None:
    """``mpiml mf --plot``: objective and training RMSE per iteration and per second, per-rank time."""
    steps = [r["iteration"] for r in iterations]
    seconds, total = [], 0.0
    for record in iterations:
        total += record["seconds"]
        seconds.append(total)
    curves = [("objective", steps, seconds, [r["objective"] for r in iterations], "left")]
    if iterations and "train_rmse" in iterations[0]:
        curves.append(("train RMSE", steps, seconds, [r["train_rmse"] for r in iterations], "right"))
    final = [f"{k.replace('_', ' ')} {result[k]:.4g}" for k in ("train_rmse", "test_rmse", "precision_at_k", "ndcg_at_k")
             if isinstance(result.get(k), float)]
    title = f"mpiml mf: {result['algorithm']}, rank {result['rank']}, reg {result['reg']:g} on {result['ranks']} rank(s)"
    training(path, title, curves, result["per_rank"], "iteration", ", ".join(final))


def tune(path, document: dict) -> None:
    """``mpiml tune --plot``: measured against predicted time per call, and their ratio against size."""
    plt = require()
    rows = document["measurements"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5), dpi=110)
    algorithms = sorted({r["algorithm"] for r in rows})
    markers = dict(zip(sorted({r["collective"] for r in rows}), "os^Dvx<>"))
    colors = {name: plt.get_cmap("tab10")(i % 10) for i, name in enumerate(algorithms)}
    for row in rows:
        style = dict(color=colors[row["algorithm"]], marker=markers[row["collective"]], alpha=0.8)
        left.scatter(row["predicted_seconds"] * 1e6, row["time_median_seconds"] * 1e6, **style)
        right.scatter(row["bytes"], row["measured_over_predicted"], **style)
    times = [v * 1e6 for r in rows for v in (r["predicted_seconds"], r["time_median_seconds"]) if v > 0]
    low, high = (min(times), max(times)) if times else (1.0, 10.0)
    for factor, style in ((1, "-"), (2, ":"), (0.5, ":")):
        left.plot([low, high], [low * factor, high * factor], style, color="grey", linewidth=1)
    left.set_xscale("log")
    left.set_yscale("log")
    left.set_xlabel("predicted time per call (us)")
    left.set_ylabel("measured time per call (us)")
    left.set_title("measured against predicted (lines: equal, 2x, 1/2x)")
    _bytes_axis(right)
    right.set_yscale("log")
    right.axhline(1.0, color="grey", linewidth=1)
    right.set_xlabel("message size")
    right.set_ylabel("measured / predicted")
    right.set_title("model error against size")
    for ax in (left, right):
        ax.grid(True, which="both", alpha=0.3)
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=colors[a], marker="o", linestyle="", label=a) for a in algorithms]
    handles += [Line2D([], [], color="black", marker=m, linestyle="", label=c) for c, m in markers.items()]
    left.legend(handles=handles, fontsize="small")
    fig.suptitle(f"mpiml tune on {document.get('ranks', '?')} ranks: the calibrated model against the measurements",
                 fontsize="medium")
    _save(fig, path)


def model(path, collective: str, records: list, crossovers: list, source: str) -> None:
    """``mpiml model --plot``: predicted time against size per algorithm, one panel per rank count, crossovers marked."""
    plt = require()
    ranks = list(dict.fromkeys(r["ranks"] for r in records))
    cols = min(len(ranks), 3)
    rows_n = -(-len(ranks) // cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(5.2 * cols, 4.2 * rows_n), dpi=110, squeeze=False)
    for ax, p in zip(axes.flat, ranks):
        mine = [r for r in records if r["ranks"] == p]
        sizes = [r["bytes"] for r in mine]
        for name in mine[0]["predicted_seconds"]:
            ax.plot(sizes, [r["predicted_seconds"][name] * 1e6 for r in mine], marker=".", label=name)
        ax.plot(sizes, [r["lower_bound_seconds"] * 1e6 for r in mine], "k:", label="lower bound")
        for c in crossovers:
            if c["ranks"] == p:
                ax.axvline(c["bytes"], color="grey", linestyle="--", linewidth=0.8)
                ax.annotate(f"{c['to']}", (c["bytes"], 0.02), xycoords=("data", "axes fraction"), rotation=90,
                            fontsize="x-small", va="bottom", ha="right")
        _bytes_axis(ax)
        ax.set_yscale("log")
        ax.set_title(f"p = {p:,}")
        ax.set_xlabel("message size")
        ax.set_ylabel("predicted time per call (us)")
        ax.grid(True, which="both", alpha=0.3)
    for ax in list(axes.flat)[len(ranks):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize="small")
    fig.suptitle(f"mpiml model {collective} ({source}); dashed: crossovers, labelled with the new fastest",
                 fontsize="medium")
    _save(fig, path)


def bench(path, records: list, title: str, warning: str | None = None) -> None:
    """``mpiml bench --plot``: bus bandwidth with min..max bands, and a latency panel for small messages."""
    plt = require()
    fig, (bw, lat) = plt.subplots(1, 2, figsize=(14, 5.2), dpi=110, gridspec_kw={"width_ratios": [3, 2]})
    small = [r for r in records if r["bytes"] <= LATENCY_BYTES] or records
    for name in dict.fromkeys(r["algorithm"] for r in records):
        mine = [r for r in records if r["algorithm"] == name]
        sizes = [r["bytes"] for r in mine]
        line = bw.plot(sizes, [max(r["busbw_gbps"], 1e-6) for r in mine], marker="o", markersize=3, label=name)[0]
        # The same bytes moved in the slowest and in the fastest iteration.
        scale = [r["busbw_gbps"] * r["time_median_seconds"] for r in mine]
        bw.fill_between(sizes, [max(s / r["time_max_seconds"], 1e-6) for s, r in zip(scale, mine)],
                        [max(s / r["time_min_seconds"], 1e-6) for s, r in zip(scale, mine)],
                        color=line.get_color(), alpha=0.15, linewidth=0)
        few = [r for r in small if r["algorithm"] == name]
        lat.plot([r["bytes"] for r in few], [r["time_median_seconds"] * 1e6 for r in few], marker="o", markersize=3,
                 color=line.get_color(), label=name)
        lat.fill_between([r["bytes"] for r in few], [r["time_min_seconds"] * 1e6 for r in few],
                         [r["time_max_seconds"] * 1e6 for r in few], color=line.get_color(), alpha=0.15, linewidth=0)
    for ax in (bw, lat):
        _bytes_axis(ax)
        ax.set_yscale("log")
        ax.set_xlabel("message size")
        ax.grid(True, which="both", alpha=0.3)
    bw.set_ylabel("bus bandwidth (GB/s, nccl-tests definition)")
    bw.set_title("bandwidth: median, band = fastest..slowest iteration")
    lat.set_ylabel("time per call (us, max over ranks)")
    lat.set_title(f"latency: messages up to {format_bytes(max(r['bytes'] for r in small))}")
    bw.legend(title="algorithm", fontsize="small")
    fig.suptitle(title + (f"\n{warning.lstrip('# ')}" if warning else ""), fontsize="medium",
                 color="#b03a2e" if warning else "black")
    _save(fig, path)
