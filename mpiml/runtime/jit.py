"""Compiled kernels: numba's ``njit`` with an on-disk cache, compiled on first use.

Hot loops (matrix-factorization row solves, DSGD updates, text parsers) are written once
as plain Python functions on numpy arrays and decorated with :func:`kernel`. The first call
imports numba and compiles the function; the machine code is cached beside the module
(``__pycache__``, or numba's user-wide cache when that is not writable), so later runs and
the other ranks load it instead of compiling again.

``MPIML_KERNELS=numpy`` makes every caller take its numpy reference path instead (the
slow, obviously-correct one each fast path is tested against); :func:`compiled` says which
path is in force.
"""

from __future__ import annotations

import functools
import os

ENV = "MPIML_KERNELS"
CHOICES = ("auto", "numba", "numpy")


def compiled() -> bool:
    """True when the compiled kernels are to be used (numba importable, not switched off)."""
    raw = os.environ.get(ENV)
    if raw is None:   # the common case, asked several times per training update: no parsing
        return _numba_available()
    choice = raw.strip().lower() or "auto"
    if choice not in CHOICES:
        from mpiml.errors import ArgumentError

        raise ArgumentError(f"{ENV} must be one of {', '.join(CHOICES)}, got {choice!r}")
    if choice == "numpy":
        return False
    return _numba_available() or _required(choice)


@functools.lru_cache(maxsize=None)
def _numba_available() -> bool:
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


def _required(choice: str) -> bool:
    if choice == "numba":
        from mpiml.errors import ArgumentError

        raise ArgumentError(f"{ENV}=numba but numba cannot be imported: pip install numba")
    return False


def kernel(fn=None, **options):
    """Decorate a function to be compiled by ``numba.njit(cache=True, nogil=True)`` on first call.

    The plain Python function stays reachable as ``.py_func`` (for tests and debugging).
    Extra ``options`` go to ``njit`` (e.g. ``fastmath=True``; default off, so results
    follow IEEE arithmetic like the numpy references).
    """
    if fn is None:
        return functools.partial(kernel, **options)
    compiled_fn = None

    @functools.wraps(fn)
    def call(*args):
        nonlocal compiled_fn
        if compiled_fn is None:
            import numba

            compiled_fn = numba.njit(cache=True, nogil=True, **options)(fn)
        return compiled_fn(*args)

    call.py_func = fn
    return call
