"""The compute constants of the plan model, and where they are kept: the ``compute``
section of an ``mpiml tune`` file (:mod:`mpiml.collectives.tuning`'s format).

The defaults were measured by the probe on the 2-core development VM (CPU seconds, numba
kernels, float64, rounded); ``mpiml tune`` (:func:`mpiml.plan.probe.measure`) measures
them on another machine.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, fields, replace

from mpiml.collectives.model import DEFAULT_PARAMS, ModelParams
from mpiml.collectives.tuning import read_document
from mpiml.errors import ArgumentError

SECTION = "compute"

# Seconds of a step of ``phase`` CPU seconds and a 512-byte allreduce at 3 and 4 ranks on the 2-core VM
# (probe.oversubscription_steps, its ranks given priority over the VM's other work): a waiting rank polls,
# holding its core until the scheduler's slice ends, so short phases cost about a slice (1-2 ms) and
# long ones 2-2.5 times the phase (two ranks share a core while the others wait for them).
DEFAULT_OVERSUB_STEPS = (
    (1.5, ((3e-5, 9.9e-4), (1e-4, 1.13e-3), (3e-4, 2.0e-3), (1e-3, 2.7e-3), (3e-3, 7.3e-3), (1e-2, 2.19e-2))),
    (2.0, ((3e-5, 2.0e-3), (1e-4, 2.4e-3), (3e-4, 2.5e-3), (1e-3, 3.7e-3), (3e-3, 1.05e-2), (1e-2, 2.5e-2))),
)
TABLES = ("oversub_steps",)


@dataclass(frozen=True)
class Calibration:
    """Seconds per unit of work on one core, bytes of a bare rank, and the communication parameters.

    Attributes
    ----------
    sparse_nnz : float
        Seconds per stored non-zero per gradient pass (one ``X @ w`` and one ``X.T @ r``).
    dense_value : float
        Seconds per stored dense value per gradient pass.
    update_overhead : float
        Fixed Python seconds of one SGD update (batch slicing, kernel calls), communication excluded.
    param_update : float
        Seconds per model parameter per update (optimizer step, exchange buffer copies).
    row_loss : float
        Seconds per row and output of the loss derivative.
    lbfgs_overhead : float
        Fixed seconds of one L-BFGS iteration beyond its gradient passes.
    lbfgs_dense_value : float
        Seconds per stored dense value of a full-batch product (lbfgs; one BLAS call over the shard).
    lbfgs_sparse_nnz : float
        Seconds per stored non-zero of a full-batch sparse product (lbfgs; ``X p`` or ``X.T r`` over the
        shard's CSR rows).
    lbfgs_param : float
        Seconds per model parameter of the rank's block per L-BFGS iteration (the two-loop's inner
        products, the direction, the history and line-search vectors: passes over the block).
    lbfgs_row : float
        Seconds per row and output of the full-batch loss and its derivative (lbfgs).
    als_rating_k2 : float
        Seconds per rating per ``k**2`` (accumulating a row's normal equations).
    als_row_k3 : float
        Seconds per solved row per ``k**3`` (the Cholesky solve).
    als_row : float
        Fixed seconds per solved row.
    als_rating : float
        Seconds per rating of an ALS iteration beyond the ``k**2`` work (index loads, the loss pass).
    als_row_k2 : float
        Seconds per row per ``k**2`` of one conjugate-gradient step (implicit ALS: the shared Gram matrix).
    ials_rating : float
        Seconds per rating of an implicit ALS iteration beyond its conjugate-gradient products.
    ials_rating_k : float
        Seconds per rating per ``k`` per conjugate-gradient step (implicit ALS).
    dsgd_rating_k : float
        Seconds per rating per ``k`` of one DSGD update.
    mf_rating : float
        Fixed seconds per rating of one pass over the ratings (mf).
    gram_value : float
        Seconds per value of ``k**2`` times rows of the Gram matrix ``Y.T @ Y`` (implicit ALS; BLAS).
    mf_overhead : float
        Fixed seconds of one mf iteration (its bookkeeping and loss evaluation set-up).
    collective_overhead : float
        Seconds each collective call of a training step costs beyond the collectives' model when
        every rank has a core (the layers above ``mpiml``'s call, the wait for the last rank's
        jitter). Measured by :func:`mpiml.plan.probe.collective_overhead` (``mpiml tune`` with 2 or
        more ranks; the benchmark runs it at one rank per core).
    grid_update_overhead : float
        Fixed seconds one SGD update costs a rank of a split (model or hybrid) layout beyond the
        whole-model path: the partial margins, the block gradient on 2-D arrays, the second reduction.
    job_excess : tuple
        What each collective call of a real training step costs beyond this model, by job family
        and ranks per core: ``((family, ((ratio, seconds), ...)), ...)``. Measured by
        :func:`mpiml.plan.probe.job_probes` (``mpiml tune`` with 2 or more ranks): each family's
        own step loop (``sync-data``, ``sync-model``, ``lbfgs-data``, ``lbfgs-model``, ``als``,
        ``ials``, ``dsgd``) on a small generated problem at the tune's rank count, its measured
        step less this model's prediction of it, over its collective calls. Empty (the default):
        the model alone.
    job_scale : tuple
        ``((family, factor), ...)``: a family's real step on one rank, measured over this model's
        prediction of it (on the probe's problem, :func:`mpiml.plan.probe.job_probes`): what the
        generic constants miss of that loop (its own passes, its memory traffic). Multiplies the
        family's compute. Empty (the default): 1.
    oversub_steps : tuple
        When a node runs more ranks than cores: ``((ratio, ((phase, seconds), ...)), ...)``, the
        seconds of one step of ``phase`` CPU seconds of work and one small collective on every
        rank, at ``ratio`` ranks per core (time-slicing, and the wait of a collective for the
        ranks that are not running; MPICH ranks poll while they wait, so they hold a core
        another rank needs). Measured by :func:`mpiml.plan.probe.oversubscription_steps` (``mpiml
        tune`` run with more ranks than cores); the defaults are from the 2-core development VM.
    thread_efficiency : float
        Speed-up each thread beyond the first adds to the BLAS parts (dense products, Gram matrices).
    baseline_bytes : int
        Peak resident bytes of a rank that imported mpiml, mpi4py and the kernels and did no work.
    params : ModelParams
        Communication (alpha, beta, ...), from the tuning file's ``params`` when given.
    source : str
        Where the numbers came from.
    """

    sparse_nnz: float = 3.0e-9
    dense_value: float = 1.0e-9
    update_overhead: float = 3.0e-5
    param_update: float = 3.0e-9
    row_loss: float = 4.5e-8
    lbfgs_overhead: float = 1.0e-4
    lbfgs_dense_value: float = 6.0e-10
    lbfgs_row: float = 2.0e-8
    lbfgs_sparse_nnz: float = 1.5e-9
    lbfgs_param: float = 5.0e-8
    als_rating_k2: float = 1.0e-10
    als_row_k3: float = 1.0e-11
    als_row: float = 2.5e-7
    als_rating: float = 3.0e-8
    als_row_k2: float = 5.0e-11
    ials_rating: float = 1.5e-8
    ials_rating_k: float = 9.0e-11
    dsgd_rating_k: float = 1.5e-9
    mf_rating: float = 2.8e-8
    gram_value: float = 3.0e-10
    mf_overhead: float = 1.0e-4
    collective_overhead: float = 1.0e-5
    grid_update_overhead: float = 6.0e-5
    oversub_steps: tuple = DEFAULT_OVERSUB_STEPS
    job_excess: tuple = ()
    job_scale: tuple = ()
    thread_efficiency: float = 0.7
    baseline_bytes: int = 178 << 20
    params: ModelParams = DEFAULT_PARAMS
    source: str = "defaults"

    def constants(self) -> dict:
        """The compute constants as the tuning file's ``compute`` section stores them (tables as
        ``{"ratio": [[phase, seconds], ...]}``)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("params", "source")}
        for name in TABLES:
            out[name] = table_document(out[name])
        out["job_excess"] = excess_document(out["job_excess"])
        out["job_scale"] = dict(out["job_scale"])
        return out

    def with_constants(self, values: dict, source: str | None = None) -> "Calibration":
        """A copy with ``values`` (a ``compute`` section) applied; unknown keys are ignored (a newer file),
        and so is ``oversub_sync`` (an older file's single wait, which the table replaced)."""
        names = {f.name for f in fields(self)} - {"params", "source"}
        known = {k: (int(v) if k == "baseline_bytes" else table(v) if k in TABLES
                     else excess_table(v) if k == "job_excess" else scale_table(v) if k == "job_scale"
                     else float(v))
                 for k, v in values.items() if k in names}
        return replace(self, **known, source=source or self.source)


def table(value) -> tuple:
    """``((ratio, ((phase, seconds), ...)), ...)`` sorted, from a section's ``{"ratio": [[phase, seconds], ...]}``
    or the tuple itself; ValueError for anything else."""
    items = value.items() if isinstance(value, dict) else value
    out = []
    for ratio, points in items:
        rows = tuple(sorted((float(phase), float(seconds)) for phase, seconds in points))
        if float(ratio) <= 1.0 or not rows or any(p <= 0 or s <= 0 for p, s in rows):
            raise ValueError(f"oversubscription table entry {ratio!r}: ratios above 1 and positive points")
        out.append((float(ratio), rows))
    return tuple(sorted(out))


def table_document(value: tuple) -> dict:
    """The JSON form of a :func:`table`."""
    return {repr(float(ratio)): [list(point) for point in points] for ratio, points in value}


def excess_table(value) -> tuple:
    """``((family, ((ratio, seconds), ...)), ...)`` sorted, from a section's ``{"family": {"ratio": seconds}}`` or
    the tuple itself; ValueError for anything else (ratios of at least 1, finite seconds)."""
    items = value.items() if isinstance(value, dict) else value
    out = []
    for family, points in items:
        points = points.items() if isinstance(points, dict) else points
        rows = tuple(sorted((float(ratio), float(seconds)) for ratio, seconds in points))
        if not isinstance(family, str) or not rows or any(r < 1.0 or not math.isfinite(s) for r, s in rows):
            raise ValueError(f"job excess entry {family!r}: ratios of at least 1 and finite seconds")
        out.append((family, rows))
    return tuple(sorted(out))


def scale_table(value) -> tuple:
    """``((family, factor), ...)`` sorted, from a section's ``{"family": factor}`` or the tuple itself; ValueError
    for anything else (positive finite factors)."""
    out = tuple(sorted((str(family), float(factor))
                       for family, factor in (value.items() if isinstance(value, dict) else value)))
    if any(not (math.isfinite(f) and f > 0) for _, f in out):
        raise ValueError(f"job scale {value!r}: positive factors")
    return out


def excess_document(value: tuple) -> dict:
    """The JSON form of an :func:`excess_table`."""
    return {family: {repr(float(ratio)): seconds for ratio, seconds in points} for family, points in value}


def merge_excess(value: tuple, family: str, ratio: float, seconds: float) -> tuple:
    """``value`` (an :func:`excess_table`) with ``family``'s entry at ``ratio`` set to ``seconds``."""
    found = dict(value)
    points = {r: s for r, s in found.get(family, ()) if abs(r - ratio) > 1e-9}
    points[float(ratio)] = float(seconds)
    found[family] = tuple(points.items())
    return excess_table(found)


DEFAULT = Calibration()


def load_calibration(tuning_path=None) -> Calibration:
    """The calibration in the tuning file ``tuning_path`` (``$MPIML_TUNING`` when None).

    Missing file name, or a file without a ``compute`` (or ``params``) section: the
    defaults for what is missing. An unreadable or malformed file is an
    :class:`~mpiml.errors.ArgumentError` naming it.

    Parameters
    ----------
    tuning_path : str or os.PathLike, optional
        A file written by ``mpiml tune``.

    Returns
    -------
    Calibration
    """
    path = tuning_path if tuning_path is not None else os.environ.get("MPIML_TUNING") or None
    if path is None:
        return DEFAULT
    document = read_document(path)
    if not isinstance(document, dict):
        raise ArgumentError(f"{path}: not a valid mpiml tuning file: not a JSON object")
    calibration = replace(DEFAULT, source=str(path))
    try:
        if document.get("params") is not None:
            calibration = replace(calibration, params=ModelParams.from_dict(dict(document["params"])))
        section = document.get(SECTION)
        if section is not None:
            calibration = calibration.with_constants(dict(section))
    except (TypeError, ValueError) as exc:
        raise ArgumentError(f"{path}: not a valid mpiml tuning file: {exc}") from None
    return calibration


def section_document(calibration: Calibration) -> dict:
    """The ``compute`` section for a tuning file (JSON-ready)."""
    return dict(calibration.constants())


def store(path, calibration: Calibration) -> None:
    """Write ``calibration``'s compute section into the tuning file ``path`` (atomically; other sections kept)."""
    from mpiml.perf.tune import write_tuning

    document = read_document(path) if os.path.exists(path) else {}
    document[SECTION] = section_document(calibration)
    write_tuning(path, document)


