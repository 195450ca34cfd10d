"""Test-only fault injection: kill one rank at a chosen collective call or checkpoint stage.

``MPIML_FAULT`` (read once, at import) holds comma-separated ``key=value`` pairs:

``rank=R``
    the COMM_WORLD rank that dies (default 0);
``collective=N``
    die on entering the N-th mpiml collective call of this process (1-based);
``stage=NAME[,count=K]``
    die the K-th time (default 1) the process reaches the named stage, e.g. the
    checkpoint stages ``before-write``, ``after-write`` and ``after-rename``.

The process kills itself with SIGKILL, as a lost node would end it: no cleanup, no
message, no flush. Tests use it to sweep kill points deterministically instead of
sleeping and hoping; unset (the normal case) every hook is one boolean test.
"""

from __future__ import annotations

import os
import signal

from mpiml.errors import ArgumentError


def _parse(text: str) -> dict:
    spec = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or key not in ("rank", "collective", "stage", "count"):
            raise ArgumentError(f"MPIML_FAULT: cannot read {item!r} (keys: rank, collective, stage, count)")
        spec[key] = value if key == "stage" else int(value)
    if ("collective" in spec) == ("stage" in spec):
        raise ArgumentError("MPIML_FAULT needs exactly one of collective=N or stage=NAME")
    return spec


_SPEC = _parse(os.environ["MPIML_FAULT"]) if os.environ.get("MPIML_FAULT") else None
ARMED = _SPEC is not None
_seen: dict = {}   # how often each stage was reached


def _world_rank() -> int:
    try:
        from mpi4py import MPI

        if MPI.Is_initialized() and not MPI.Is_finalized():
            return MPI.COMM_WORLD.Get_rank()
    except ImportError:  # pragma: no cover - mpi4py is a dependency
        pass
    for name in ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "SLURM_PROCID"):
        if name in os.environ:
            return int(os.environ[name])
    return 0


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def collective(number: int) -> None:
    """Die if ``number`` (this process's count of mpiml collective calls, the watchdog's
    :data:`~mpiml.runtime.watchdog.CALLS`, this call included) is the armed one."""
    if not ARMED or "collective" not in _SPEC:
        return
    if number == _SPEC["collective"] and _world_rank() == _SPEC.get("rank", 0):
        _die()


def stage(name: str) -> None:
    """Mark reaching stage ``name``; die if it is the armed one."""
    if not ARMED or _SPEC.get("stage") != name:
        return
    _seen[name] = _seen.get(name, 0) + 1
    if _seen[name] == _SPEC.get("count", 1) and _world_rank() == _SPEC.get("rank", 0):
        _die()
