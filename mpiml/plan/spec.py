"""What ``mpiml plan`` reasons about: the job, a layout of it, the cluster, and a prediction.

Pure data: no MPI, no I/O. :func:`mpiml.plan.predict` turns a (job, layout, cluster)
into a :class:`Prediction`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SGD_ALGORITHMS = ("sync", "local", "oneshot", "lbfgs")
MF_ALGORITHMS = ("als", "ials", "dsgd")
PARALLEL = ("data", "model", "hybrid")


@dataclass(frozen=True)
class Job:
    """What is trained; sizes are those of the TRAIN data (after any held-out split).

    Attributes
    ----------
    kind : str
        ``"sgd"`` (a linear model, ``mpiml sgd``) or ``"mf"`` (matrix factorization, ``mpiml mf``).
    algorithm : str
        sgd: ``"sync"``, ``"local"``, ``"oneshot"`` or ``"lbfgs"``; mf: ``"als"``, ``"ials"`` or ``"dsgd"``.
    rows, features, nnz, dense : int, int, int, bool
        sgd: training rows, feature columns, stored non-zeros (``rows * features`` when dense)
        and whether the matrix is held dense.
    model, classes, batch_size, epochs, max_iter : str, int, int, int, int
        sgd: ``logistic|linear|softmax|svm``, class count (softmax), mini-batch rows per rank,
        epochs (SGD strategies), iteration cap (lbfgs).
    users, items, ratings, factors, iterations : int
        mf: matrix shape, stored ratings, latent factors, sweeps (als/ials) or epochs (dsgd).
    dtype_bytes : int
        Bytes per stored value (8: float64).
    sync_every, solver, cg_steps, biases, factor_bytes : int, str, int, bool, int
        sgd ``local``: updates between averages; mf: the ials row solver and its steps,
        whether als/dsgd learn biases, bytes per factor value (0: the command's default).
    standardize : bool or None
        sgd: train on a standardized copy of the data (None: the command's default, on for
        the SGD strategies, off for lbfgs).
    """

    kind: str
    algorithm: str
    rows: int = 0
    features: int = 0
    nnz: int = 0
    dense: bool = False
    model: str = "logistic"
    classes: int = 2
    batch_size: int = 64
    epochs: int = 1
    max_iter: int = 100
    users: int = 0
    items: int = 0
    ratings: int = 0
    factors: int = 10
    iterations: int = 10
    dtype_bytes: int = 8
    sync_every: int = 8          # sgd local: updates between model averages
    solver: str = "cg"           # mf ials: "cg" or "cholesky"
    cg_steps: int = 3            # mf ials: conjugate-gradient steps per row
    biases: bool = True          # mf als/dsgd: user and item biases (two more factor columns)
    factor_bytes: int = 0        # mf: bytes per factor value (0: 4 for ials, 8 otherwise, as mpiml mf)
    factor_layout: str = "replicated"   # mf: "replicated", "partitioned" or "auto" (mpiml.mf.partitioned)
    standardize: bool | None = None   # sgd: standardized copy of the data (None: as mpiml sgd, on but for lbfgs)

    def __post_init__(self):
        if self.kind not in ("sgd", "mf"):
            raise ValueError(f"Job.kind must be 'sgd' or 'mf', got {self.kind!r}")
        allowed = SGD_ALGORITHMS if self.kind == "sgd" else MF_ALGORITHMS
        if self.algorithm not in allowed:
            raise ValueError(f"Job.algorithm for {self.kind} must be one of {allowed}, got {self.algorithm!r}")

    @property
    def outputs(self) -> int:
        """Model outputs per feature: the class count for softmax, else 1."""
        return max(int(self.classes), 2) if self.model == "softmax" else 1

    @property
    def standardized(self) -> bool:
        """sgd: whether the run holds a standardized copy of its data."""
        return (self.algorithm != "lbfgs") if self.standardize is None else bool(self.standardize)

    @property
    def width(self) -> int:
        """mf: stored factor columns (the rank, plus two for biases in als and dsgd)."""
        return int(self.factors) + (2 if self.biases and self.algorithm in ("als", "dsgd") else 0)

    @property
    def factor_itemsize(self) -> int:
        """mf: bytes per factor value."""
        return int(self.factor_bytes) or (4 if self.algorithm == "ials" else 8)

    @property
    def stored(self) -> int:
        """Stored values of the training matrix (sgd): ``rows * features`` when dense, else ``nnz``."""
        return int(self.rows) * int(self.features) if self.dense else int(self.nnz or 0)


@dataclass(frozen=True)
class Layout:
    """How the job is spread: ``nodes x ranks_per_node`` ranks, ``threads_per_rank`` cores each.

    ``parallel="data"`` splits rows; ``"model"`` splits the features (sgd) over all ranks;
    ``"hybrid"`` is a ``grid = (replicas, model blocks)`` of both (default: the most nearly
    square grid). mf jobs have one layout of their own (users and items in blocks over all
    ranks): ``parallel`` and ``grid`` do not change their prediction.
    """

    nodes: int
    ranks_per_node: int
    threads_per_rank: int = 1
    parallel: str = "data"
    grid: tuple | None = None

    def __post_init__(self):
        if self.nodes < 1 or self.ranks_per_node < 1 or self.threads_per_rank < 1:
            raise ValueError(f"Layout needs nodes, ranks_per_node, threads_per_rank >= 1, got {self}")
        if self.parallel not in PARALLEL:
            raise ValueError(f"Layout.parallel must be one of {PARALLEL}, got {self.parallel!r}")
        if self.grid is not None and (len(self.grid) != 2 or self.grid[0] * self.grid[1] != self.ranks):
            raise ValueError(f"Layout.grid {self.grid} must be (replicas, blocks) with product {self.ranks}")
        if self.parallel == "hybrid" and self.grid is None and _square_grid(self.ranks) is None:
            raise ValueError(f"a hybrid layout needs ranks = R x C with R, C > 1; {self.ranks} has no such grid")

    @property
    def ranks(self) -> int:
        return int(self.nodes) * int(self.ranks_per_node)

    @property
    def replicas_blocks(self) -> tuple[int, int]:
        """``(replicas, model blocks)``: ``(p, 1)`` data parallel, ``(1, p)`` model parallel."""
        if self.grid is not None:
            return int(self.grid[0]), int(self.grid[1])
        if self.parallel == "hybrid":
            return _square_grid(self.ranks)
        return (1, self.ranks) if self.parallel == "model" else (self.ranks, 1)


def _square_grid(p: int) -> tuple[int, int] | None:
    """The most nearly square ``(R, C)``, ``R >= C > 1``, with ``R x C = p`` (None for primes and 1)."""
    for cols in range(int(p**0.5), 1, -1):
        if p % cols == 0:
            return p // cols, cols
    return None


@dataclass(frozen=True)
class Cluster:
    """The machine: up to ``nodes_max`` nodes of ``cores_per_node`` cores and ``mem_per_node_bytes``.

    ``tuning`` names a tuning file (``mpiml tune``) whose communication parameters and
    ``compute`` section calibrate the prediction.
    """

    nodes_max: int = 1
    cores_per_node: int = 2
    mem_per_node_bytes: int = 24 << 30
    tuning: str | None = None


@dataclass
class Prediction:
    """Predicted cost of one job on one layout.

    Attributes
    ----------
    seconds_per_step : float
        Wall seconds of one step: an epoch (sgd strategies sync/local/oneshot) or an
        iteration (lbfgs; mf sweeps and dsgd epochs).
    step : str
        ``"epoch"`` or ``"iteration"``.
    seconds_total : float
        All steps (``epochs``, ``max_iter`` or ``iterations`` of them), start-up excluded.
    comm_seconds_per_step : float
        The communication part of ``seconds_per_step``.
    memory_bytes_per_rank : int
        Predicted peak resident memory of the largest rank (interpreter included).
    core_hours : float
        ``seconds_total`` x cores held (ranks x threads per rank) / 3600.
    notes : list
        Plain-language remarks (oversubscription, memory, assumptions).
    """

    seconds_per_step: float
    step: str
    seconds_total: float
    comm_seconds_per_step: float
    memory_bytes_per_rank: int
    core_hours: float
    notes: list = field(default_factory=list)
    detail: dict = field(default_factory=dict)

    @property
    def comm_share(self) -> float:
        """Communication's share of a step."""
        return self.comm_seconds_per_step / self.seconds_per_step if self.seconds_per_step > 0 else 0.0
