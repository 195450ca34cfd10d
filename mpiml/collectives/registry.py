"""The algorithm registry: per collective, name -> implementation, cost formula, constraints.

Every algorithm of every collective is one :class:`Algorithm` here, added by
:func:`register` (usually as a decorator in its module under
:mod:`mpiml.collectives.algorithms`). Everything that names algorithms reads this table:
the public functions dispatch through it (:mod:`mpiml.collectives.api`), ``auto`` and
the cost model iterate it (:mod:`mpiml.collectives.select`, :mod:`mpiml.collectives.model`),
and so do ``mpiml bench``, ``mpiml tune`` and ``mpiml model``. :data:`ALGORITHMS` is its
read-only view by name.

Calling conventions (what ``run`` receives; ``transport`` is a
:class:`~mpiml.collectives.transport.Transport` with ``rank``, ``size``, ``comm`` and the
point-to-point calls, ``workspace`` a :class:`~mpiml.collectives.workspace.Workspace`).
Arrays are flat, C-contiguous, non-empty and of one dtype; at least two ranks take part
(one rank and empty messages never reach an algorithm):

==============  ======================================================================
collective      ``run(...)``
==============  ======================================================================
allreduce       ``(transport, x, out, op, workspace)``; ``out`` may be ``x`` (in place)
reduce_scatter  ``(transport, x, out, op, counts, workspace)``; ``out``: block ``rank``
allgather       ``(transport, local, out, counts, workspace)``; ``counts``: elements per rank
bcast           ``(transport, buf, root, segment_bytes, workspace)``; ``segment_bytes`` may be None
reduce          ``(transport, x, out, op, root, workspace)``; ``out`` is None off the root
==============  ======================================================================

A cost formula is ``cost(n, p, rates)``: the predicted seconds of one call on ``n``
bytes (float) at ``p >= 2`` ranks, without the fixed ``call_overhead`` every call pays
(see :class:`mpiml.collectives.model.Rates` for what ``rates`` holds).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Callable

from mpiml.errors import ArgumentError

COLLECTIVES = ("allreduce", "reduce_scatter", "allgather", "bcast", "reduce")


@dataclass(frozen=True)
class Algorithm:
    """One registered algorithm of one collective.

    Attributes
    ----------
    collective, name : str
    run : callable
        The implementation, called as the module docstring's table says.
    cost : callable
        ``cost(n, p, rates) -> seconds``, what the model (``auto``, ``mpiml model``) predicts.
    commutative_only : bool
        The algorithm combines operands in an order that depends on the rank, so it
        refuses a non-commutative operator and ``auto`` never gives it one.
    supports : callable or None
        ``supports(p) -> bool``: the rank counts it runs at (None: all). Elsewhere
        ``auto`` skips it and naming it is refused.
    """

    collective: str
    name: str
    run: Callable
    cost: Callable
    commutative_only: bool = False
    supports: Callable[[int], bool] | None = None


_TABLES: dict[str, dict[str, Algorithm]] = {collective: {} for collective in COLLECTIVES}
_listeners: list[Callable[[], None]] = []


def _check_name(collective, name):
    if collective not in _TABLES:
        raise ArgumentError(f"unknown collective {collective!r}; expected one of {list(COLLECTIVES)}")
    if not isinstance(name, str) or not name or name == "auto" or any(c in name for c in ", \t\n="):
        raise ArgumentError(f"algorithm names are non-empty words other than 'auto', got {name!r}")


def register(collective: str, name: str, run: Callable | None = None, *, cost: Callable,
             commutative_only: bool = False, supports: Callable[[int], bool] | None = None,
             replace: bool = False):
    """Add algorithm ``name`` of ``collective``; as a decorator when ``run`` is omitted.

    Parameters
    ----------
    collective : str
        One of :data:`COLLECTIVES`.
    name : str
        What ``algorithm=`` takes; a word, not ``"auto"``.
    run : callable, optional
        The implementation (see the module docstring for its arguments).
    cost : callable
        ``cost(n, p, rates) -> seconds`` (see :mod:`mpiml.collectives.model`).
    commutative_only : bool
        True if the algorithm needs a commutative operator.
    supports : callable, optional
        ``supports(p) -> bool``, the rank counts it runs at.
    replace : bool
        Allow replacing an algorithm of the same name (else that is an error).

    Returns
    -------
    callable
        ``run`` itself (so the decorated function stays usable under its own name).

    Examples
    --------
    >>> @register("allreduce", "my_ring", cost=my_cost, commutative_only=True)  # doctest: +SKIP
    ... def allreduce(transport, x, out, op, workspace):
    ...     ...
    """
    if run is None:
        return lambda function: register(collective, name, function, cost=cost, commutative_only=commutative_only,
                                          supports=supports, replace=replace)
    _check_name(collective, name)
    if not callable(run) or not callable(cost) or (supports is not None and not callable(supports)):
        raise ArgumentError(f"{collective} algorithm {name!r}: run, cost and supports must be callables")
    if name in _TABLES[collective] and not replace:
        raise ArgumentError(f"{collective} algorithm {name!r} is already registered (pass replace=True)")
    _TABLES[collective][name] = Algorithm(collective, name, run, cost, bool(commutative_only), supports)
    _changed()
    return run


def unregister(collective: str, name: str) -> Algorithm:
    """Remove algorithm ``name`` of ``collective`` and return it (tests register and remove toys)."""
    _check_name(collective, name)
    try:
        entry = _TABLES[collective].pop(name)
    except KeyError:
        raise ArgumentError(f"no {collective} algorithm {name!r} is registered") from None
    _changed()
    return entry


def on_change(callback: Callable[[], None]) -> None:
    """Call ``callback()`` after every registration and removal (caches keyed on names clear)."""
    _listeners.append(callback)


def _changed():
    for callback in _listeners:
        callback()


def get(collective: str, name: str) -> Algorithm:
    """The registered algorithm, or an :class:`ArgumentError` naming the known ones."""
    entry = _TABLES.get(collective, {}).get(name)
    if entry is None:
        _check_name(collective, name)
        raise ArgumentError(f"unknown {collective} algorithm {name!r}; expected 'auto' or one of "
                            f"{list(_TABLES[collective])}")
    return entry


def table(collective: str) -> dict[str, Algorithm]:
    """The live name -> :class:`Algorithm` dict of ``collective``, for the per-call path; do not modify it."""
    return _TABLES[collective]


def algorithms(collective: str) -> tuple[Algorithm, ...]:
    """The registered algorithms of ``collective``, in registration order."""
    return tuple(_TABLES[collective].values())


class AlgorithmNames(Mapping):
    """Collective -> tuple of algorithm names, always as registered now (``auto`` not included)."""

    def __getitem__(self, collective):
        return tuple(_TABLES[collective])

    def __iter__(self):
        return iter(COLLECTIVES)

    def __len__(self):
        return len(COLLECTIVES)

    def __repr__(self):
        return repr(dict(self.items()))


ALGORITHMS = AlgorithmNames()
