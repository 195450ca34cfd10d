"""Which ranks share a node: the grouping (pure functions of ranks) and each communicator's
cached node layout (its sub-communicators and shared-memory windows).

A node is the set of ranks ``comm.Split_type(MPI.COMM_TYPE_SHARED)`` puts together. For
tests on one host, ``MPIML_RANKS_PER_NODE=K`` (or :func:`set_ranks_per_node`) emulates
nodes of ``K`` consecutive ranks instead (the last one may be smaller); every rank must
see the same setting. Emulated nodes still share the host's memory, so the shared-memory
algorithms run on them too; on a real cluster leave the setting unset.

The layout of a communicator (:func:`layout`) holds, made once and freed with the
communicator (or at exit):

``local``
    the ranks of this rank's node (node rank 0 is the node's lowest rank, its leader);
``peers``
    the ranks with this rank's node rank on every node (for node rank 0: the leaders);
``window``
    a shared-memory window of the node (:class:`SharedWindow`), made on first use;
``inputs``
    the windows of the arrays :func:`shared_array` handed out (inputs read in place).
"""

from __future__ import annotations

import atexit
import os
import sys
import time
import weakref
from dataclasses import dataclass

import numpy as np
from mpi4py import MPI

from mpiml.collectives.transport import Transport
from mpiml.collectives.workspace import Workspace
from mpiml.errors import ArgumentError, MpimlError

ENV = "MPIML_RANKS_PER_NODE"
MIN_WINDOW_BYTES = 1 << 12

_override: int | None = None
_keyval = None
_live: list = []   # layouts not freed yet, freed at exit (before MPI_Finalize)
_layout_listeners: list = []


def on_layout_change(callback) -> None:
    """Call ``callback()`` when :func:`set_ranks_per_node` changes the emulated nodes (plans kept per call
    chose their algorithm on the layout before)."""
    _layout_listeners.append(callback)


def set_ranks_per_node(ranks: int | None = None) -> int | None:
    """Emulate nodes of ``ranks`` consecutive ranks in this process (None: back to
    ``MPIML_RANKS_PER_NODE``, else the real nodes). Call it alike on every rank; returns the previous setting.
    Calls made after it choose their algorithms on the new layout (plans kept by earlier calls are dropped)."""
    global _override
    if ranks is not None and (isinstance(ranks, bool) or int(ranks) != ranks or ranks < 1):
        raise ArgumentError(f"ranks per node must be a positive integer, got {ranks!r}")
    previous, _override = _override, None if ranks is None else int(ranks)
    if previous != _override:
        for callback in _layout_listeners:
            callback()
    return previous


def ranks_per_node() -> int | None:
    """The emulated node size in force (:func:`set_ranks_per_node`, else ``MPIML_RANKS_PER_NODE``), or None."""
    if _override is not None:
        return _override
    value = os.environ.get(ENV, "").strip()
    if not value:
        return None
    try:
        ranks = int(value)
    except ValueError:
        ranks = 0
    if ranks < 1:
        raise ArgumentError(f"{ENV} must be a positive integer, got {value!r}")
    return ranks


@dataclass(frozen=True)
class Grouping:
    """Where a rank sits among the nodes (pure data, no MPI).

    Attributes
    ----------
    node : int
        This rank's node, numbered by the nodes' lowest ranks.
    local_rank : int
        This rank's position on its node (0: the node's leader, its lowest rank).
    members : tuple of tuple of int
        Every node's ranks, in order.
    """

    node: int
    local_rank: int
    members: tuple

    @property
    def nodes(self) -> int:
        return len(self.members)

    @property
    def local_size(self) -> int:
        return len(self.members[self.node])

    @property
    def leaders(self) -> tuple:
        return tuple(m[0] for m in self.members)

    @property
    def slices(self) -> int:
        """How many node ranks drive one slice each of the between-node exchange: the smallest node's size."""
        return min(len(m) for m in self.members)


def grouping_from_nodes(rank: int, node_keys) -> Grouping:
    """The grouping of ``rank`` given each rank's node key (any value equal on one node's ranks)."""
    order, members = {}, []
    for r, key in enumerate(node_keys):
        if key not in order:
            order[key] = len(members)
            members.append([])
        members[order[key]].append(r)
    node = order[node_keys[rank]]
    return Grouping(node, members[node].index(rank), tuple(tuple(m) for m in members))


def grouping(rank: int, size: int, ranks_per_node: int) -> Grouping:
    """The grouping of ``rank`` of ``size`` into emulated nodes of ``ranks_per_node`` consecutive ranks."""
    if not 0 <= rank < size or ranks_per_node < 1:
        raise ArgumentError(f"need 0 <= rank < size and ranks_per_node >= 1, got {rank}, {size}, {ranks_per_node}")
    return grouping_from_nodes(rank, [r // ranks_per_node for r in range(size)])


def slice_bounds(n: int, slices: int) -> list:
    """The element bounds of the ``slices`` blocks a vector of ``n`` is cut into (numpy.array_split order)."""
    from mpiml.collectives.layout import balanced_counts, displacements

    return displacements(balanced_counts(n, slices)).tolist()


def size_class(nbytes: int) -> int:
    """The window half that holds ``nbytes``: the next of 1, 1.25, 1.5, 1.75 times a power of two
    in whole 4 KiB pages (at most 25% unused; a window is reallocated only when a larger message comes)."""
    if nbytes <= MIN_WINDOW_BYTES:
        return MIN_WINDOW_BYTES
    step = max(MIN_WINDOW_BYTES, 1 << ((nbytes - 1).bit_length() - 3))   # a quarter of the power of two below
    return -(-nbytes // step) * step


HEADER_BYTES = 64   # after a segment's areas: its rank's input byte and counters for the current call
POSTED, DONE = 0, 1  # the two counters of a header (int64 at bytes 8..23): inputs published, slice reduced
SPIN_BEFORE_YIELD = 64   # flag reads before a waiting rank gives its core away (ranks may share cores)
NAP_AFTER = 0.05         # seconds of yielding before a waiting rank sleeps between flag reads
# Seconds a rank waits for a node rank's flag before giving up with an error: as long as the mpiml
# commands' watchdog default (a rank may legitimately arrive minutes late; MPIML_TIMEOUT ends a stuck
# job sooner, with every rank's stack).
WAIT_LIMIT = 1800.0


class SharedWindow:
    """An MPI-3 shared-memory window of a node: every node rank's segment, as numpy arrays.

    Each segment holds ``parts`` areas of ``capacity`` bytes (``shared_allreduce``: inputs
    published, results) and a small header after them (:data:`HEADER_BYTES`).
    """

    def __init__(self, comm, capacity: int, parts: int = 1):
        self.capacity, self.parts = capacity, parts
        self.stride = parts * capacity + HEADER_BYTES
        self.win = MPI.Win.Allocate_shared(self.stride, 1, comm=comm)
        self.win.Lock_all(MPI.MODE_NOCHECK)
        self.segments = []
        for r in range(comm.Get_size()):
            buf, _ = self.win.Shared_query(r)
            self.segments.append(np.frombuffer(buf, dtype=np.uint8, count=self.stride))
        self.addresses = [segment.ctypes.data for segment in self.segments]
        # Counters start below every ticket (the caller's barrier publishes the zeros).
        self.segments[comm.Get_rank()][parts * capacity:] = 0
        self._views: dict = {}

    def views(self, count: int, dtype) -> tuple:
        """``(areas, headers, counters)``: per area, each node rank's first ``count`` elements of
        ``dtype`` there; each rank's header (uint8) and its two counters (int64: :data:`POSTED`,
        :data:`DONE`). Made once per (count, dtype)."""
        key = (count, np.dtype(dtype))
        found = self._views.get(key)
        if found is None:
            if len(self._views) > 64:
                self._views.clear()
            nbytes, top = count * key[1].itemsize, self.parts * self.capacity
            headers = [s[top:] for s in self.segments]
            areas = [[s[a * self.capacity:a * self.capacity + nbytes].view(dtype) for s in self.segments]
                     for a in range(self.parts)]
            found = self._views[key] = (areas, headers, [h[8:24].view(np.int64) for h in headers])
        return found

    def free(self) -> None:
        self.segments, self._views = [], {}
        self.win.Unlock_all()
        self.win.Free()


class NodeLayout:
    """A communicator's node grouping and the sub-communicators and window built on it."""

    def __init__(self, comm, ranks_per_node: int | None):
        rank, size = comm.Get_rank(), comm.Get_size()
        if ranks_per_node is None:
            self.local = comm.Split_type(MPI.COMM_TYPE_SHARED, key=rank)
            leader = self.local.bcast(rank, root=0)
            self.grouping = grouping_from_nodes(rank, comm.allgather(leader))
            self.shares_memory = True
        else:
            self.grouping = grouping(rank, size, ranks_per_node)
            self.local = comm.Split(self.grouping.node, rank)
            # An emulated node may span what MPI maps into one window (MPICH with MPIR_CVAR_NOLOCAL=1
            # puts every process in its own domain): then the window algorithms send messages instead.
            domain = comm.Split_type(MPI.COMM_TYPE_SHARED, key=rank)
            leader = domain.bcast(rank, root=0)
            domain.Free()
            self.shares_memory = len(set(self.local.allgather(leader))) == 1
        self.peers = comm.Split(self.grouping.local_rank, rank)
        self.local_transport, self.local_workspace = Transport(self.local), Workspace()
        self.peers_transport, self.peers_workspace = Transport(self.peers), Workspace()
        self.window: SharedWindow | None = None
        self.inputs: list = []    # windows of input_array, kept until the layout is freed (arrays point there)
        self.ticket = 0           # counter values used so far (every node rank counts the same calls alike)
        self._last_input = (lambda: None, 0)   # (weak reference to an input, its input_window)

    def shared(self, count: int, dtype) -> tuple:
        """:meth:`SharedWindow.views` of the node's window (two areas: inputs, results) as ``count``
        elements of ``dtype`` (collective on the node: a window too small is freed and one of
        :func:`size_class` made)."""
        nbytes = count * np.dtype(dtype).itemsize
        if self.window is None or self.window.capacity < nbytes:
            if self.window is not None:
                self.window.free()
                self.window = None
            self.window = SharedWindow(self.local, size_class(nbytes), parts=2)
            self.barrier()   # every rank's zeroed counters seen before anyone posts
        return self.window.views(count, dtype)

    def post(self, counters, which: int, value: int) -> None:
        """Set this rank's counter ``which`` to ``value`` after its writes so far (a Win_sync first:
        the MPI-3 shared-memory model's store-store ordering between data and flag)."""
        self.sync()
        counters[self.grouping.local_rank][which] = value

    def wait(self, counters, which: int, ranks, value: int) -> None:
        """Wait until counter ``which`` of every node rank in ``ranks`` reaches ``value``, then
        Win_sync (the reads that follow see those ranks' writes before their posts). A spin that
        yields its core after :data:`SPIN_BEFORE_YIELD` reads (:func:`_spin`); an error after :data:`WAIT_LIMIT` s."""
        for r in ranks:
            cell = counters[r]
            if cell[which] < value:
                _spin(cell, which, value, r)
        self.sync()

    def sync(self) -> None:
        """MPI_Win_sync on the node's windows (a memory barrier for the ranks' loads and stores)."""
        if self.window is not None:
            self.window.win.Sync()
        for window in self.inputs:
            window.win.Sync()

    def input_array(self, count: int, dtype) -> np.ndarray:
        """A new array of ``count`` elements of ``dtype`` in this rank's segment of a new window
        of the node (collective on the node); ``shared_memory`` reads it in place. A plain array
        when the node's ranks share no memory (:attr:`shares_memory`)."""
        if not self.shares_memory:
            return np.empty(count, dtype=dtype)
        window = SharedWindow(self.local, size_class(count * np.dtype(dtype).itemsize))
        self.inputs.append(window)
        return window.segments[self.grouping.local_rank][:count * np.dtype(dtype).itemsize].view(dtype)

    def input_window(self, x) -> int:
        """1 + the index of the input window ``x`` starts at this rank's segment of (and fits in), else 0
        (remembered for the last array asked about: an array's memory never moves, and the windows stay)."""
        last, where = self._last_input
        if last() is x:
            return where
        where = 0
        if self.inputs:
            address, j = x.ctypes.data, self.grouping.local_rank
            for index, window in enumerate(self.inputs[:255]):   # the index travels in one byte
                if window.addresses[j] == address and x.nbytes <= window.capacity:
                    where = index + 1
                    break
        try:
            self._last_input = (weakref.ref(x), where)
        except TypeError:   # not weakly referable: asked again next time
            pass
        return where

    def barrier(self) -> None:
        """The node's barrier, with the memory synchronisation the windows' readers need."""
        self.sync()
        self.local.Barrier()
        self.sync()

    def free(self) -> None:
        """Free the window and the sub-communicators (collective on the communicator)."""
        if self in _live:
            _live.remove(self)
        if MPI.Is_finalized():
            return
        for window in (*self.inputs, *([self.window] if self.window is not None else [])):
            window.free()
        self.window, self.inputs = None, []
        for sub in (self.local, self.peers):
            if sub != MPI.COMM_NULL:
                sub.Free()


def _spin(cell, which, value, rank) -> None:
    """Wait for ``cell[which] >= value`` (another process's store): spin, then yield the core, after
    :data:`NAP_AFTER` s nap between reads (a long wait burns no core), after :data:`WAIT_LIMIT` s fail."""
    spins, start, nap = 0, None, False
    while cell[which] < value:
        spins += 1
        if spins < SPIN_BEFORE_YIELD:
            continue
        if spins % 256 == 0:
            now = time.monotonic()
            start = start or now
            nap = now - start > NAP_AFTER
            if now - start > WAIT_LIMIT:
                raise MpimlError(f"shared_memory: node rank {rank} did not arrive within {WAIT_LIMIT:.0f} s "
                                 f"(waiting for counter {which} to reach {value}, it is {int(cell[which])})")
        if nap:
            time.sleep(2e-4)
        else:
            os.sched_yield()   # the rank we wait for may need this core


def _free_layouts(comm, keyval, layouts):
    # Runs when the communicator is freed: free what was built on it.
    for one in layouts.values():
        try:
            one.free()
        except MPI.Exception:
            pass


def layout(comm, ranks_per_node: int | None = -1) -> NodeLayout:
    """The :class:`NodeLayout` of ``comm`` (collective the first time, then cached on ``comm``).

    ``ranks_per_node``: emulated node size; by default :func:`ranks_per_node`'s, None for
    the real nodes.
    """
    global _keyval
    if ranks_per_node == -1:
        ranks_per_node = globals()["ranks_per_node"]()
    if _keyval is None:
        _keyval = MPI.Comm.Create_keyval(delete_fn=_free_layouts)
    layouts = comm.Get_attr(_keyval)
    if layouts is None:
        layouts = {}
        comm.Set_attr(_keyval, layouts)
    one = layouts.get(ranks_per_node)
    if one is None:
        one = layouts[ranks_per_node] = NodeLayout(comm, ranks_per_node)
        if not _live:
            atexit.register(_free_at_exit)
        _live.append(one)
    return one


def _free_at_exit():
    """Free the windows and sub-communicators still alive (those of communicators never freed,
    COMM_WORLD's) before MPI_Finalize; skipped when leaving on an exception, as the other ranks
    may be anywhere and the frees are collective."""
    if getattr(sys, "last_value", None) is not None or MPI.Is_finalized():
        return
    for one in list(_live):
        one.free()


def shared_array(count: int, dtype="float32", comm=None) -> np.ndarray:
    """A 1-D array in memory the other ranks of this node can read (collective on ``comm``).

    An allreduce with ``algorithm="shared_memory"`` whose input is such an array (the
    whole array, from its first element) reads it where it is instead of copying it into
    the node's window first, which saves a copy of about the input's size per call. Any
    rank may pass any array; each rank's choice is seen by the others through the window.
    The memory lives until ``comm`` is freed (or the program ends): drop the array first.

    Parameters
    ----------
    count : int
        Elements; the same on every rank.
    dtype : numpy dtype
    comm : mpi4py.MPI.Intracomm, optional
        Defaults to ``MPI.COMM_WORLD``; the array belongs to this communicator's node layout
        (emulated nodes as set at this call).

    Returns
    -------
    numpy.ndarray
        ``count`` elements, contents undefined.
    """
    from mpiml.runtime.comm import private_comm

    if isinstance(count, bool) or int(count) != count or count < 0:
        raise ArgumentError(f"count must be a non-negative integer, got {count!r}")
    return layout(private_comm(comm)).input_array(int(count), np.dtype(dtype))
