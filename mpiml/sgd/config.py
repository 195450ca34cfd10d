"""Training settings, validated once, shared by the API, the CLI and checkpoints.

:class:`TrainConfig` holds the one set of defaults (the CLI reads its defaults from
here). :func:`resolve` turns the settings a caller gave into a config: it resolves the
``auto`` strategy (:func:`resolve_strategy`) and refuses settings that the chosen
strategy would not use, instead of ignoring them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from mpiml.runtime.errors import ArgumentError
from mpiml.sgd.optim import OPTIMIZERS, SCHEDULES

SGD_STRATEGIES = ("sync", "local", "oneshot")
STRATEGIES = ("auto",) + SGD_STRATEGIES + ("lbfgs",)
SMOOTH_MODELS = ("logistic", "linear", "softmax")  # and the svm with the squared hinge

# The settings that only some strategies use (the rest: alpha, l1_ratio, seed, apply to all).
STEP_SETTINGS = ("batch_size", "accumulate", "lr", "schedule", "lr_decay", "optimizer", "momentum", "nesterov")
SGD_SETTINGS = ("epochs",) + STEP_SETTINGS + ("checkpoint_every",)
LOCAL_SETTINGS = ("sync_every",)
LBFGS_SETTINGS = ("max_iter", "tol", "warm_start_epochs")


@dataclass
class TrainConfig:
    """Everything that decides the trajectory of a training run.

    The defaults were chosen on public LIBSVM sets (a9a, w8a, ijcnn1, reuters; see
    ``benchmarks/sgd_libsvm.py``) to need no tuning: ``auto`` trains the smooth models by
    L-BFGS to scikit-learn's tolerance; the SGD defaults (plain SGD, ``lr`` 0.2 constant,
    global batch 256, 5 epochs) assume standardized features, which
    :class:`~mpiml.sgd.LinearModel` gives the SGD strategies by default; ``alpha`` 1e-4
    is scikit-learn's ``SGDClassifier`` default. On those sets both reach test accuracy
    within 0.4 points of scikit-learn's ``LogisticRegression()``.

    Parameters
    ----------
    strategy : str
        ``auto`` (the default: :func:`resolve_strategy`), ``sync`` (one gradient allreduce
        per update), ``local`` (local steps, models averaged every ``sync_every``
        updates), ``oneshot`` (local training, one average at the end) or ``lbfgs``
        (full-batch L-BFGS on the allreduced gradient).
    epochs : int
        SGD strategies: passes over the data.
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
        Elastic-net penalty ``alpha * ((1 - l1_ratio) / 2 ||w||^2 + l1_ratio ||w||_1)``
        on the mean loss (scikit-learn's ``C`` is ``1 / (alpha * n_rows)``).
    sync_every : int
        ``local`` only: updates between model averages (``H``).
    seed : int
        The one seed every random choice derives from.
    max_iter, tol : int, float
        ``lbfgs``: iteration limit, and the gradient tolerance: stop when every
        component of the projected gradient is at most ``tol`` (scikit-learn's ``tol``
        of ``LogisticRegression``; the relative objective decrease test is fixed at
        64 machine epsilons, as there).
    warm_start_epochs : int
        ``lbfgs`` only: epochs of one-shot averaged SGD to start from (Vowpal Wabbit's
        recipe); they use the SGD step settings.
    checkpoint_every : int
        SGD strategies: also checkpoint every this many updates (0: at epoch ends only).
    """

    strategy: str = "auto"
    epochs: int = 5
    batch_size: int = 256
    accumulate: int = 1
    lr: float = 0.2
    schedule: str = "constant"
    lr_decay: float = 0.0
    optimizer: str = "sgd"
    momentum: float = 0.0
    nesterov: bool = False
    alpha: float = 1e-4
    l1_ratio: float = 0.0
    sync_every: int = 8
    seed: int = 0
    max_iter: int = 500
    tol: float = 1e-4
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
        if not self.tol > 0:
            raise ArgumentError(f"tol must be > 0, got {self.tol}")
        if self.strategy == "lbfgs" and self.l1_ratio > 0 and self.alpha > 0:
            raise ArgumentError("lbfgs needs a smooth objective: use l1_ratio=0, or an SGD strategy for L1")
        return self

    def as_dict(self) -> dict:
        return asdict(self)


SETTINGS = tuple(f.name for f in fields(TrainConfig) if f.name != "strategy")
DEFAULTS = TrainConfig()


def resolve_strategy(model: str, l1_ratio: float = DEFAULTS.l1_ratio, squared_hinge: bool = False,
                     given=()) -> str:
    """The strategy ``auto`` stands for: ``lbfgs`` for a smooth objective, else SGD.

    Smooth: logistic, linear (least squares), softmax, or the svm with the squared hinge,
    without an L1 part (``l1_ratio`` 0). There L-BFGS reaches the optimum in a few dozen
    full passes and as many allreduces, where SGD needs an allreduce per batch and only
    approaches it. ``given`` names the settings the caller set: SGD-only ones
    (``epochs``, ``lr``, ``batch_size``, ...) ask for SGD, so they choose ``sync`` too
    (``local`` for ``sync_every``, which only it uses).
    """
    smooth = (model in SMOOTH_MODELS or (model == "svm" and squared_hinge)) and not l1_ratio > 0
    if any(name in LOCAL_SETTINGS for name in given):
        return "local"
    if not smooth or any(name in SGD_SETTINGS for name in given):
        return "sync"
    return "lbfgs"


def _not_applicable(strategy: str, given, warm_start_epochs: int) -> list:
    """The settings in ``given`` that ``strategy`` would not use."""
    if strategy == "lbfgs":
        unused = SGD_SETTINGS + LOCAL_SETTINGS
        if warm_start_epochs:  # the warm start is one-shot SGD: its step settings count
            unused = tuple(n for n in unused if n not in STEP_SETTINGS)
    else:
        unused = LBFGS_SETTINGS + (LOCAL_SETTINGS if strategy != "local" else ())
    return [name for name in given if name in unused]


def resolve(strategy: str = "auto", model: str = "logistic", squared_hinge: bool = False, settings=None,
            spell=str) -> TrainConfig:
    """The validated config for ``settings`` (the fields a caller set) and ``strategy``.

    ``auto`` becomes :func:`resolve_strategy`'s choice. A setting the resulting strategy
    would not use is an :class:`ArgumentError` (``spell`` writes a setting's name as the
    caller knows it, e.g. ``--batch-size``); so is ``auto`` given both SGD and L-BFGS settings.
    """
    settings = dict(settings or {})
    unknown = [name for name in settings if name not in SETTINGS]
    if unknown:
        raise ArgumentError(f"unknown setting {unknown[0]!r}; the settings are {', '.join(SETTINGS)}")
    if strategy not in STRATEGIES:
        raise ArgumentError(f"unknown strategy {strategy!r}; choose from {', '.join(STRATEGIES)}")
    chosen = strategy
    if strategy == "auto":
        chosen = resolve_strategy(model, settings.get("l1_ratio", DEFAULTS.l1_ratio), squared_hinge, settings)
    unused = _not_applicable(chosen, settings, settings.get("warm_start_epochs", 0))
    if unused:
        def home(name):
            if name in LBFGS_SETTINGS:
                return "lbfgs"
            if name in LOCAL_SETTINGS:
                return "local"
            return ", ".join(SGD_STRATEGIES) + (f", or lbfgs with {spell('warm_start_epochs')}"
                                                if name in STEP_SETTINGS else "")

        how = chosen
        if strategy == "auto":
            smooth = resolve_strategy(model, settings.get("l1_ratio", DEFAULTS.l1_ratio), squared_hinge) == "lbfgs"
            how = (f"{chosen}, which {spell('strategy')} auto chose "
                   f"({'for the SGD settings given' if smooth else 'as the objective is not smooth'})")
        problems = "; ".join(f"{spell(n)} is for {home(n)}" for n in unused)
        raise ArgumentError(f"{', '.join(spell(n) for n in unused)} not used by strategy {how}: {problems}")
    return TrainConfig(strategy=chosen, **settings).validate()
