"""A scikit-learn style estimator over the ranks of a communicator.

Every rank calls :meth:`LinearModel.fit` with its own shard; afterwards every rank holds
the same model (``coef_``, ``intercept_``) and can ``predict`` locally. ``score`` is
collective: it combines the rows of all ranks.
"""

from __future__ import annotations

import numpy as np

from mpiml.runtime.errors import ArgumentError, DataError
from mpiml.runtime.files import load_npz, save_npz_atomic
from mpiml.runtime.jit import compiled
from mpiml.sgd import kernels, scaling
from mpiml.sgd.config import resolve
from mpiml.sgd.group import Group
from mpiml.sgd.models import make_model
from mpiml.sgd.trainer import train

MAX_CLASSES = 100_000  # beyond this a label is more likely a mistake than a class


class LinearModel:
    """Distributed linear model trained by SGD strategies or L-BFGS.

    Parameters
    ----------
    model : str
        ``"logistic"``, ``"softmax"``, ``"svm"`` or ``"linear"`` (least squares).
    strategy : str
        ``"auto"`` (default), ``"sync"``, ``"local"``, ``"oneshot"`` or ``"lbfgs"`` (see
        :class:`~mpiml.sgd.config.TrainConfig`). ``auto`` is L-BFGS for a smooth objective unless SGD
        settings are given (:func:`mpiml.sgd.config.resolve_strategy`); ``config.strategy``
        holds the choice.
    comm : mpi4py.MPI.Intracomm, optional
        The ranks that train together (default COMM_WORLD; ``MPI.COMM_SELF`` trains serially).
    algorithm : str
        The allreduce algorithm (``"auto"``, ``"ring"``, ``"native"``, ...).
    allreduce : callable, optional
        Replaces the transport: ``allreduce(x, out=...)`` summing over the ranks of ``comm``.
    n_classes : int, optional
        Softmax classes (default: the largest label on any rank plus one).
    fit_intercept, squared_hinge : bool
    standardize : bool, optional
        Train on features standardized with statistics of all ranks (sparse: scaled
        only); the fitted coefficients apply to the raw features. Default: on for the
        SGD strategies (a step size then fits any feature scale), off for ``lbfgs``
        (which needs no such help and then minimizes scikit-learn's objective).
    checkpoint_dir, resume, stop_at_update, progress, stop_requested
        Passed to :func:`mpiml.sgd.trainer.train`.
    **settings
        Any field of :class:`~mpiml.sgd.config.TrainConfig` (``epochs``, ``batch_size``, ``lr``, ``alpha``, ...);
        one the strategy would not use (``lr`` for ``lbfgs``, ``tol`` for ``sync``) is an
        :class:`~mpiml.runtime.errors.ArgumentError`.

    Attributes
    ----------
    coef_ : numpy.ndarray
        Weights, ``(n_features,)`` or ``(n_features, n_classes)`` for softmax.
    intercept_ : float or numpy.ndarray
    history_ : list of dict
        Per-epoch ``train_loss``, ``train_accuracy``, ``test_loss``, ``test_accuracy``.
    result_ : TrainResult
        With the timings of this rank.
    """

    def __init__(self, model="logistic", strategy="auto", *, comm=None, algorithm="auto", allreduce=None,
                 n_classes=None, fit_intercept=True, squared_hinge=False, checkpoint_dir=None, resume=False,
                 stop_at_update=None, progress=None, stop_requested=None, standardize=None, **settings):
        self.model_name, self.comm, self.algorithm, self.allreduce = model, comm, algorithm, allreduce
        self.n_classes, self.fit_intercept, self.squared_hinge = n_classes, fit_intercept, squared_hinge
        self.checkpoint_dir, self.resume, self.stop_at_update, self.progress = (
            checkpoint_dir, resume, stop_at_update, progress)
        self.stop_requested = stop_requested
        self.config = resolve(strategy, model, squared_hinge, settings)
        self.standardize = self.config.strategy != "lbfgs" if standardize is None else bool(standardize)
        if self.config.strategy == "lbfgs":
            import mpiml.sgd.lbfgs  # noqa: F401  (scipy.optimize: imported now, not inside fit)
        if model != "softmax" and compiled():  # load the compiled loss now too (numba: a second or so)
            kernels.pointwise(kernels.LOGISTIC, np.zeros(1), np.zeros(1), np.zeros(1))

    def _group(self):
        return Group.from_comm(self.comm, self.algorithm, self.allreduce)

    def fit(self, X, y, X_test=None, y_test=None, where=None, where_test=None):
        """Train on this rank's rows ``(X, y)`` (collective: every rank calls it).

        ``where(row) -> (file, line)`` names the origin of a row in error messages.
        """
        group = self._group()
        y = np.asarray(y, dtype=np.float64)
        width = group.bcast_object(X.shape[1])
        error = None if X.shape[1] == width else DataError(
            f"this rank's data has {X.shape[1]} features, rank 0's has {width}")
        group.agree(error)
        stats = np.array([-np.min(y, initial=np.inf), np.max(y, initial=-np.inf)])
        stats = _max_over(group, stats)
        self.negative_label_ = -1.0 if -stats[0] < 0 else 0.0
        classes = self.n_classes or (int(stats[1]) + 1 if np.isfinite(stats[1]) else 2)
        error = None
        try:
            if self.model_name == "softmax" and not self.n_classes and classes > MAX_CLASSES:
                raise DataError(f"the largest label is {stats[1]:g}: more than {MAX_CLASSES} softmax classes; "
                                f"pass n_classes (--classes) if that is really meant")
            self.model_ = make_model(self.model_name, X.shape[1], classes, self.fit_intercept, self.squared_hinge)
        except (ArgumentError, DataError) as exc:
            error = exc
        group.agree(error)
        y_enc = check_labels(self.model_, y, group, where)
        test = None
        if X_test is not None:
            test = (X_test, check_labels(self.model_, np.asarray(y_test, dtype=np.float64), group, where_test))
        if self.standardize:
            mean, scale = scaling.fit_scaler(X, group.allreduce)
            X = scaling.transform(X, mean, scale)
            test = None if test is None else (scaling.transform(test[0], mean, scale), test[1])
        self.result_ = train(self.model_, X, y_enc, self.config, group, test, self.checkpoint_dir, self.resume,
                             self.stop_at_update, self.progress, self.stop_requested)
        self.theta_ = self.result_.theta
        if self.standardize:
            self.theta_ = scaling.unscale(self.model_, self.theta_, mean, scale)
        self.history_ = self.result_.history
        return self

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
        est.model_ = make_model(est.model_name, int(arrays["n_features"]), max(int(arrays["k"]), 2),
                                squared_hinge=est.squared_hinge)
        est.theta_ = arrays["theta"]
        est.negative_label_ = float(arrays["negative_label"])
        est.history_ = []
        return est


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
    group.agree(error)
    return model.encode_labels(y)
