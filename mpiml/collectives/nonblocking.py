"""Nonblocking collectives: requests progressed by the caller's ``test()`` and ``wait()``.

Three kinds of operation stand behind a :class:`Request`:

- ``native``: the MPI library's own nonblocking collective (``MPI_Iallreduce``,
  ``MPI_Ireduce_scatter``, ``MPI_Iallgatherv``, ``MPI_Ibcast``), with the same datatypes
  and user-defined ops as the blocking ``native`` algorithm (MPICH gave bitwise the
  blocking results at p = 2..5 in our checks; the tests compare them);
- ``ring`` (allreduce, reduce_scatter, allgather), ``recursive_doubling`` and
  ``rabenseifner`` (allreduce): what ``auto`` picks for every message that is not tiny; the
  same steps and reductions as the blocking algorithms, written as generators that
  ``test()`` and ``wait()`` advance in the caller's thread;
- every other registered algorithm runs *unchanged* (the same function as the blocking
  call, hence bitwise the same result) on a helper thread used as a coroutine: its
  transport posts ``Isend``/``Irecv`` and parks the thread until the caller, inside
  ``test()`` or ``wait()``, finds those messages complete and lets it take its next step.

Progress is made only inside mpiml calls (starting a request, ``test()``, ``wait()``):
there is no progress thread. Why (measured with the mpich wheel on the 2-core node): a
thread that calls MPI while the main thread does needs ``MPI_THREAD_MULTIPLE``, under which
every small MPI call runs about 2.3x slower (4 KiB allreduce at p=2: 4.4-5.2 us against
1.8-2.0 us at ``single`` or ``serialized``); and a thread polling MPI competes for the core
the rank computes on: an ALS row solve (a ``nogil`` numba kernel) ran 2.05x slower beside a
thread spinning on ``MPI_Test`` and 1.63x beside one that slept 100 us between tests.
Here exactly one thread is ever inside MPI (a helper runs only while the caller waits for
it), which ``MPI_THREAD_SERIALIZED`` allows; the cost is that messages move only when the
caller calls in, so a job overlaps by calling ``test()`` between pieces of its work (as
:mod:`mpiml.mf.overlap` does between row chunks).

Requests of a communicator share a private duplicate of it (made at its first nonblocking
call) and each uses its own tags (its sequence number, the same on every rank), so any
number may be outstanding and completed in any order, on each rank independently: every
``test()`` and ``wait()`` advances all outstanding requests (of every communicator), so a
rank waiting on one never starves another that its peers wait on.

A request whose result nobody collected (no ``wait()``, no ``test()`` that returned True)
is reported with a :class:`UnwaitedRequestWarning` naming where it was started, when it is
garbage collected or at exit (a normal exit then completes it, so ``MPI_Finalize`` does not
hang; an exit on an uncaught exception does not wait for peers that may never send).
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
import time
import warnings
import weakref

import numpy as np
from mpi4py import MPI

from mpiml.collectives.algorithms.native import message_and_op
from mpiml.collectives.workspace import Workspace
from mpiml.errors import MpimlError
from mpiml.runtime import watchdog as _watchdog

TAG_STRIDE = 256          # the algorithms' own tags are below this
_BYTE = MPI.BYTE


class UnwaitedRequestWarning(RuntimeWarning):
    """A nonblocking collective's request was dropped (or the program ended) before ``wait()``."""


class Request:
    """The handle of a nonblocking collective: ``wait()`` returns its result, ``test()`` polls.

    The input and output arrays belong to the operation until it completes: do not write
    to the input (or read the output) before ``wait()`` returns or ``test()`` gives True.
    """

    __slots__ = ("_op", "_finish", "_result", "_collected", "_site", "__weakref__")

    def __init__(self, op, finish, site):
        self._op, self._finish, self._site = op, finish, site
        self._result = None
        self._collected = False
        _live.add(self)

    def test(self) -> bool:
        """Advance every outstanding request of the communicator; True once this one is complete."""
        if not self._collected:
            op = self._op
            if op is not None and not op.done:
                progress()
            if op is None or op.done:
                self._collect()
        return self._collected

    def wait(self):
        """Complete the operation (advancing the communicator's other requests too) and return its result."""
        if not self._collected:
            op = self._op
            if op is not None and not op.done:
                wait_for(op)
            self._collect()
        return self._result

    @property
    def done(self) -> bool:
        """Whether the result was collected (by ``wait()`` or a ``test()`` that returned True)."""
        return self._collected

    @property
    def site(self) -> str | None:
        """``file:line`` where the request was started (None once reported as never waited on)."""
        return None if self._site is None else str(self._site)

    def _collect(self):
        op = self._op
        self._collected = True
        _live.discard(self)
        if op is not None and op.error is not None:
            error, op.error = op.error, None
            raise error
        self._result = self._finish()
        self._op = self._finish = None

    def __del__(self):
        if not self._collected and self._site is not None and _warn is not None:
            _warn(self._site)


_live: "weakref.WeakSet[Request]" = weakref.WeakSet()


def _report(site):
    """Warn, attributed to the line that started the request."""
    site = str(site)
    where = site.split(" via ")[0]
    filename, _, line = where.rpartition(":")
    warnings.warn_explicit(f"a nonblocking mpiml collective started at {site} was never waited on "
                           "(call wait() on its request, or test() until it returns True)", UnwaitedRequestWarning,
                           filename or where, int(line) if line.isdigit() else 0)


_warn = _report


def report_unwaited() -> int:
    """Warn once about every live request whose result nobody collected; returns how many."""
    count = 0
    for request in list(_live):
        if not request._collected and request._site is not None:
            _report(request._site)
            request._site = None  # reported: not again at garbage collection
            count += 1
    return count


EXIT_PATIENCE = 60.0  # seconds the exit waits for unwaited operations (a peer that never joins one: a bug)


def drain(timeout=None) -> bool:
    """Complete every outstanding operation (their requests, if still held, then return their results);
    with ``timeout`` seconds, give up after that long. Returns whether all completed."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while _outstanding:
        progress()
        if deadline is not None and time.monotonic() > deadline:
            return False
    return True


def _at_exit():
    """Report requests nobody waited on, then complete them so that MPI_Finalize does not hang."""
    global _warn
    report_unwaited()
    _warn = None
    if getattr(sys, "last_value", None) is not None:
        return  # leaving on an uncaught exception: the other ranks may never send what is missing
    if not MPI.Is_finalized() and not drain(EXIT_PATIENCE):
        sys.stderr.write(f"mpiml: {len(_outstanding)} nonblocking collective(s) still incomplete at exit after "
                         f"{EXIT_PATIENCE:.0f} s (did every rank start them?); leaving them\n")


atexit.register(_at_exit)


class Engine:
    """The private duplicate of one communicator that its nonblocking operations use, and their numbering."""

    def __init__(self, comm):
        self.comm = comm.Dup()
        self.size, self.rank = self.comm.Get_size(), self.comm.Get_rank()
        # MPI_TAG_UB is an attribute of COMM_WORLD (Open MPI gives None on other communicators); 32767 is
        # the least the standard allows
        tag_ub = MPI.COMM_WORLD.Get_attr(MPI.TAG_UB) or 32767
        self.slots = max(tag_ub // TAG_STRIDE - 1, 1)
        self.seq = 0

    def next_tag_base(self) -> int:
        """The tag offset of the next request: its sequence number (the same on every rank) in tag space."""
        self.seq += 1
        return (self.seq % self.slots) * TAG_STRIDE


# Every outstanding operation of every communicator, oldest first: each test() and wait() advances
# all of them, so that a rank waiting on one request (on any communicator) never starves another
# request a peer is waiting on.
_outstanding: list = []


def progress() -> None:
    """Let every outstanding operation whose messages have arrived take its next steps."""
    for op in list(_outstanding):
        op.advance()


def wait_for(target) -> None:
    """Advance every outstanding operation until ``target`` is complete.

    It polls (each ``progress()`` tests every operation's messages) rather than sleeping in
    ``MPI_Waitany``: under MPICH that call took milliseconds longer to return than
    ``MPI_Waitall`` on the same messages or this loop (measured: an in-place allgather of
    4 x 312 KB chunks at p=2 waited 12-15 ms in it, 6-9 ms here). ``MPI_Waitall`` itself is
    not safe here: it would not post the next steps of other operations that peers wait on.
    """
    while True:
        progress()
        if target.done:
            return
        if not _outstanding:  # cannot happen: an unfinished operation is outstanding
            raise RuntimeError("mpiml: a nonblocking collective is neither complete nor outstanding")


def _finished(op):
    try:
        _outstanding.remove(op)
    except ValueError:
        pass


class _Operation:
    """An operation in flight: ``pending`` MPI requests; ``advance()`` when they may be complete."""

    pending: list
    done: bool = False
    error: BaseException | None = None
    seq: int = 0


class NativeOperation(_Operation):
    """One MPI-library nonblocking collective."""

    def __init__(self, engine, request, keep):
        self.pending, self._keep = [request], keep  # keep: the buffers MPI reads and writes
        self.seq = engine.seq
        _outstanding.append(self)

    def advance(self):
        if MPI.Request.Testall(self.pending):
            self.done, self.pending, self._keep = True, [], None
            _finished(self)


class GeneratorOperation(_Operation):
    """An algorithm written as a generator of message steps: each ``next()`` posts a step's
    ``Isend``/``Irecv`` and yields their requests. Driven in the caller's thread, no helper."""

    def __init__(self, engine, steps):
        self.pending, self.steps = [], steps
        self.seq = engine.seq
        _outstanding.append(self)
        self.advance()

    def advance(self):
        try:
            while not self.done and MPI.Request.Testall(self.pending):
                self.pending = next(self.steps)
        except StopIteration:
            self._end()
        except BaseException as exc:  # noqa: BLE001 - handed to wait()
            self.error = exc
            self._end()

    def _end(self):
        self.done, self.pending, self.steps = True, [], None
        _finished(self)


class _Helper:
    """A parked thread that runs stepped operations one at a time (kept for the next one: starting a
    thread costs more than a small collective)."""

    def __init__(self):
        self.go, self.back = threading.Lock(), threading.Lock()
        self.go.acquire()
        self.back.acquire()
        self.job = None
        self.workspace = Workspace()  # one operation at a time uses it
        threading.Thread(target=self._loop, daemon=True, name="mpiml-request").start()

    def _loop(self):
        while True:
            self.go.acquire()
            op, run, args = self.job
            self.job = None
            op.run(run, args, self.workspace)
            _idle.append(self)
            self.back.release()


_idle: list = []  # helpers waiting for an operation


class SteppedOperation(_Operation):
    """A registered algorithm run as a coroutine: on a helper thread that runs only while the caller waits for it."""

    def __init__(self, engine, run, args):
        self.pending = []
        self.transport = SteppingTransport(engine, engine.next_tag_base(), self)
        self.seq = engine.seq
        _outstanding.append(self)
        self._helper = helper = _idle.pop() if _idle else _Helper()
        helper.job = (self, run, args)
        helper.go.release()
        helper.back.acquire()  # it runs until its first messages are posted

    def run(self, run, args, workspace):
        """In the helper: the algorithm, to its end."""
        try:
            run(self.transport, *args, workspace)
        except BaseException as exc:  # noqa: BLE001 - handed to wait()
            self.error = exc
        finally:
            self.done, self.pending = True, []
            _finished(self)

    def suspend(self, requests):
        """In the helper: park until the caller finds ``requests`` complete."""
        if MPI.Request.Testall(requests):
            return
        self.pending = requests
        helper = self._helper
        helper.back.release()
        helper.go.acquire()

    def advance(self):
        if not self.done and MPI.Request.Testall(self.pending):
            self.pending = []
            helper = self._helper
            helper.go.release()
            helper.back.acquire()


class SteppingTransport:
    """The :class:`~mpiml.collectives.transport.Transport` calls, nonblocking, each parking its helper thread."""

    def __init__(self, engine, base, op):
        comm = engine.comm
        self.comm, self.rank, self.size = comm, engine.rank, engine.size
        isend, irecv, suspend = comm.Isend, comm.Irecv, op.suspend

        def sendrecv(sendbuf, dest, recvbuf, source, tag):
            suspend([irecv([recvbuf, _BYTE], source, base + tag), isend([sendbuf, _BYTE], dest, base + tag)])

        def send(buf, dest, tag):
            suspend([isend([buf, _BYTE], dest, base + tag)])

        def recv(buf, source, tag):
            suspend([irecv([buf, _BYTE], source, base + tag)])

        def isend_(buf, dest, tag):
            return isend([buf, _BYTE], dest, base + tag)

        self.sendrecv, self.send, self.recv, self.isend = sendrecv, send, recv, isend_
        self.waitall = suspend


# ------------------------------------------------------------------ starting operations
def engine_of(context) -> Engine:
    """The :class:`Engine` of a communicator context (made, collectively, at its first nonblocking call)."""
    engine = context.plans.get("nonblocking")
    if engine is None:
        engine = context.plans["nonblocking"] = Engine(context.comm)
    return engine


def completed(result, site) -> Request:
    """A request that is already complete (one rank, empty messages)."""
    return Request(None, lambda: result, site)


def start(context, collective, name, args, result, site) -> Request:
    """Start ``collective`` with algorithm ``name`` on flat ``args`` (as the registry's ``run`` takes them
    without transport and workspace); the request's ``wait()`` returns ``result()``."""
    engine = engine_of(context)
    if _warn is None:
        raise MpimlError("nonblocking collectives cannot start once the program is exiting")
    if name == "native":
        op = _native(engine, collective, args)
    elif (collective, name) in GENERATORS:
        base = engine.next_tag_base()
        op = GeneratorOperation(engine, GENERATORS[(collective, name)](engine, base, *args))
    else:
        from mpiml.collectives import registry

        op = SteppedOperation(engine, registry.get(collective, name).run, args)
    return Request(op, result, site)


class GroupOperation:
    """Several requests that complete together (the buckets of a fused call)."""

    error = None

    def __init__(self, requests):
        self.ops = [request._op for request in requests if request._op is not None]

    @property
    def done(self) -> bool:
        return all(op.done for op in self.ops)


def gathered(requests, finish, site) -> Request:
    """One request for several internal ones: complete when all are, ``wait()`` returns ``finish()``."""
    for request in requests:
        request._site = None  # internal: only the group is reported if nobody waits
        _live.discard(request)
    return Request(GroupOperation(requests), finish, site)


def _native(engine, collective, args):
    comm = engine.comm
    engine.next_tag_base()  # keeps sequence numbers (and so tags) in step with the stepped requests
    if collective == "allreduce":
        x, out, op = args
        datatype, mpi_op = message_and_op(x, op)
        send = MPI.IN_PLACE if x is out else [x, datatype]
        request = comm.Iallreduce(send, [out, datatype], mpi_op)
    elif collective == "reduce_scatter":
        x, out, op, counts = args
        datatype, mpi_op = message_and_op(x, op)
        request = comm.Ireduce_scatter([x, datatype], [out, datatype], [int(c) for c in counts], mpi_op)
    elif collective == "allgather":
        local, out, counts = args
        itemsize = local.dtype.itemsize
        byte_counts = [int(c) * itemsize for c in counts]
        displs = np.zeros(len(counts), dtype=np.int64)
        np.cumsum(byte_counts[:-1], out=displs[1:])
        request = comm.Iallgatherv([local, _BYTE], [out, (byte_counts, displs.tolist()), _BYTE])
    elif collective == "bcast":
        buf, root, _ = args
        request = comm.Ibcast([buf, _BYTE], root)
    else:
        raise ValueError(f"no nonblocking native {collective}")
    return NativeOperation(engine, request, args)


class Site:
    """Where a request was started, kept as (file, line) pairs and formatted only when reported
    (formatting paths costs more than starting a small request)."""

    __slots__ = ("frames",)

    def __init__(self, frame):
        frames = []
        while frame is not None and len(frames) < 8:
            frames.append((frame.f_code.co_filename, frame.f_lineno))
            if not frame.f_code.co_filename.startswith(_PACKAGE):
                break
            frame = frame.f_back
        self.frames = frames

    def __str__(self):
        """As :func:`mpiml.runtime.watchdog.call_site`: the innermost line outside mpiml's collectives,
        and ``via`` the innermost outside mpiml when that differs."""
        inner = next((f for f in self.frames if not f[0].startswith(_COLLECTIVES)), None)
        if inner is None:
            return "?"
        user = self.frames[-1] if not self.frames[-1][0].startswith(_PACKAGE) else None
        text = _watchdog.where(*inner)
        return text if user is None or user == inner else f"{text} via {_watchdog.where(*user)}"


_COLLECTIVES = os.path.dirname(os.path.abspath(__file__)) + os.sep
_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def call_site(frame) -> Site:
    """Where the user started a request (for the unwaited-request report)."""
    return Site(frame)


_watchdog.watch(Request.wait)


# ------------------------------------------------------------------ algorithms as generators
# The ring, recursive doubling and Rabenseifner algorithms of mpiml.collectives.algorithms, step
# for step (the same schedules, the same operand order in every reduction, hence the same bits;
# the tests compare them with the blocking calls), written as generators so that the caller's
# thread drives them: auto picks them for every message that is not tiny, and a handoff to a
# helper thread costs milliseconds on a loaded node.
def _exchange(engine, base, tag):
    """``post(sendbuf, recvbuf)``: the requests of one ring step (send right, receive from the left)."""
    comm, p, r = engine.comm, engine.size, engine.rank
    right, left, tag = (r + 1) % p, (r - 1) % p, base + tag
    isend, irecv = comm.Isend, comm.Irecv

    def post(sendbuf, recvbuf):
        return [irecv([recvbuf, _BYTE], left, tag), isend([sendbuf, _BYTE], right, tag)]

    return post


def _ring_reduce_scatter_steps(post, x, acc, op, schedule, tmp):
    """As ``ring._reduce_scatter_into``."""
    direct = not np.may_share_memory(acc, x)
    source = x
    for send_lo, send_hi, lo, hi in schedule:
        received = acc[lo:hi] if direct else tmp[: hi - lo]
        yield post(source[send_lo:send_hi], received)
        op(received, x[lo:hi], out=acc[lo:hi])
        source = acc


def _ring_allgather_steps(post, out, schedule):
    """As ``ring._allgather_blocks``."""
    for send_lo, send_hi, recv_lo, recv_hi in schedule:
        yield post(out[send_lo:send_hi], out[recv_lo:recv_hi])


def _ring_allreduce(engine, base, x, out, op):
    from mpiml.collectives.algorithms.ring import TAG_ALLGATHER, TAG_REDUCE_SCATTER, ring_schedule
    from mpiml.collectives.layout import balanced_counts

    counts = balanced_counts(x.size, engine.size)
    tmp = np.empty(int(counts.max()), dtype=x.dtype) if x is out else None
    yield from _ring_reduce_scatter_steps(_exchange(engine, base, TAG_REDUCE_SCATTER), x, out, op,
                                          ring_schedule(counts, engine.rank, 0), tmp)
    yield from _ring_allgather_steps(_exchange(engine, base, TAG_ALLGATHER), out, ring_schedule(counts, engine.rank, 1))


def _ring_reduce_scatter(engine, base, x, out, op, counts):
    from mpiml.collectives.algorithms.ring import TAG_REDUCE_SCATTER, ring_schedule
    from mpiml.collectives.layout import displacements

    bounds = displacements(counts)
    acc = np.empty_like(x)
    yield from _ring_reduce_scatter_steps(_exchange(engine, base, TAG_REDUCE_SCATTER), x, acc, op,
                                          ring_schedule(counts, engine.rank, -1), None)
    np.copyto(out, acc[bounds[engine.rank]:bounds[engine.rank + 1]])


def _ring_allgather(engine, base, local, out, counts):
    from mpiml.collectives.algorithms.ring import TAG_ALLGATHER, ring_schedule
    from mpiml.collectives.layout import displacements

    bounds = displacements(counts)
    np.copyto(out[bounds[engine.rank]:bounds[engine.rank + 1]], local)
    yield from _ring_allgather_steps(_exchange(engine, base, TAG_ALLGATHER), out, ring_schedule(counts, engine.rank, 0))


def _pair(engine, base, tag):
    """``swap(sendbuf, peer, recvbuf)``: the requests of one exchange with ``peer``."""
    comm, tag = engine.comm, base + tag
    isend, irecv = comm.Isend, comm.Irecv

    def swap(sendbuf, peer, recvbuf):
        return [irecv([recvbuf, _BYTE], peer, tag), isend([sendbuf, _BYTE], peer, tag)]

    return swap


def _fold_in(engine, base, x, out, op, tmp):
    """As ``doubling.fold_in``; returns ``(q, virtual_rank, data)``."""
    from mpiml.collectives.algorithms.doubling import TAG_FOLD
    from mpiml.collectives.layout import fold_to_power_of_two

    r, p, comm = engine.rank, engine.size, engine.comm
    q, vrank = fold_to_power_of_two(r, p)
    if r < 2 * (p - q):
        if vrank is None:
            yield [comm.Isend([x, _BYTE], r + 1, base + TAG_FOLD)]
            return q, None, None
        yield [comm.Irecv([tmp, _BYTE], r - 1, base + TAG_FOLD)]
        op(tmp, x, out=out)
        return q, vrank, out
    return q, vrank, x


def _fold_out(engine, base, out, q):
    """As ``doubling.fold_out``."""
    from mpiml.collectives.algorithms.doubling import TAG_UNFOLD

    r, p, comm = engine.rank, engine.size, engine.comm
    if r < 2 * (p - q):
        if r % 2:
            yield [comm.Isend([out, _BYTE], r - 1, base + TAG_UNFOLD)]
        else:
            yield [comm.Irecv([out, _BYTE], r + 1, base + TAG_UNFOLD)]


def _doubling_allreduce(engine, base, x, out, op):
    """As ``doubling.allreduce``, step for step."""
    from mpiml.collectives.algorithms.doubling import TAG_EXCHANGE
    from mpiml.collectives.layout import real_rank

    p = engine.size
    tmp = np.empty(x.size, dtype=x.dtype)
    q, vrank, data = yield from _fold_in(engine, base, x, out, op, tmp)
    if vrank is not None:
        swap = _pair(engine, base, TAG_EXCHANGE)
        fresh = not np.may_share_memory(out, data)
        mask = 1
        while mask < q:
            partner = vrank ^ mask
            received = out if fresh else tmp
            yield swap(data, real_rank(partner, p), received)
            if partner < vrank:
                op(received, data, out=out)
            else:
                op(data, received, out=out)
            data, fresh = out, False
            mask <<= 1
        if data is not out:
            out[...] = data
    yield from _fold_out(engine, base, out, q)


def _rabenseifner_allreduce(engine, base, x, out, op):
    """As ``rabenseifner.allreduce``, step for step."""
    from mpiml.collectives.algorithms.rabenseifner import TAG_DOUBLE, TAG_HALVE, schedule

    tmp = np.empty(x.size, dtype=x.dtype)
    steps = schedule(x.size, engine.size, engine.rank)
    q, vrank, data = yield from _fold_in(engine, base, x, out, op, tmp)
    if steps is not None:
        halving, doubling = steps
        halve, double = _pair(engine, base, TAG_HALVE), _pair(engine, base, TAG_DOUBLE)
        fresh = not np.may_share_memory(out, data)
        for partner, give_lo, give_hi, lo, hi in halving:
            received = out[lo:hi] if fresh else tmp[: hi - lo]
            yield halve(data[give_lo:give_hi], partner, received)
            op(received, data[lo:hi], out=out[lo:hi])
            data, fresh = out, False
        if data is not out:
            out[...] = data
        for partner, mine_lo, mine_hi, theirs_lo, theirs_hi in doubling:
            yield double(out[mine_lo:mine_hi], partner, out[theirs_lo:theirs_hi])
    yield from _fold_out(engine, base, out, q)


GENERATORS = {("allreduce", "ring"): _ring_allreduce, ("reduce_scatter", "ring"): _ring_reduce_scatter,
              ("allgather", "ring"): _ring_allgather, ("allreduce", "recursive_doubling"): _doubling_allreduce,
              ("allreduce", "rabenseifner"): _rabenseifner_allreduce}


def _blocks_schedule(starts, ends, rank: int, shift: int):
    """:func:`~mpiml.collectives.algorithms.ring.ring_schedule` over blocks at arbitrary places."""
    p = len(starts)
    return tuple((starts[(rank + shift - step) % p], ends[(rank + shift - step) % p],
                  starts[(rank + shift - step - 1) % p], ends[(rank + shift - step - 1) % p])
                 for step in range(p - 1))


def _ring_allgather_in_place(engine, base, out, starts, ends):
    from mpiml.collectives.algorithms.ring import TAG_ALLGATHER

    yield from _ring_allgather_steps(_exchange(engine, base, TAG_ALLGATHER), out,
                                     _blocks_schedule(starts, ends, engine.rank, 0))


def start_in_place_allgather(context, out, starts, ends, algorithm, site, result) -> Request:
    """Start the allgather of flat ``out``'s blocks ``starts[r]:ends[r]`` (element offsets; rank ``r``'s block
    filled in on rank ``r``) into the same places on every rank; ``wait()`` returns ``result``."""
    engine = engine_of(context)
    if algorithm == "native":
        engine.next_tag_base()
        itemsize = out.dtype.itemsize
        counts = [(int(e) - int(s)) * itemsize for s, e in zip(starts, ends)]
        displs = [int(s) * itemsize for s in starts]
        op = NativeOperation(engine, engine.comm.Iallgatherv(MPI.IN_PLACE, [out, (counts, displs), _BYTE]), out)
    else:
        base = engine.next_tag_base()
        op = GeneratorOperation(engine, _ring_allgather_in_place(engine, base, out, [int(v) for v in starts],
                                                                 [int(v) for v in ends]))
    return Request(op, lambda: result, site)
