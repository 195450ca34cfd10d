"""What the cost model predicts at rank counts beyond the machine at hand (pure functions)."""

from __future__ import annotations

from mpiml.collectives import model
from mpiml.collectives.select import candidates, model_winner
from mpiml.errors import ArgumentError

MAX_RANKS = 100_000


def parse_overrides(text: str | None, params: model.ModelParams) -> model.ModelParams:
    """``alpha=2e-6,beta=1e-10``: parameters replaced for a what-if question."""
    if not text:
        return params
    values = params.to_dict()
    scalars = sorted(k for k, v in values.items() if not isinstance(v, dict))
    for item in text.split(","):
        name, _, value = item.partition("=")
        name = name.strip()
        if name not in scalars:
            raise ArgumentError(f"--set: unknown parameter {name!r}; known: {scalars}")
        try:
            values[name] = (float if values[name] is None else type(values[name]))(float(value))  # None: unset link
        except ValueError:
            raise ArgumentError(f"--set: {item!r} is not NAME=NUMBER") from None
        # a rate set here holds at every size: its measured points by size (model.at_size) go
        values["rates_by_size"] = {k: v for k, v in values["rates_by_size"].items() if k != name}
    return model.ModelParams.from_dict(values)


def predictions(collective: str, ranks, sizes, params) -> list[dict]:
    """One record per (p, size): predicted seconds per algorithm, the fastest, auto's pick,
    and the lower bound."""
    records = []
    for p in ranks:
        if not 1 <= p <= MAX_RANKS:
            raise ArgumentError(f"rank counts must be in 1..{MAX_RANKS}, got {p}")
        names = candidates(collective, size=p)
        for nbytes in sizes:
            seconds = {name: model.predict(name, nbytes, p, params, collective=collective) for name in names}
            records.append({
                "collective": collective, "ranks": p, "bytes": nbytes,
                "predicted_seconds": seconds,
                "fastest": model.fastest(seconds),
                "auto": model_winner(collective, nbytes, p, params),
                "lower_bound_seconds": model.lower_bound(collective, nbytes, p, params),
            })
    return records


def crossover_points(collective: str, p: int, low: int, high: int, params) -> list[dict]:
    """Where the model's fastest algorithm changes between ``low`` and ``high`` bytes."""
    names = candidates(collective, size=p)

    def fastest(nbytes):
        return model.best(collective, nbytes, p, params, candidates=names)

    return [{"ranks": p, "bytes": at, "from": before, "to": after}
            for at, before, after in model.crossovers(fastest, low, high)]


def add_sparse(records, collective: str, density: float, params) -> None:
    """Add ``sparse_seconds`` and ``sparse_path`` to each record: :func:`mpiml.collectives.model.predict_sparse`
    of float64 values, ``density`` nonzeros per rank (allreduce only)."""
    from mpiml.collectives.model import predict_sparse

    if collective != "allreduce":
        raise ArgumentError("--density prices sparse_allreduce: use it with --collective allreduce")
    if not 0.0 <= density <= 1.0:
        raise ArgumentError(f"--density must be in [0, 1], got {density}")
    for rec in records:
        size = rec["bytes"] // 8
        seconds, path = predict_sparse(size, density, rec["ranks"], params,
                                       index_bytes=4 if size < 2**31 else 8)
        rec["sparse_seconds"], rec["sparse_path"] = seconds, path
