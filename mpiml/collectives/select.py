"""The one place that decides which algorithm ``algorithm="auto"`` runs.

The candidates are the algorithms registered for the collective
(:mod:`mpiml.collectives.registry`) that run at this rank count (``supports``). The rule,
in order:

1. One rank: any (the call is a local copy). A non-commutative operator excludes the
   algorithms registered ``commutative_only`` (``ring``, ``rabenseifner``); for
   allreduce and reduce_scatter it means ``native``.
2. A tuning file, if one is in use (:func:`set_tuning`, else the ``MPIML_TUNING``
   environment variable), that has rules for this collective and rank count: the
   algorithm measured fastest for this size range.
3. A tuning whose parameters have two links (``intra_alpha``/``intra_beta`` set: ``mpiml
   tune`` measured inside a node and between nodes) on a communicator that spans more than
   one node (real nodes, or emulated by ``MPIML_RANKS_PER_NODE``): the node model
   (:func:`mpiml.collectives.model_nodes.winner`), which prices every algorithm, flat and
   node-aware, on the communicator's layout (the ranks per node) with the same margin
   for ``native`` as below.
4. Otherwise the cost model (:mod:`mpiml.collectives.model`: each algorithm's registered
   cost formula, with the tuning file's calibrated parameters if it has them, else the
   defaults measured on a 2-core node): the algorithm predicted fastest (ties go to the
   one registered first), where a hand-written one must be predicted at
   least 3% (``NATIVE_MARGIN``) faster than ``native`` to be picked (the library is
   the safer choice where the model cannot tell them apart). With the defaults this
   gives ``native`` for small messages (a Python step costs 2-4 us, the library's
   whole small allreduce about 3 us) and the bandwidth-optimal algorithms for large
   ones, whose out-of-place ``native`` pays an extra copy and, from 32 MiB, fresh page
   faults. For allreduce at p = 2: ``native`` below about 1 KiB, ``recursive_doubling``
   to about 85 KiB, ``ring`` above; ``mpiml model`` prints the table for any p.

Decisions are computed once per (collective, rank count or node layout, operator kind,
tuning) as a table of size ranges, so an ``auto`` call costs a dictionary lookup and a
bisection; the tables are dropped whenever an algorithm is registered or removed.

The node layout reaches the tables through :func:`enter`, which the collectives call with
the communicator's context before they parse their arguments, and only while the tuning in
use has two links (:data:`keyed`); it is computed once per communicator (collective then:
:func:`mpiml.collectives.nodes.layout`, cached in the context per emulated node size) and is
the same on every rank (``MPIML_RANKS_PER_NODE`` is read then). ``allreduce_many`` chooses
its buckets' algorithms on the rank count only (rule 4).

Every rank must see the same tuning file (as with ``MPIML_TUNING`` set for the whole
job); ``check=True`` verifies that all ranks chose the same algorithm.
"""

from __future__ import annotations

import bisect
import os

from mpiml.collectives import model, registry
from mpiml.collectives.registry import ALGORITHMS
from mpiml.collectives.tuning import Tuning, load_tuning
from mpiml.errors import ArgumentError
from mpiml.runtime.watchdog import CALLS as _CALLS

# A hand-written algorithm replaces native only if predicted at most this fraction of its time.
NATIVE_MARGIN = 0.97
# The model's decision tables cover messages up to this size (larger ones use the last range).
MAX_MODEL_BYTES = 1 << 40

_explicit: Tuning | None = None
_explicit_set = False
_environment_path: str | None = None   # MPIML_TUNING as last read
_from_environment: Tuning | None = None
_tables: dict = {}
_accepted: set = set()  # (collective, name, commutative, size) that choose() accepted
MAX_ACCEPTED = 4096
registry.on_change(_tables.clear)
registry.on_change(_accepted.clear)
_tuning_listeners: list = []
# Whether the tuning in use has two links, so that auto keys its choice by the node layout
# (None: not known yet, until the next enter() reads the tuning).
keyed: bool | None = None
# The node layout of the call being parsed, ``(sizes, shares_memory)``, set by enter() and taken by _auto
# within the same collective call (the call counter every public collective bumps first, unchanged).
_entered: list = [None, -1]


def on_tuning_change(callback) -> None:
    """Call ``callback()`` after every :func:`set_tuning` (caches of ``auto``'s choices clear)."""
    _tuning_listeners.append(callback)


def set_tuning(tuning=None) -> Tuning | None:
    """Use a tuning file (a path, a :class:`Tuning`) for ``auto`` in this process.

    ``set_tuning(None)`` goes back to ``MPIML_TUNING`` (or the model when it is unset).
    Call it with the same file on every rank. Returns the tuning now in force.
    """
    global _explicit, _explicit_set, _environment_path, keyed
    if tuning is None:
        _explicit, _explicit_set, _environment_path = None, False, None
    else:
        _explicit = tuning if isinstance(tuning, Tuning) else load_tuning(tuning, ALGORITHMS)
        _explicit_set = True
    keyed, _entered[0] = None, None
    _tables.clear()
    for callback in _tuning_listeners:
        callback()
    return current_tuning()


def current_tuning() -> Tuning | None:
    """The tuning ``auto`` uses now: :func:`set_tuning`'s, else ``MPIML_TUNING``'s, else None.

    ``MPIML_TUNING`` is read at the first decision (and again after ``set_tuning(None)``),
    not on every call: reading the environment costs as much as a small message step.
    """
    global _environment_path, _from_environment
    if _explicit_set:
        return _explicit
    if _environment_path is None:
        path = os.environ.get("MPIML_TUNING", "")
        _from_environment = load_tuning(path, ALGORITHMS) if path else None
        _environment_path = path
    return _from_environment


def choose(collective: str, algorithm: str, nbytes: int, size: int, commutative: bool = True) -> str:
    """The concrete algorithm for ``algorithm`` (a name, or ``"auto"``); refuses unknown
    names, order-dependent algorithms for non-commutative operators, and algorithms that
    do not run at ``size`` ranks."""
    if algorithm == "auto":
        return _auto(collective, nbytes, size, commutative)
    _entered[0] = None   # the call's layout is for its own auto decision only
    key = (collective, algorithm, commutative, size)
    if key in _accepted:  # a set lookup: a named call pays no more than before the registry
        return algorithm
    entry = registry.get(collective, algorithm)  # raises, naming the known algorithms
    if entry.commutative_only and not commutative:
        keep_order = [a.name for a in registry.algorithms(collective) if not a.commutative_only]
        raise ArgumentError(
            f"algorithm {algorithm!r} reorders operands by rank and needs a commutative op; "
            f"use one of {keep_order}"
        )
    if entry.supports is not None and size > 1 and not entry.supports(size):
        raise ArgumentError(f"{collective} algorithm {algorithm!r} does not run at {size} ranks")
    if len(_accepted) >= MAX_ACCEPTED:
        _accepted.clear()
    _accepted.add(key)
    return algorithm


def two_links(tuning) -> bool:
    """Whether ``tuning``'s parameters hold a link inside a node besides the one between nodes."""
    return tuning is not None and tuning.params is not None and tuning.params.intra_alpha is not None


def node_layout(context) -> tuple:
    """``(sizes, shares_memory)`` of a communicator's nodes (ranks per node, in rank order; whether every node
    maps one shared window), made once per communicator and emulated node size (collective the first time)."""
    from mpiml.collectives import nodes

    key = ("node_layout", nodes._override)
    found = context.plans.get(key)
    if found is None:
        from mpi4py import MPI

        layout = nodes.layout(context.comm)
        shares = context.comm.allreduce(bool(layout.shares_memory), op=MPI.LAND)   # the same on every rank
        found = context.plans[key] = (tuple(len(m) for m in layout.grouping.members), shares)
    return found


def enter(context) -> None:
    """Before a collective parses its arguments on ``context``'s communicator: make its node layout the
    key of ``auto``'s next decision when the tuning has two links and the communicator spans several nodes
    (collective the first time: every rank calls it before any argument check can fail)."""
    global keyed
    if keyed is None:
        keyed = two_links(current_tuning())
    if keyed and context.comm.Get_size() > 1:
        layout = node_layout(context)
        _entered[0], _entered[1] = (layout if len(layout[0]) > 1 else None), _CALLS[0]
    else:
        _entered[0] = None


def _auto(collective, nbytes, size, commutative):
    # current_tuning() inlined for the common cases: this runs on every auto call.
    tuning = _explicit if _explicit_set else (
        _from_environment if _environment_path is not None else current_tuning())
    layout = _entered[0]
    if layout is not None:   # a tuning with two links, a communicator over several nodes (enter)
        _entered[0] = None
        if _entered[1] == _CALLS[0] and sum(layout[0]) == size:
            size = layout
    key = (collective, size, commutative, id(tuning))
    table = _tables.get(key)
    if table is None:
        table = _tables[key] = _decision_table(collective, size, commutative, tuning)
    starts, names = table
    return names[bisect.bisect_right(starts, nbytes) - 1]


def candidates(collective: str, commutative: bool = True, size: int | None = None) -> tuple[str, ...]:
    """The registered algorithms ``auto`` may pick for this operator kind (and rank count)."""
    if not commutative and collective in ("allreduce", "reduce_scatter"):
        return ("native",)
    return tuple(a.name for a in registry.algorithms(collective)
                 if (commutative or not a.commutative_only)
                 and (size is None or size <= 1 or a.supports is None or a.supports(size)))


def margin_pick(times: dict) -> str:
    """``auto``'s rule on predicted ``times`` (name -> seconds): the fastest (:func:`model.fastest`), but
    ``native``, where it is among them, unless beaten by :data:`NATIVE_MARGIN`."""
    fastest = model.fastest(times)
    if "native" in times and times[fastest] > NATIVE_MARGIN * times["native"]:
        return "native"
    return fastest


def model_winner(collective: str, nbytes: int, size: int, params=None, commutative: bool = True) -> str:
    """The model's pick: the fastest prediction, native kept unless beaten by the margin."""
    names = candidates(collective, commutative, size)
    return margin_pick({name: model.predict(name, nbytes, size, params, collective=collective) for name in names})


def _decision_table(collective, size, commutative, tuning):
    """``(starts, names)``: from ``starts[i]`` bytes on, ``names[i]`` runs. ``size``: the rank count, or
    ``(sizes, shares_memory)``, a layout of several nodes (rule 3)."""
    layout = size if isinstance(size, tuple) else None
    if layout is not None:
        size = sum(layout[0])
    allowed = candidates(collective, commutative, size)
    if tuning is not None and (collective, size) in tuning.rules:
        starts, names = tuning.rules[(collective, size)]
        return starts, tuple(name if name in allowed else "native" for name in names)
    params = tuning.params if tuning is not None else None
    if layout is not None and two_links(tuning):
        from mpiml.collectives import model_nodes

        def winner(nbytes):
            return model_nodes.winner(collective, nbytes, layout[0], params, commutative=commutative,
                                      shares_memory=layout[1])
    else:
        def winner(nbytes):
            return model_winner(collective, nbytes, size, params, commutative)

    # An empty message is a no-op for every algorithm: it follows the 1-byte decision.
    changes = model.crossovers(winner, 1, MAX_MODEL_BYTES)
    return (0, *(at for at, _, _ in changes)), (winner(1), *(after for _, _, after in changes))
