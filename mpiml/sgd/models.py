"""Linear models as pure functions of local arrays: loss, gradient and prediction.

Parameters live in one flat float64 vector ``theta`` (so one allreduce moves them):
the weights ``W`` of shape ``(n_features, k)`` in C order, then the ``k`` intercepts.
``k`` is 1 except for softmax (one column per class). ``X`` is a dense
``numpy.ndarray`` or a ``scipy.sparse`` CSR matrix; sparse data is never densified
(``X @ W`` and ``X.T @ R`` work on CSR directly).

Every ``loss_grad`` returns the *sum* of the per-row losses and adds the *sum* of the
per-row gradients to ``grad`` (no averaging, no penalty): sums from the ranks add up
to the sum over the global batch, which the trainer then divides by its size.
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit, log_softmax, softmax

from mpiml.errors import ArgumentError
from mpiml.runtime.jit import compiled
from mpiml.sgd import kernels

MODELS = ("linear", "logistic", "softmax", "svm")


class Model:
    """Base of the linear models: parameter layout, scores, and label checks."""

    name = ""
    classifier = True
    kind = None  # the loss code of mpiml.sgd.kernels.pointwise, if it has one

    def __init__(self, n_features: int, n_outputs: int = 1, fit_intercept: bool = True):
        self.n_features = int(n_features)
        self.k = int(n_outputs)
        self.fit_intercept = bool(fit_intercept)

    @property
    def n_params(self) -> int:
        return (self.n_features + 1) * self.k

    @property
    def n_weights(self) -> int:
        return self.n_features * self.k

    def split(self, theta):
        """Views ``(W, b)`` of ``theta``: weights ``(n_features, k)`` and intercepts ``(k,)``."""
        return theta[: self.n_weights].reshape(self.n_features, self.k), theta[self.n_weights:]

    def weights(self, theta) -> np.ndarray:
        """The penalized part of ``theta`` (all but the intercepts), as a 1-D view."""
        return theta[: self.n_weights]

    def init_params(self) -> np.ndarray:
        return np.zeros(self.n_params)

    def scores(self, theta, X) -> np.ndarray:
        """``X @ W + b`` of shape ``(rows, k)``."""
        W, b = self.split(theta)
        return np.asarray(X @ W) + b

    def loss_grad(self, theta, X, y, grad, XT=None) -> float:
        """Sum of the row losses; adds the sum of the row gradients to ``grad``.

        ``XT`` may hold ``X.T`` made once by a caller evaluating the same rows many times
        (for CSR data each ``X.T`` builds a new CSC object over the same arrays).
        """
        if not X.shape[0]:
            return 0.0
        XT = X.T if XT is None else XT
        if self.k == 1:  # vectors, not (rows, 1) matrices: the cheaper BLAS / sparse kernels
            nw = self.n_weights
            s = X @ theta[:nw]
            s += theta[nw]
            r = np.empty_like(s)
            loss = self.pointwise(s, y, r)
            grad[:nw] += XT @ r
            if self.fit_intercept:
                grad[nw] += r.sum()
            return float(loss)
        loss, r = self.loss_and_residual(self.scores(theta, X), y)
        gW, gb = self.split(grad)
        gW += XT @ r
        if self.fit_intercept:
            gb += r.sum(axis=0)
        return float(loss)

    def pointwise(self, s, y, r) -> float:
        """Loss sum of the scores ``s`` (one output); the residuals d loss / d s go to ``r``."""
        if compiled() and self.kind is not None:
            return kernels.pointwise(self.kind, s, y, r)
        loss, residual = self.reference_loss_and_residual(s[:, None], y)
        r[:] = residual[:, 0]
        return loss

    def loss_and_residual(self, s, y) -> tuple[float, np.ndarray]:
        """Summed loss of the scores ``s`` (``(rows, k)``) and its residual ``d loss / d s`` (the same shape).

        One output with a compiled loss: :func:`mpiml.sgd.kernels.pointwise` (one pass);
        else the numpy reference, :meth:`reference_loss_and_residual`.
        """
        if self.k == 1 and self.kind is not None and compiled():
            r = np.empty(s.shape)
            return float(kernels.pointwise(self.kind, np.ascontiguousarray(s[:, 0]), y, r[:, 0])), r
        loss, r = self.reference_loss_and_residual(s, y)
        return float(loss), r

    def reference_loss_and_residual(self, s, y) -> tuple[float, np.ndarray]:
        """The numpy reference of :meth:`loss_and_residual` (what the compiled kernels are tested against)."""
        losses, r = self.row_loss_and_residual(s, y)
        return float(losses.sum()), r

    def row_loss_and_residual(self, s, y) -> tuple[np.ndarray, np.ndarray]:
        """Each row's loss (``(rows,)``) and the residual ``d loss / d s`` of the scores ``s`` (``(rows, k)``).

        Row by row, so a row's values do not depend on the other rows (reproducible mode sums them exactly).
        """
        raise NotImplementedError

    def row_line_loss(self, z0, u, step: float, y):
        """Row by row at the scores ``z = z0 + step * u`` (``u`` None: ``z0`` itself): ``(z, losses, r, r * u or None)``.

        One output with a compiled loss: :func:`mpiml.sgd.kernels.row_line_pointwise` (one pass; its
        bits may differ from the numpy reference's in the last place, the same on every rank); else
        :meth:`row_loss_and_residual`.
        """
        if self.k == 1 and self.kind is not None and compiled():
            rows = z0.shape[0]
            z, losses, r, ru = np.empty((rows, 1)), np.empty(rows), np.empty((rows, 1)), np.empty((rows, 1))
            direction = z0[:, 0] if u is None else np.ascontiguousarray(u[:, 0])
            kernels.row_line_pointwise(self.kind, np.ascontiguousarray(z0[:, 0]), direction,
                                       0.0 if u is None else float(step), y, z[:, 0], losses, r[:, 0], ru[:, 0])
            return z, losses, r, (None if u is None else ru)
        if u is None:
            z = z0
        else:
            z = np.multiply(u, step)
            z += z0
        losses, r = self.row_loss_and_residual(z, y)
        return z, losses, r, (None if u is None else r * u)

    def line_loss(self, z0, u, step: float, y):
        """The loss at the scores ``z = z0 + step * u`` of a line search: ``(z, loss, r, sum(r * u), r summed over rows)``.

        One output with a compiled loss: :func:`mpiml.sgd.kernels.line_pointwise` (one pass);
        else the numpy reference, :meth:`reference_line_loss`.
        """
        if self.k == 1 and self.kind is not None and compiled():
            z, r = np.empty(z0.shape), np.empty(z0.shape)
            loss, slope, rsum = kernels.line_pointwise(self.kind, np.ascontiguousarray(z0[:, 0]),
                                                       np.ascontiguousarray(u[:, 0]), float(step), y, z[:, 0], r[:, 0])
            return z, float(loss), r, float(slope), np.array([rsum])
        return self.reference_line_loss(z0, u, step, y)

    def reference_line_loss(self, z0, u, step: float, y):
        """The numpy reference of :meth:`line_loss`."""
        z = np.multiply(u, step)
        z += z0
        loss, r = self.reference_loss_and_residual(z, y)
        return z, float(loss), r, float(np.vdot(r, u)), r.sum(axis=0)

    def loss(self, theta, X, y) -> float:
        """Sum of the row losses."""
        return self.loss_and_residual(self.scores(theta, X), y)[0]

    def decide(self, s) -> np.ndarray:
        """Predictions in the encoded label space of :meth:`encode_labels`, from scores ``s``."""
        return s[:, 0]

    def predict_encoded(self, theta, X):
        """Predictions in the encoded label space of :meth:`encode_labels`."""
        return self.decide(self.scores(theta, X))

    def correct_scores(self, s, y) -> int:
        """How many rows with scores ``s`` are classified right (0 for regression)."""
        return int(np.count_nonzero(self.decide(s) == y)) if self.classifier else 0

    def correct(self, theta, X, y) -> int:
        """How many rows are classified right (0 for regression)."""
        return self.correct_scores(self.scores(theta, X), y)

    def evaluate(self, theta, X, y) -> tuple[float, int]:
        """Summed loss and correct predictions of rows ``X``, from one computation of their scores."""
        s = self.scores(theta, X)
        return self.loss_and_residual(s, y)[0], self.correct_scores(s, y)

    def warm(self) -> None:
        """Load the compiled loss now (numba compiles or reads its cache on first use), not in a timed loop."""
        if self.kind is not None:
            kernels.load()

    def bad_label(self, y) -> int | None:
        """Index of the first label this model cannot take, or None."""
        bad = np.flatnonzero(~np.isfinite(y))
        return int(bad[0]) if bad.size else None

    def encode_labels(self, y):
        """Labels as the loss uses them (validated first with :meth:`bad_label`)."""
        return np.asarray(y, dtype=np.float64)

    def decode_labels(self, encoded):
        return encoded


class LeastSquares(Model):
    """``0.5 * (x.w + b - y)^2``."""

    name = "linear"
    classifier = False
    kind = kernels.LEAST_SQUARES

    def reference_loss_and_residual(self, s, y):
        r = s - y[:, None]
        return 0.5 * float((r * r).sum()), r

    def row_loss_and_residual(self, s, y):
        r = s - y[:, None]
        return 0.5 * (r[:, 0] * r[:, 0]), r


class _Binary(Model):
    """Binary labels: given as {0, 1} or {-1, 1} (0 and -1 both mean the negative class)."""

    def bad_label(self, y):
        bad = np.flatnonzero(~np.isin(y, (-1.0, 0.0, 1.0)))
        return int(bad[0]) if bad.size else None

    def encode_labels(self, y):
        return (np.asarray(y) > 0).astype(np.float64)

    def decide(self, s):
        return (s[:, 0] > 0).astype(np.float64)


class Logistic(_Binary):
    """Binary logistic regression: ``log(1 + exp(s)) - y s`` with y in {0, 1}."""

    name = "logistic"
    kind = kernels.LOGISTIC

    def row_loss_and_residual(self, s, y):
        s = s[:, 0]
        return np.logaddexp(0.0, s) - y * s, (expit(s) - y)[:, None]

    def predict_proba(self, theta, X):
        return expit(self.scores(theta, X)[:, 0])


class LinearSVM(_Binary):
    """Linear SVM: hinge ``max(0, 1 - m)`` or squared hinge ``max(0, 1 - m)^2``, ``m = (2y - 1) s``."""

    name = "svm"

    def __init__(self, n_features, n_outputs=1, fit_intercept=True, squared=False):
        super().__init__(n_features, 1, fit_intercept)
        self.squared = bool(squared)
        self.kind = kernels.SQUARED_HINGE if self.squared else kernels.HINGE

    def row_loss_and_residual(self, s, y):
        sign = 2.0 * y - 1.0
        slack = np.maximum(0.0, 1.0 - sign * s[:, 0])
        if self.squared:
            return slack * slack, (-2.0 * sign * slack)[:, None]
        return slack, (-sign * (slack > 0))[:, None]


class Softmax(Model):
    """Multinomial logistic regression over ``k`` classes labelled 0 .. k-1."""

    name = "softmax"

    def bad_label(self, y):
        y = np.asarray(y)
        bad = np.flatnonzero(~((y >= 0) & (y < self.k) & (np.mod(y, 1) == 0)))
        return int(bad[0]) if bad.size else None

    def encode_labels(self, y):
        return np.asarray(y).astype(np.int64)

    def row_loss_and_residual(self, s, y):
        r = log_softmax(s, axis=1)
        rows = np.arange(s.shape[0])
        losses = -r[rows, y]
        np.exp(r, out=r)  # the probabilities, from the log-probabilities already at hand
        r[rows, y] -= 1.0
        return losses, r

    def decide(self, s):
        return np.argmax(s, axis=1)

    def predict_proba(self, theta, X):
        return softmax(self.scores(theta, X), axis=1)


_CLASSES = {"linear": LeastSquares, "logistic": Logistic, "softmax": Softmax, "svm": LinearSVM}


def make_model(name: str, n_features: int, n_classes: int = 2, fit_intercept: bool = True,
               squared_hinge: bool = False) -> Model:
    """The model called ``name`` (one of :data:`MODELS`) for ``n_features`` inputs.

    Parameters
    ----------
    name : str
        ``"linear"`` (least squares), ``"logistic"``, ``"softmax"`` or ``"svm"``.
    n_features : int
        Width of ``X``.
    n_classes : int
        Classes of a softmax model (ignored by the others).
    fit_intercept : bool
        Learn intercepts (else they stay zero).
    squared_hinge : bool
        SVM only: squared hinge instead of hinge.
    """
    if name not in _CLASSES:
        raise ArgumentError(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
    if name == "softmax":
        if n_classes < 2:
            raise ArgumentError(f"softmax needs at least 2 classes, got {n_classes}")
        return Softmax(n_features, n_classes, fit_intercept)
    if name == "svm":
        return LinearSVM(n_features, 1, fit_intercept, squared=squared_hinge)
    return _CLASSES[name](n_features, 1, fit_intercept)
