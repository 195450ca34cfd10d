"""Training settings, validated once, shared by the API, the CLI and checkpoints."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from mpiml.runtime.errors import ArgumentError
from mpiml.sgd.optim import OPTIMIZERS, SCHEDULES

STRATEGIES = ("sync", "local", "oneshot", "lbfgs")


@dataclass
class TrainConfig:
    """Everything that decides the trajectory of a training run.

    Parameters
    ----------
    strategy : str
        ``sync`` (one gradient allreduce per update), ``local`` (local steps, models
        averaged every ``sync_every`` updates), ``oneshot`` (local training, one
        average at the end) or ``lbfgs`` (full-batch L-BFGS on the allreduced gradient).
    epochs : int
        Passes over the data (``lbfgs``: the iteration limit is ``max_iter``).
    batch_size : int
        ``sync``: the *global* batch (rows over all ranks per micro-batch).
        ``local``/``oneshot``: each rank's own batch.
    accumulate : int
        Micro-batches summed per update (gradient accumulation): an update sees
        ``batch_size * accumulate`` rows and, for ``sync``, costs one allreduce.
    lr, schedule, lr_decay : float, str, float
        Learning rate ``lr`` at update 0 and its schedule (see :func:`optim.learning_rate`).
    optimizer, momentum, nesterov : str, float, bool
        ``sgd`` (with optional momentum / Nesterov), ``adagrad`` or ``adam``.
    alpha, l1_ratio : float
        Elastic-net penalty strength and its L1 share (0: ridge, 1: lasso).
    sync_every : int
        ``local`` only: updates between model averages (``H``).
    seed : int
        The one seed every random choice derives from.
    max_iter, tol : int, float
        ``lbfgs`` limits (iterations; scipy's ``ftol``/``gtol``).
    warm_start_epochs : int
        ``lbfgs`` only: epochs of one-shot averaged SGD to start from (Vowpal Wabbit's recipe).
    checkpoint_every : int
        Also checkpoint every this many updates (0: at epoch ends only).
    """

    strategy: str = "sync"
    epochs: int = 5
    batch_size: int = 64
    accumulate: int = 1
    lr: float = 0.1
    schedule: str = "constant"
    lr_decay: float = 0.0
    optimizer: str = "sgd"
    momentum: float = 0.0
    nesterov: bool = False
    alpha: float = 0.0
    l1_ratio: float = 0.0
    sync_every: int = 8
    seed: int = 0
    max_iter: int = 500
    tol: float = 1e-10
    warm_start_epochs: int = 0
    checkpoint_every: int = 0

    def validate(self) -> "TrainConfig":
        """Raise :class:`ArgumentError` on a setting that cannot work; returns self."""
        if self.strategy not in STRATEGIES:
            raise ArgumentError(f"unknown strategy {self.strategy!r}; choose from {', '.join(STRATEGIES)}")
        if self.optimizer not in OPTIMIZERS:
            raise ArgumentError(f"unknown optimizer {self.optimizer!r}; choose from {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise ArgumentError(f"unknown schedule {self.schedule!r}; choose from {', '.join(SCHEDULES)}")
        for name in ("epochs", "batch_size", "accumulate", "sync_every", "max_iter"):
            if int(getattr(self, name)) < 1:
                raise ArgumentError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("warm_start_epochs", "checkpoint_every", "lr_decay", "alpha"):
            if getattr(self, name) < 0:
                raise ArgumentError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ArgumentError(f"lr must be > 0, got {self.lr}")
        if self.strategy == "lbfgs" and self.l1_ratio > 0 and self.alpha > 0:
            raise ArgumentError("lbfgs needs a smooth objective: use l1_ratio=0, or an SGD strategy for L1")
        return self

    def as_dict(self) -> dict:
        return asdict(self)
