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

from mpiml.runtime.errors import ArgumentError
from mpiml.runtime.jit import compiled
from mpiml.sgd import kernels

MODELS = ("linear", "logistic", "softmax", "svm")


class Penalty:
    """Elastic net ``alpha * ((1 - l1_ratio) / 2 * ||W||^2 + l1_ratio * ||W||_1)``; intercepts are free."""

    def __init__(self, alpha: float = 0.0, l1_ratio: float = 0.0):
        if alpha < 0 or not 0.0 <= l1_ratio <= 1.0:
            raise ArgumentError(f"need alpha >= 0 and 0 <= l1_ratio <= 1, got {alpha}, {l1_ratio}")
        self.alpha, self.l1_ratio = float(alpha), float(l1_ratio)

    @property
    def l2(self) -> float:
        return self.alpha * (1.0 - self.l1_ratio)

    @property
    def l1(self) -> float:
        return self.alpha * self.l1_ratio

    def value(self, w: np.ndarray) -> float:
        """Penalty of the weight part ``w`` (a view of theta without the intercepts)."""
        return 0.5 * self.l2 * float(w @ w) + self.l1 * float(np.abs(w).sum())

    def add_smooth_grad(self, w: np.ndarray, grad_w: np.ndarray) -> None:
        """Add the gradient of the L2 part (the L1 part is handled by :meth:`prox`)."""
        if self.l2:
            grad_w += self.l2 * w

    def prox(self, w: np.ndarray, step: float) -> None:
        """Soft-threshold ``w`` in place: the proximal step of the L1 part."""
        if self.l1:
            shrink = step * self.l1
            np.copyto(w, np.sign(w) * np.maximum(np.abs(w) - shrink, 0.0))


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
        loss, r = self._loss_and_residual(self.scores(theta, X), y)
        gW, gb = self.split(grad)
        gW += XT @ r
        if self.fit_intercept:
            gb += r.sum(axis=0)
        return float(loss)

    def pointwise(self, s, y, r) -> float:
        """Loss sum of the scores ``s`` (one output); the residuals d loss / d s go to ``r``."""
        if compiled() and self.kind is not None:
            return kernels.pointwise(self.kind, s, y, r)
        loss, residual = self._loss_and_residual(s[:, None], y)
        r[:] = residual[:, 0]
        return loss

    def loss(self, theta, X, y) -> float:
        """Sum of the row losses."""
        return float(self._loss_and_residual(self.scores(theta, X), y)[0])

    def correct(self, theta, X, y) -> int:
        """How many rows are classified right (0 for regression)."""
        return int(np.count_nonzero(self.predict_encoded(theta, X) == y)) if self.classifier else 0

    def predict_encoded(self, theta, X):
        """Predictions in the encoded label space of :meth:`encode_labels`."""
        return self.scores(theta, X)[:, 0]

    def bad_label(self, y) -> int | None:
        """Index of the first label this model cannot take, or None."""
        bad = np.flatnonzero(~np.isfinite(y))
        return int(bad[0]) if bad.size else None

    def encode_labels(self, y):
        """Labels as the loss uses them (validated first with :meth:`bad_label`)."""
        return np.asarray(y, dtype=np.float64)

    def decode_labels(self, encoded):
        return encoded

    def _loss_and_residual(self, s, y):
        raise NotImplementedError


class LeastSquares(Model):
    """``0.5 * (x.w + b - y)^2``."""

    name = "linear"
    classifier = False
    kind = kernels.LEAST_SQUARES

    def _loss_and_residual(self, s, y):
        r = s - y[:, None]
        return 0.5 * float((r * r).sum()), r


class _Binary(Model):
    """Binary labels: given as {0, 1} or {-1, 1} (0 and -1 both mean the negative class)."""

    def bad_label(self, y):
        bad = np.flatnonzero(~np.isin(y, (-1.0, 0.0, 1.0)))
        return int(bad[0]) if bad.size else None

    def encode_labels(self, y):
        return (np.asarray(y) > 0).astype(np.float64)

    def predict_encoded(self, theta, X):
        return (self.scores(theta, X)[:, 0] > 0).astype(np.float64)


class Logistic(_Binary):
    """Binary logistic regression: ``log(1 + exp(s)) - y s`` with y in {0, 1}."""

    name = "logistic"
    kind = kernels.LOGISTIC

    def _loss_and_residual(self, s, y):
        s = s[:, 0]
        loss = float((np.logaddexp(0.0, s) - y * s).sum())
        return loss, (expit(s) - y)[:, None]

    def predict_proba(self, theta, X):
        return expit(self.scores(theta, X)[:, 0])


class LinearSVM(_Binary):
    """Linear SVM: hinge ``max(0, 1 - m)`` or squared hinge ``max(0, 1 - m)^2``, ``m = (2y - 1) s``."""

    name = "svm"

    def __init__(self, n_features, n_outputs=1, fit_intercept=True, squared=False):
        super().__init__(n_features, 1, fit_intercept)
        self.squared = bool(squared)
        self.kind = kernels.SQUARED_HINGE if self.squared else kernels.HINGE

    def _loss_and_residual(self, s, y):
        sign = 2.0 * y - 1.0
        slack = np.maximum(0.0, 1.0 - sign * s[:, 0])
        if self.squared:
            return float((slack * slack).sum()), (-2.0 * sign * slack)[:, None]
        return float(slack.sum()), (-sign * (slack > 0))[:, None]


class Softmax(Model):
    """Multinomial logistic regression over ``k`` classes labelled 0 .. k-1."""

    name = "softmax"

    def bad_label(self, y):
        y = np.asarray(y)
        bad = np.flatnonzero(~((y >= 0) & (y < self.k) & (np.mod(y, 1) == 0)))
        return int(bad[0]) if bad.size else None

    def encode_labels(self, y):
        return np.asarray(y).astype(np.int64)

    def _loss_and_residual(self, s, y):
        r = log_softmax(s, axis=1)
        rows = np.arange(s.shape[0])
        loss = -float(r[rows, y].sum())
        np.exp(r, out=r)  # the probabilities, from the log-probabilities already at hand
        r[rows, y] -= 1.0
        return loss, r

    def predict_encoded(self, theta, X):
        return np.argmax(self.scores(theta, X), axis=1)

    def predict_proba(self, theta, X):
        return softmax(self.scores(theta, X), axis=1)


def row_block(X, lo: int, hi: int):
    """Rows ``lo:hi`` of ``X``: ``X`` itself when that is all of it (slicing a CSR matrix copies it)."""
    if lo <= 0 and hi >= X.shape[0]:
        return X
    return X[lo:hi]


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
