"""Full-batch L-BFGS with scikit-learn's stopping rule, as the ``lbfgs`` strategy runs it.

``scipy.optimize`` is imported with this module (about 0.8 s), not inside a timed fit:
the estimator imports it when it is built for ``lbfgs``.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize

# As scikit-learn's LogisticRegression(solver="lbfgs") calls scipy: gtol is the user's tol,
# ftol a few ulps (a relative decrease that small is noise), 50 line-search steps, 10 pairs.
FTOL = 64 * np.finfo(float).eps
MAXLS = 50
MAXCOR = 10


def options(max_iter: int, tol: float) -> dict:
    """The ``scipy.optimize.minimize(method="L-BFGS-B")`` options for ``max_iter`` and ``tol``."""
    return {"maxiter": int(max_iter), "maxls": MAXLS, "maxcor": MAXCOR, "gtol": float(tol), "ftol": FTOL}


def run(objective, theta0, max_iter: int, tol: float, callback=None):
    """Minimize ``objective(theta) -> (value, gradient)`` from ``theta0``; scipy's result."""
    return minimize(objective, theta0, jac=True, method="L-BFGS-B", callback=callback,
                    options=options(max_iter, tol))
