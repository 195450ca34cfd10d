"""A scikit-learn style estimator over the ranks of a communicator, under any layout of them.

Every rank calls :meth:`LinearModel.fit` with its own shard; afterwards every rank holds
the same model (``coef_``, ``intercept_``) and can ``predict`` locally. ``score`` is
collective: it combines the rows of all ranks. As in scikit-learn, the constructor only
stores its parameters; ``fit`` validates them (the same :class:`~mpiml.errors.ArgumentError`
on every rank) and sets the fitted attributes, whose names end in ``_``.
"""

from __future__ import annotations

import numpy as np

from mpiml.errors import ArgumentError, DataError
from mpiml.parallel import GridComms, make_part, plan, train_grid
from mpiml.parallel.run import check_request, describe
from mpiml.runtime.files import load_npz, save_npz_atomic
from mpiml.sgd import scaling
from mpiml.sgd.models import make_model
from mpiml.sgd.trainer import train
from mpiml.train.config import resolve
from mpiml.train.group import Group
from mpiml.train.reproducible import requested
from mpiml.train.sparse_exchange import dense_algorithm

MAX_CLASSES = 100_000  # beyond this a label is more likely a mistake than a class

_PARAMS = ("model", "strategy", "parallel", "grid", "split", "comm", "algorithm", "allreduce", "n_classes",
           "fit_intercept", "squared_hinge", "standardize", "checkpoint_dir", "resume", "overwrite", "stop_at_update",
           "progress", "stop_requested")


class LinearModel:
    """Distributed linear model trained by SGD strategies or L-BFGS, data- or model-parallel.

    Parameters
    ----------
    model : str
        ``"logistic"``, ``"softmax"``, ``"svm"`` or ``"linear"`` (least squares).
    strategy : str
        ``"auto"`` (default), ``"sync"``, ``"local"``, ``"oneshot"`` or ``"lbfgs"`` (see
        :class:`~mpiml.train.config.TrainConfig`). ``auto`` is L-BFGS for a smooth objective
        unless SGD settings are given (:func:`mpiml.train.config.resolve_strategy`);
        ``config_.strategy`` holds the choice after ``fit``.
    parallel : str
        ``"data"`` (default: every rank holds the whole model), ``"model"`` (features or
        classes split over all ranks), ``"hybrid"`` (rows over R, the model over C) or
        ``"auto"`` (the layout the cost model predicts fastest); see :mod:`mpiml.parallel.run`.
    grid : str, optional
        ``"RxC"`` with ``R * C`` the number of ranks (default: chosen by cost).
    split : str
        What the grid columns split: ``"features"``, ``"classes"`` (softmax) or ``"auto"``.
    comm : mpi4py.MPI.Intracomm, optional
        The ranks that train together (default COMM_WORLD; ``MPI.COMM_SELF`` trains serially).
    algorithm : str
        The allreduce algorithm (``"auto"``, ``"ring"``, ``"native"``, ...).
    allreduce : callable, optional
        Replaces the data-parallel transport: ``allreduce(x, out=...)`` summing over the ranks of ``comm``.
    n_classes : int, optional
        Softmax classes (default: the largest label on any rank plus one).
    fit_intercept, squared_hinge : bool
    standardize : bool, optional
        Train on features standardized with statistics of all ranks (sparse: scaled
        only); the fitted coefficients apply to the raw features. Default: on for the
        SGD strategies (a step size then fits any feature scale), off for ``lbfgs``
        (which needs no such help and then minimizes scikit-learn's objective).
    checkpoint_dir, resume, stop_at_update, progress, stop_requested
        Passed to :func:`mpiml.train.loop.train`. With ``checkpoint_dir``, rank 0 locks the
        directory for the fit, and a checkpoint resumes only a fit of the same settings and
        data (:func:`mpiml.runtime.checkpoint_dir.session`).
    overwrite : bool
        Start afresh in a ``checkpoint_dir`` that holds a checkpoint, replacing it (without
        it, and without ``resume``, such a directory is an error).
    **settings
        Any field of :class:`~mpiml.train.config.TrainConfig` (``epochs``, ``batch_size``, ``lr``,
        ``alpha``, ...); one the strategy would not use (``lr`` for ``lbfgs``, ``tol`` for
        ``sync``) is an :class:`~mpiml.errors.ArgumentError` in ``fit``.

    Attributes
    ----------
    coef_ : numpy.ndarray
        Weights, ``(n_features,)`` or ``(n_features, n_classes)`` for softmax.
    intercept_ : float or numpy.ndarray
    config_ : TrainConfig
        The validated settings, ``auto`` resolved.
    standardize_ : bool
    layout_ : dict
        ``parallel``, ``grid``, ``split`` (and, when a layout was planned, its estimated cost per step).
    history_ : list of dict
        Per-epoch ``train_loss``, ``train_accuracy``, ``test_loss``, ``test_accuracy``.
    result_ : TrainResult
        With the timings of this rank.
    """

    def __init__(self, model="logistic", strategy="auto", *, parallel="data", grid=None, split="auto", comm=None,
                 algorithm="auto", allreduce=None, n_classes=None, fit_intercept=True, squared_hinge=False,
                 standardize=None, checkpoint_dir=None, resume=False, stop_at_update=None, progress=None,
                 stop_requested=None, overwrite=False, **settings):
        self.model, self.strategy = model, strategy
        self.parallel, self.grid, self.split = parallel, grid, split
        self.comm, self.algorithm, self.allreduce = comm, algorithm, allreduce
        self.n_classes, self.fit_intercept, self.squared_hinge = n_classes, fit_intercept, squared_hinge
        self.standardize = standardize
        self.checkpoint_dir, self.resume, self.stop_at_update = checkpoint_dir, resume, stop_at_update
        self.overwrite = overwrite
        self.progress, self.stop_requested = progress, stop_requested
        self.settings = dict(settings)

    def get_params(self, deep=True) -> dict:
        """The constructor's parameters, as given (the training settings among them)."""
        return {**{name: getattr(self, name) for name in _PARAMS}, **self.settings}

    def set_params(self, **params) -> "LinearModel":
        for name, value in params.items():
            if name in _PARAMS:
                setattr(self, name, value)
            else:
                self.settings[name] = value
        return self

    def _group(self):
        return Group.from_comm(self.comm, self.algorithm, self.allreduce)

    def fit(self, X, y, X_test=None, y_test=None, where=None, where_test=None):
        """Train on this rank's rows ``(X, y)`` (collective: every rank calls it).

        ``where(row) -> (file, line)`` names the origin of a row in error messages.
        """
        group = self._group()
        error = config = None
        try:
            config = resolve(self.strategy, self.model, self.squared_hinge, self.settings)
            check_request(self.parallel, self.split)
        except ArgumentError as exc:
            error = exc
        group.agree(error)
        self.config_ = config
        self.standardize_ = config.strategy != "lbfgs" if self.standardize is None else bool(self.standardize)
        y = np.asarray(y, dtype=np.float64)
        model = self.model_ = self._make_model(group, X, y)
        y_enc = check_labels(model, y, group, where)
        test = None
        if X_test is not None:
            test = (X_test, check_labels(model, np.asarray(y_test, dtype=np.float64), group, where_test))
        chosen = None
        self.layout_ = {"parallel": "data", "grid": f"{group.size}x1", "split": "features"}
        if self.parallel != "data" or self.grid:
            chosen, _ = plan(group.comm, X, strategy=config.strategy, batch=config.batch_size * config.accumulate,
                             parallel=self.parallel, grid=self.grid, split=self.split, k=model.k)
            self.layout_ = describe(chosen)
        digest = self._digest(group, X, y)  # of the raw rows: standardized ones may differ in the last bits by p
        if self.standardize_:  # statistics of the whole rows, before a grid cuts them into blocks
            exact = _exact_stats(group) if requested(config.reproducible) else None
            mean, scale = scaling.fit_scaler(X, group.allreduce, exact)
            X = scaling.transform(X, mean, scale)
            test = None if test is None else (scaling.transform(test[0], mean, scale), test[1])
        with self._checkpoints(group, model, digest) as directory:
            options = (directory, self.resume, self.stop_at_update, self.progress, self.stop_requested)
            if chosen is None or chosen.cols == 1:
                self.result_ = train(model, X, y_enc, config, group, test, *options)
            else:
                self.result_ = self._fit_grid(group, chosen, X, y_enc, test, options)
        self.theta_ = self.result_.theta
        if self.standardize_:
            self.theta_ = scaling.unscale(model, self.theta_, mean, scale)
        self.history_ = self.result_.history
        return self

    def _digest(self, group, X, y):
        """The content hash of every rank's training rows, when checkpoints need it (collective)."""
        from mpiml.runtime.fingerprint import rows_digest

        return None if self.checkpoint_dir is None else rows_digest(X, y, group.comm)

    def _checkpoints(self, group, model, digest):
        """The checkpoint session of this fit: the directory locked, the run's fingerprint (collective)."""
        from mpiml.runtime.checkpoint_dir import session

        settings = {"classes": int(model.k), "fit_intercept": bool(self.fit_intercept),
                    "squared_hinge": bool(self.squared_hinge), "standardize": bool(self.standardize_)}
        return session(self.checkpoint_dir, "sgd", {"settings": settings, "data": digest}, bool(self.resume),
                       bool(self.overwrite), group.comm)

    def _make_model(self, group, X, y):
        """The model for rows of this width and these labels (the same on every rank, or an agreed error)."""
        width = group.bcast_object(X.shape[1])
        group.agree(None if X.shape[1] == width else DataError(
            f"this rank's data has {X.shape[1]} features, rank 0's has {width}"))
        stats = _max_over(group, np.array([-np.min(y, initial=np.inf), np.max(y, initial=-np.inf)]))
        self.negative_label_ = -1.0 if -stats[0] < 0 else 0.0
        classes = self.n_classes or (int(stats[1]) + 1 if np.isfinite(stats[1]) else 2)
        error = model = None
        try:
            if self.model == "softmax" and not self.n_classes and classes > MAX_CLASSES:
                raise DataError(f"the largest label is {stats[1]:g}: more than {MAX_CLASSES} softmax classes; "
                                f"pass n_classes (--classes) if that is really meant")
            model = make_model(self.model, X.shape[1], classes, self.fit_intercept, self.squared_hinge)
        except (ArgumentError, DataError) as exc:
            error = exc
        group.agree(error)
        return model

    def _fit_grid(self, group, chosen, X, y, test, options):
        """Lay the rows out on the grid ``chosen`` (:func:`mpiml.data.columns.to_grid`) and train there."""
        from mpiml.data.columns import to_grid
        from mpiml.data.shard import Shard

        model = self.model_
        comms = GridComms.split(group.comm, chosen.rows, chosen.cols, dense_algorithm(self.algorithm))
        try:
            part = make_part(chosen.split, model.n_features, model.k, chosen.cols, comms.col)
            mine = to_grid(Shard(X, y), comms, chosen.split)
            if test is not None:
                held = to_grid(Shard(*test), comms, chosen.split)
                test = (held.X, held.y.astype(y.dtype))
            return train_grid(model, part, mine.X, mine.y.astype(y.dtype), self.config_, comms, test, *options)
        finally:
            comms.free()

    @property
    def coef_(self):
        W, _ = self.model_.split(self.theta_)
        return W[:, 0].copy() if self.model_.k == 1 else W.copy()

    @property
    def intercept_(self):
        _, b = self.model_.split(self.theta_)
        return float(b[0]) if self.model_.k == 1 else b.copy()

    def decision_function(self, X):
        s = self.model_.scores(self.theta_, X)
        return s[:, 0] if self.model_.k == 1 else s

    def predict(self, X):
        """Labels (classifiers, in the label convention of the training data) or values."""
        pred = self.model_.predict_encoded(self.theta_, X)
        if self.model_.name in ("logistic", "svm"):
            return np.where(pred > 0, 1.0, self.negative_label_)
        return pred

    def predict_proba(self, X):
        if not hasattr(self.model_, "predict_proba"):
            raise ArgumentError(f"{self.model_.name} gives no probabilities")
        return self.model_.predict_proba(self.theta_, X)

    def score(self, X, y):
        """Accuracy (classifiers) or R^2 (linear) over the rows of every rank (collective)."""
        group = self._group()
        y = np.asarray(y, dtype=np.float64)
        if self.model_.classifier:
            buf = np.array([np.count_nonzero(self.predict(X) == y), len(y)], dtype=np.float64)
            group.allreduce(buf, out=buf)
            return buf[0] / max(buf[1], 1.0)
        r = self.predict(X) - y
        buf = np.array([r @ r, y.sum(), y @ y, len(y)])
        group.allreduce(buf, out=buf)
        total = buf[2] - buf[1] ** 2 / max(buf[3], 1.0)
        return 1.0 - buf[0] / total if total > 0 else 0.0

    def save(self, path):
        """Write the model to ``path`` (``.npz``, atomically, on rank 0 of ``comm``)."""
        if self._group().rank == 0:
            save_npz_atomic(path, theta=self.theta_, model=np.array(self.model_.name),
                            n_features=np.array(self.model_.n_features), k=np.array(self.model_.k),
                            negative_label=np.array(self.negative_label_),
                            squared_hinge=np.array(self.squared_hinge))

    @classmethod
    def load(cls, path, comm=None):
        """A fitted model read from :meth:`save`'s file (no pickle)."""
        arrays = load_npz(path)
        est = cls(str(arrays["model"]), comm=comm, squared_hinge=bool(arrays["squared_hinge"]))
        est.model_ = make_model(est.model, int(arrays["n_features"]), max(int(arrays["k"]), 2),
                                squared_hinge=est.squared_hinge)
        est.theta_ = arrays["theta"]
        est.negative_label_ = float(arrays["negative_label"])
        est.history_ = []
        return est


def _exact_stats(group):
    """Reproducible mode's standardization statistics: exact column sums over every rank."""
    from mpiml.train.reproducible import column_stats

    def stats(X):
        rows = group.exscan_count(X.shape[0])[1]
        return (*column_stats(X, group.maximum, group.allreduce, max(rows, 1)), rows)

    return stats


def _max_over(group, values):
    """Elementwise max over ranks of a small array, with the sum-only allreduce."""
    buf = np.zeros((group.size, len(values)))
    buf[group.rank] = values
    group.allreduce(buf, out=buf)
    return buf.max(axis=0)


def check_labels(model, y, group, where=None):
    """Encoded labels; a label the model cannot take is a DataError on every rank."""
    bad = model.bad_label(y)
    error = None
    if bad is not None:
        path, line = where(bad) if where is not None else (None, None)
        what = f"label {float(y[bad]):g} is not valid for the {model.name} model"
        hint = {"logistic": "expects 0/1 or -1/1", "svm": "expects 0/1 or -1/1",
                "softmax": f"expects integers 0..{model.k - 1}", "linear": "expects finite numbers"}[model.name]
        if path is None:
            what += f" (row {bad} of this rank)"
        error = DataError(f"{what}: {hint}", path, line)
    if model.name in ("logistic", "svm"):  # -1 and 0 both mean the negative class: a mix is no binary label set
        from mpiml.runtime.comm import private_comm

        y = np.asarray(y)
        mine = (bool((y == -1).any()), bool((y == 0).any()))
        seen = [mine] if group.comm is None else private_comm(group.comm).allgather(mine)  # on every rank
        if error is None and any(m[0] for m in seen) and any(m[1] for m in seen) and mine[0]:
            first = int(np.flatnonzero(y == -1)[0])
            path, line = where(first) if where is not None else (None, None)
            error = DataError(f"labels mix -1 and 0 (label -1 here, 0 elsewhere): the {model.name} model takes "
                              f"0/1 or -1/1", path, line)
    group.agree(error)
    return model.encode_labels(y)
