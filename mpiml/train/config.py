"""Training settings: declared once, in a field table, and everything else generated from it.

Each field of :class:`TrainConfig` carries its type, default, choices, bounds, help text
and the strategies that use it (:class:`Setting`, in the field's metadata). From that one
table come :meth:`TrainConfig.validate`, the strategy ``auto`` resolves to
(:func:`resolve_strategy`), the errors for settings a strategy would not use
(:func:`resolve`), and the ``mpiml sgd`` options (:mod:`mpiml.cli.sgd` turns
:func:`settings_table` into argparse options; this module knows nothing of the command line).
"""

from __future__ import annotations

import numbers
import os
from dataclasses import asdict, dataclass, field, fields

from mpiml.errors import ArgumentError
from mpiml.train.compress import parse as parse_compress
from mpiml.train.optim import OPTIMIZERS, SCHEDULES

SGD_STRATEGIES = ("sync", "local", "oneshot", "async")
STRATEGIES = ("auto",) + SGD_STRATEGIES + ("lbfgs",)
EVERY_STRATEGY = SGD_STRATEGIES + ("lbfgs",)
SMOOTH_MODELS = ("logistic", "linear", "softmax")  # and the svm with the squared hinge


@dataclass(frozen=True)
class Setting:
    """What the table says of one setting besides its name and default.

    ``used_by``: the strategies that use it; ``warm_start``: ``lbfgs`` uses it too when
    ``warm_start_epochs`` > 0 (the warm start is one-shot SGD); ``minimum``/``maximum``
    with ``open_min``/``open_max`` bound a number; ``section`` groups the option on the
    command line; ``default_text`` replaces the default shown in help (``""``: none).
    """

    type: type
    help: str
    used_by: tuple = EVERY_STRATEGY
    choices: tuple | None = None
    minimum: float | None = None
    maximum: float | None = None
    open_min: bool = False
    open_max: bool = False
    warm_start: bool = False
    section: str = "training"
    default_text: str | None = None

    @property
    def scope(self) -> str:
        """Which strategies the help text names: ``SGD``, ``local``, ``lbfgs`` or none (all)."""
        if set(self.used_by) == set(EVERY_STRATEGY):
            return ""
        if set(self.used_by) == set(SGD_STRATEGIES):
            return "SGD"
        return ", ".join(self.used_by)


def _setting(default, type_, help_, **options):
    return field(default=default, metadata={"setting": Setting(type_, help_, **options)})


SGD = dict(used_by=SGD_STRATEGIES)
STEP = dict(used_by=SGD_STRATEGIES, warm_start=True)  # what the lbfgs warm start's SGD steps use too


@dataclass
class TrainConfig:
    """Everything that decides the trajectory of a training run (the field table).

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
    compress : str
        ``sync`` only: how the gradient travels (:mod:`mpiml.train.compress`): ``none``
        (float64), ``fp16``/``bf16`` (16-bit floats), ``topk[:RATIO]`` (the largest
        ``RATIO`` share of the entries, default 0.01, with error feedback) or
        ``powersgd[:RANK]`` (rank-``RANK`` factors of the softmax weight gradient, default
        1, with error feedback). Not with ``reproducible``.
    lr, schedule, lr_decay : float, str, float
        Learning rate ``lr`` at update 0 and its schedule (see :func:`mpiml.train.optim.learning_rate`).
    optimizer, momentum, nesterov : str, float, bool
        ``sgd`` (with optional momentum / Nesterov), ``adagrad`` or ``adam``.
    alpha, l1_ratio : float
        Elastic-net penalty ``alpha * ((1 - l1_ratio) / 2 ||w||^2 + l1_ratio ||w||_1)``
        on the mean loss (scikit-learn's ``C`` is ``1 / (alpha * n_rows)``).
    sync_every : int
        ``local`` only: updates between model averages (``H``).
    staleness : int
        ``async`` only (:mod:`mpiml.train.asynchronous`): each rank applies its updates to a
        shared model without waiting, but never gets more than ``staleness`` updates ahead of
        the slowest rank.
    backup : int
        ``sync`` only (:mod:`mpiml.train.backup`): each update proceeds with the gradients of
        the first ``p - backup`` ranks to finish (backup workers), reweighted by their rows.
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
    reproducible : bool
        Exact sums across rows and ranks, so that ``sync`` and ``lbfgs`` give the same bits
        at any rank count (:mod:`mpiml.train.reproducible`; also ``MPIML_REPRODUCIBLE=1``).
    """

    strategy: str = _setting("auto", str, "auto (default): lbfgs for a smooth objective (logistic, linear, "
                             "softmax, svm with --squared-hinge; no L1) unless SGD settings are given, else sync",
                             choices=STRATEGIES, default_text="")
    alpha: float = _setting(1e-4, float, "penalty strength", minimum=0.0, section="model")
    l1_ratio: float = _setting(0.0, float, "L1 share of the penalty: 0 ridge (default) .. 1 lasso", minimum=0.0,
                               maximum=1.0, section="model", default_text="")
    sync_every: int = _setting(8, int, "updates between model averages, H", minimum=1, used_by=("local",))
    # stragglers (mpiml.train.asynchronous, mpiml.train.backup): bounded-staleness updates, backup workers
    staleness: int = _setting(16, int, "no rank more than S updates ahead of the slowest", minimum=1,
                              used_by=("async",))
    backup: int = _setting(0, int, "each update takes the first p-K ranks' gradients, reweighted (backup workers)",
                           minimum=0, used_by=("sync",), default_text="")
    epochs: int = _setting(5, int, "passes over the data", minimum=1, **SGD)
    batch_size: int = _setting(256, int, "sync: global batch; local/oneshot/async: per-rank batch", minimum=1, **STEP)
    accumulate: int = _setting(1, int, "micro-batches per update (gradient accumulation)", minimum=1,
                               default_text="", **STEP)
    compress: str = _setting("none", str, "gradient compression: none, fp16, bf16, topk[:RATIO] (default 0.01) or "
                             "powersgd[:RANK] (softmax; default 1); topk and powersgd with error feedback",
                             used_by=("sync",))
    optimizer: str = _setting("sgd", str, "optimizer", choices=OPTIMIZERS, **STEP)
    lr: float = _setting(0.2, float, "learning rate", minimum=0.0, open_min=True, **STEP)
    schedule: str = _setting("constant", str, "learning-rate schedule", choices=SCHEDULES, **STEP)
    lr_decay: float = _setting(0.0, float, "inverse/sqrt schedules: decay per update", minimum=0.0,
                               default_text="", **STEP)
    momentum: float = _setting(0.0, float, "momentum of the sgd optimizer", minimum=0.0, maximum=1.0,
                               open_max=True, default_text="", **STEP)
    nesterov: bool = _setting(False, bool, "Nesterov momentum", default_text="", **STEP)
    max_iter: int = _setting(500, int, "iteration limit", minimum=1, used_by=("lbfgs",))
    tol: float = _setting(1e-4, float, "stop when no gradient component exceeds this, as scikit-learn",
                          minimum=0.0, open_min=True, used_by=("lbfgs",))
    warm_start_epochs: int = _setting(0, int, "averaged SGD epochs first", minimum=0, used_by=("lbfgs",),
                                      default_text="")
    seed: int = _setting(0, int, "the seed of every random choice", minimum=0)
    checkpoint_every: int = _setting(0, int, "also every N updates", minimum=0, section="checkpoints",
                                     default_text="epochs only", **SGD)
    reproducible: bool = _setting(False, bool, "the same model at any rank count (sync, lbfgs): exact sums; "
                                  "also MPIML_REPRODUCIBLE=1", default_text="")

    def validate(self) -> "TrainConfig":
        """Raise :class:`ArgumentError` on a setting that cannot work; returns self."""
        for name, setting in settings_table(with_strategy=True).items():
            _check(name, getattr(self, name), setting)
        if self.nesterov and not self.momentum:
            raise ArgumentError("nesterov needs a momentum > 0")
        if self.optimizer != "sgd" and (self.momentum or self.nesterov):
            raise ArgumentError(f"momentum/nesterov apply to the 'sgd' optimizer, not {self.optimizer!r}")
        # reproducible: the setting or MPIML_REPRODUCIBLE (as mpiml.train.reproducible.requested reads it)
        exact = self.reproducible or os.environ.get("MPIML_REPRODUCIBLE", "").strip() not in ("", "0")
        if parse_compress(self.compress).name != "none" and exact:
            raise ArgumentError("compress changes the gradient sums that reproducible (or MPIML_REPRODUCIBLE=1) "
                                "makes exact: give one of them")
        if self.backup and (exact or parse_compress(self.compress).name != "none"):
            raise ArgumentError("backup leaves late gradients out of their update: not with compress or reproducible")
        if self.strategy == "lbfgs" and self.l1_ratio > 0 and self.alpha > 0:
            raise ArgumentError("lbfgs needs a smooth objective: use l1_ratio=0, or an SGD strategy for L1")
        return self

    def as_dict(self) -> dict:
        return asdict(self)


def settings_table(with_strategy: bool = False) -> dict:
    """``{name: Setting}`` of every field in declaration order (``strategy`` only if asked)."""
    return {f.name: f.metadata["setting"] for f in fields(TrainConfig)
            if with_strategy or f.name != "strategy"}


def _check(name: str, value, setting: Setting) -> None:
    """Type, choices and bounds of one value, from its row of the table."""
    if setting.type is bool:
        ok = isinstance(value, (bool, numbers.Integral)) and value in (0, 1)
    elif setting.type is int:
        ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    elif setting.type is float:
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and value == value
    else:
        ok = isinstance(value, setting.type)
    if not ok:
        raise ArgumentError(f"{name} must be {setting.type.__name__}, got {value!r}")
    if setting.choices is not None and value not in setting.choices:
        raise ArgumentError(f"unknown {name} {value!r}; choose from {', '.join(setting.choices)}")
    low, high = setting.minimum, setting.maximum
    if low is not None and (value <= low if setting.open_min else value < low):
        raise ArgumentError(f"{name} must be {'>' if setting.open_min else '>='} {low:g}, got {value}")
    if high is not None and (value >= high if setting.open_max else value > high):
        raise ArgumentError(f"{name} must be {'<' if setting.open_max else '<='} {high:g}, got {value}")


SETTINGS = tuple(settings_table())
DEFAULTS = TrainConfig()
# Settings that only SGD strategies use ask for SGD under auto; those only local uses, for local.
SGD_ONLY = tuple(n for n, s in settings_table().items() if set(s.used_by) <= set(SGD_STRATEGIES))
LOCAL_ONLY = tuple(n for n, s in settings_table().items() if s.used_by == ("local",))


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
    if any(name in LOCAL_ONLY for name in given):
        return "local"
    if not smooth or any(name in SGD_ONLY for name in given):
        return "sync"
    return "lbfgs"


def unused_settings(strategy: str, given, warm_start_epochs: int = 0) -> list:
    """The settings in ``given`` that ``strategy`` would not use (the table's ``used_by``)."""
    table = settings_table()
    return [name for name in given if name in table and strategy not in table[name].used_by
            and not (strategy == "lbfgs" and warm_start_epochs and table[name].warm_start)]


def _home(name: str, spell) -> str:
    """The strategies that use setting ``name``, for an error message."""
    setting = settings_table()[name]
    return ", ".join(setting.used_by) + (f", or lbfgs with {spell('warm_start_epochs')}"
                                         if setting.warm_start else "")


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
    l1_ratio = settings.get("l1_ratio", DEFAULTS.l1_ratio)
    chosen = resolve_strategy(model, l1_ratio, squared_hinge, settings) if strategy == "auto" else strategy
    unused = unused_settings(chosen, settings, settings.get("warm_start_epochs", 0))
    if unused:
        how = chosen
        if strategy == "auto":
            smooth = resolve_strategy(model, l1_ratio, squared_hinge) == "lbfgs"
            how = (f"{chosen}, which {spell('strategy')} auto chose "
                   f"({'for the SGD settings given' if smooth else 'as the objective is not smooth'})")
        problems = "; ".join(f"{spell(n)} is for {_home(n, spell)}" for n in unused)
        raise ArgumentError(f"{', '.join(spell(n) for n in unused)} not used by strategy {how}: {problems}")
    return TrainConfig(strategy=chosen, **settings).validate()
