"""The update step: first-order optimizers, learning-rate schedules and the elastic-net penalty.

All are pure in-place updates of a parameter vector or of any block of it (they act
coordinate-wise), so a rank holding one block of a model updates it as the whole model
would be. An optimizer's whole state is a dict of numpy arrays (``state``), so a
checkpoint can store it as ``.npz`` entries and a resumed run continues bitwise where it stopped.
"""

from __future__ import annotations

import math

import numpy as np

from mpiml.errors import ArgumentError

OPTIMIZERS = ("sgd", "adagrad", "adam")
SCHEDULES = ("constant", "inverse", "sqrt", "cosine")


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


class Optimizer:
    """Base: ``step(theta, grad, lr)`` updates ``theta`` in place."""

    def __init__(self, n: int):
        self.state: dict[str, np.ndarray] = {}

    def step(self, theta: np.ndarray, grad: np.ndarray, lr: float) -> None:
        raise NotImplementedError


class SGD(Optimizer):
    """Plain SGD, with heavy-ball momentum or Nesterov momentum (``v = mu v + g``)."""

    def __init__(self, n, momentum=0.0, nesterov=False):
        super().__init__(n)
        if not 0.0 <= momentum < 1.0:
            raise ArgumentError(f"momentum must be in [0, 1), got {momentum}")
        if nesterov and momentum == 0.0:
            raise ArgumentError("nesterov needs a momentum > 0")
        self.momentum, self.nesterov = float(momentum), bool(nesterov)
        if self.momentum:
            self.state["velocity"] = np.zeros(n)

    def step(self, theta, grad, lr):
        if not self.momentum:
            theta -= lr * grad
            return
        v = self.state["velocity"]
        v *= self.momentum
        v += grad
        theta -= lr * (grad + self.momentum * v if self.nesterov else v)


class AdaGrad(Optimizer):
    """AdaGrad: per-coordinate steps ``lr / (sqrt(sum g^2) + eps)``."""

    def __init__(self, n, eps=1e-8):
        super().__init__(n)
        self.eps = float(eps)
        self.state["sum_squares"] = np.zeros(n)

    def step(self, theta, grad, lr):
        acc = self.state["sum_squares"]
        acc += grad * grad
        theta -= lr * grad / (np.sqrt(acc) + self.eps)


class Adam(Optimizer):
    """Adam (Kingma and Ba) with bias correction."""

    def __init__(self, n, beta1=0.9, beta2=0.999, eps=1e-8):
        super().__init__(n)
        self.beta1, self.beta2, self.eps = float(beta1), float(beta2), float(eps)
        self.state.update(m=np.zeros(n), v=np.zeros(n), t=np.zeros(1))

    def step(self, theta, grad, lr):
        m, v, t = self.state["m"], self.state["v"], self.state["t"]
        t += 1
        m *= self.beta1
        m += (1.0 - self.beta1) * grad
        v *= self.beta2
        v += (1.0 - self.beta2) * grad * grad
        m_hat = m / (1.0 - self.beta1 ** t[0])
        v_hat = v / (1.0 - self.beta2 ** t[0])
        theta -= lr * m_hat / (np.sqrt(v_hat) + self.eps)


def make_optimizer(name: str, n: int, momentum: float = 0.0, nesterov: bool = False) -> Optimizer:
    """Optimizer ``name`` (one of :data:`OPTIMIZERS`) for ``n`` parameters."""
    if name == "sgd":
        return SGD(n, momentum, nesterov)
    if momentum or nesterov:
        raise ArgumentError(f"momentum/nesterov apply to the 'sgd' optimizer, not {name!r}")
    if name == "adagrad":
        return AdaGrad(n)
    if name == "adam":
        return Adam(n)
    raise ArgumentError(f"unknown optimizer {name!r}; choose from {', '.join(OPTIMIZERS)}")


def learning_rate(schedule: str, lr0: float, step: int, total_steps: int, decay: float = 0.0) -> float:
    """The learning rate at update ``step`` (0-based) of ``total_steps``.

    ``constant``: ``lr0``; ``inverse``: ``lr0 / (1 + decay * step)``; ``sqrt``:
    ``lr0 / sqrt(1 + decay * step)``; ``cosine``: from ``lr0`` down to 0 over the run.
    """
    if schedule == "constant":
        return lr0
    if schedule == "inverse":
        return lr0 / (1.0 + decay * step)
    if schedule == "sqrt":
        return lr0 / math.sqrt(1.0 + decay * step)
    if schedule == "cosine":
        return 0.5 * lr0 * (1.0 + math.cos(math.pi * min(step, total_steps) / max(total_steps, 1)))
    raise ArgumentError(f"unknown schedule {schedule!r}; choose from {', '.join(SCHEDULES)}")
