"""Compiled kernels: numba's ``njit`` with an on-disk cache, compiled on first use.

Hot loops (matrix-factorization row solves, DSGD updates, text parsers) are written once
as plain Python functions on numpy arrays and decorated with :func:`kernel`. The first call
imports numba and compiles the function; the machine code is cached beside the module
(``__pycache__``, or numba's user-wide cache when that is not writable), so later runs and
the other ranks load it instead of compiling again.

Ranks of a job that starts on a cold cache compile the same kernels at the same moment.
numba names a new cache entry by reading the cache's index, taking the first free number
and writing the index back, with no lock between processes: two ranks compiling two
signatures at once could take the same number, and a later run would load one signature's
machine code for the other's arguments ("can't unbox array from PyObject", seen in CI).
So a compile here holds an exclusive ``flock`` on a file beside the kernel's index in the
cache's folder; the ranks take turns on a kernel, and all but the first read the first
one's machine code from the cache.

``MPIML_KERNELS=numpy`` makes every caller take its numpy reference path instead (the
slow, obviously-correct one each fast path is tested against); :func:`compiled` says which
path is in force.
"""

from __future__ import annotations

import contextlib
import functools
import os
import tempfile
import threading

ENV = "MPIML_KERNELS"
CHOICES = ("auto", "numba", "numpy")
LOCK_NAME = "mpiml-compile.lock"

# flock is per open file: a second open of a lock this process holds would wait on itself, so
# only the outermost compile under each lock file takes it (and lets it go).
_in_process = threading.RLock()
_held: set = set()   # the lock files this process holds


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

            dispatcher = numba.njit(cache=True, nogil=True, **options)(fn)
            dispatcher.compile = _locked(dispatcher, dispatcher.compile)
            compiled_fn = dispatcher
        return compiled_fn(*args)

    call.py_func = fn
    return call


def _locked(dispatcher, compile_one):
    """``compile_one`` (numba's load-or-compile-then-save of one signature) under the cache's lock."""

    cache = getattr(dispatcher, "_cache", None)
    # One lock per kernel (beside numba's index of it): the race is within one index, and ranks compiling
    # different kernels need not wait for each other. numba's internals moved: fall back to the folder.
    index = getattr(getattr(cache, "_cache_file", None), "_index_path", None)
    folder, name = (os.path.split(index + ".lock") if index else
                    (getattr(cache, "_cache_path", None), LOCK_NAME))

    @functools.wraps(compile_one)
    def compile_locked(sig):
        with _cache_lock(folder, name):
            return compile_one(sig)

    return compile_locked


@contextlib.contextmanager
def _cache_lock(folder, name=LOCK_NAME):
    """Hold an exclusive lock (the file ``name`` in ``folder``) shared by every process using that cache.

    Best effort: where the file cannot be made or locked (a read-only folder, a file system
    without ``flock``), a node-local lock is tried and then none, which is numba's own
    behaviour; a compile never fails for want of a lock.
    """
    key = (folder, name)
    with _in_process:
        if key in _held:   # a compile inside one under this lock: the outer one holds it
            yield
            return
        fd = _acquire([folder, tempfile.gettempdir()] if folder else [tempfile.gettempdir()], name)
        _held.add(key)
        try:
            yield
        finally:
            _held.discard(key)
            if fd is not None:
                os.close(fd)  # closing the file releases its lock


def _acquire(folders, name):
    try:
        import fcntl
    except ImportError:  # no flock on this platform
        return None
    for folder in folders:
        try:
            os.makedirs(folder, exist_ok=True)
            fd = os.open(os.path.join(folder, name), os.O_RDWR | os.O_CREAT, 0o666)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            os.close(fd)
            continue
        return fd
    return None
