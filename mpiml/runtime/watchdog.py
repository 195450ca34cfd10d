"""The watchdog: a collective that does not finish in time, or a Ctrl-C, ends the whole job.

Two services, both run by one daemon thread per process (started when mpiml's
collectives are imported in a job of more than one rank):

Timeout
    With a timeout (``MPIML_TIMEOUT`` seconds in the environment, ``--timeout`` on the
    ``mpiml`` commands, or :func:`configure`), the thread looks at the main thread once a
    tick (a tenth of the timeout, at most 1 s). Every public collective adds one to
    :data:`CALLS` on entry (its sequence number ``#N``: the N-th mpiml collective call of
    this process, nested ones included); when the main thread is inside a public
    collective and ``CALLS`` has not moved for ``timeout`` seconds, that call is stuck. The
    rank then asks every other rank for its stack and state (a message on ``COMM_WORLD``
    with tag :data:`DUMP_TAG`, answered by their watchdog threads; needs
    ``MPI_THREAD_MULTIPLE``, else each rank dumps only its own), writes its own stack
    (every thread but the watchdog's, each line tagged ``[rank R]``), names the ranks the
    collective waits for (those not in the same call) and aborts the job (``MPI_Abort``,
    exit status :data:`EXIT_TIMEOUT`). The cost per call is that one increment: the
    thread does all the timing, from the stacks.

Ctrl-C
    ``mpiexec`` forwards SIGINT to every rank, but Python raises ``KeyboardInterrupt``
    only between bytecodes: a rank blocked in an MPI call (busy-polling for a peer that
    has already left) never sees it, and a rank that did exits through ``MPI_Finalize``,
    which waits for the stuck ones. So, while SIGINT has Python's default handler, the
    thread (woken through :func:`signal.set_wakeup_fd`) gives the rank
    :data:`INTERRUPT_GRACE` seconds to end by itself and then ends the job (``MPI_Abort``,
    exit status 130); a rank that does leave through ``KeyboardInterrupt`` ends the job the
    same way instead of waiting in ``MPI_Finalize``. A
    program that installs its own SIGINT handler (the ``mpiml`` commands with a checkpoint
    directory, :class:`~mpiml.runtime.preempt.PreemptionWatch`) keeps it: it is not forced.
"""

from __future__ import annotations

import atexit
import os
import select
import signal
import socket
import sys
import threading
import time
import traceback

TIMEOUT_ENV = "MPIML_TIMEOUT"
DEFAULT_COMMAND_TIMEOUT = 1800.0  # the commands' --timeout default: generous, but a hang does end
EXIT_TIMEOUT = 124                # as timeout(1)
EXIT_INTERRUPTED = 130            # 128 + SIGINT, as a shell reports Ctrl-C
INTERRUPT_GRACE = 1.0             # seconds a rank has after SIGINT to end by itself
DUMP_TAG = 32_001                 # COMM_WORLD tag of the watchdogs' requests and replies
REPLY_WAIT = 3.0                  # seconds a firing rank waits for the others' answers

# Names of the calls, by code, in the int64 messages the watchdog threads exchange.
NAMES = ("-", "allreduce", "reduce_scatter", "allgather", "bcast", "reduce", "reproducible_sum")

TIMEOUT = None      # seconds, or None
CALLS = [0]         # mpiml collective calls this process has entered (each public function adds 1)
_PUBLIC = {}        # code object of each public collective -> its name


def watch(*functions) -> None:
    """Register the public collectives whose frames mark "inside a collective"."""
    for function in functions:
        _PUBLIC[function.__code__] = function.__name__


def configure(timeout) -> None:
    """Set the collective timeout in seconds (None or <= 0: none); call it on every rank."""
    global TIMEOUT
    TIMEOUT = float(timeout) if timeout is not None and float(timeout) > 0 else None
    if install() and TIMEOUT is not None:
        _thread.wake()


def install_from_env() -> None:
    """Start the thread (Ctrl-C) and arm the timeout ``MPIML_TIMEOUT`` asks for, if any (at import)."""
    try:
        timeout = timeout_from_env()
    except ValueError as exc:
        _write(f"mpiml: warning: {exc}; no collective timeout\n")
        timeout = None
    if timeout is not None:
        configure(timeout)
    else:
        install()


def timeout_from_env(default=None):
    """``MPIML_TIMEOUT`` as seconds (None: unset or 0), else ``default``."""
    from mpiml.errors import ArgumentError

    text = os.environ.get(TIMEOUT_ENV, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise ArgumentError(f"{TIMEOUT_ENV} must be a number of seconds, got {text!r}") from None
    return value if value > 0 else None


# --- the thread ----------------------------------------------------------------------------

_thread = None
_interrupted = False


def _world():
    from mpi4py import MPI

    if not MPI.Is_initialized() or MPI.Is_finalized():
        return None
    return MPI.COMM_WORLD


def install() -> bool:
    """Start the watchdog thread (once, from the main thread, in a job of 2+ ranks)."""
    global _thread
    if _thread is not None:
        return True
    world = _world()
    if world is None or world.Get_size() < 2 or threading.current_thread() is not threading.main_thread():
        return False
    _thread = _Watchdog(world)
    _thread.start()
    atexit.register(_at_exit)
    os.register_at_fork(after_in_child=_forget_in_child)
    return True


def _forget_in_child():
    # A forked child has no watchdog thread; its signals must not wake the parent's.
    global _thread
    if _thread is not None and _thread.wakeup_installed:
        try:
            signal.set_wakeup_fd(-1)
        except ValueError:
            pass
    _thread = None


def _at_exit():
    """Before ``MPI_Finalize``: stop the thread; after a Ctrl-C, leave without finalizing."""
    if _interrupted or isinstance(getattr(sys, "last_value", None), KeyboardInterrupt):
        # MPI_Finalize would wait for ranks that may be stuck in a collective: end the job now.
        _end_job(EXIT_INTERRUPTED)
    if _thread is not None:
        _thread.stop()


def _end_job(code, from_thread=False) -> None:
    """Flush, then ``MPI_Abort`` (the launcher ends every rank: mpiexec, srun); never returns.

    Not a plain exit: hydra ORs the ranks' wait statuses, so a rank ending by SIGINT (2) while
    hydra SIGKILLs (9) the others reads as "Segmentation fault (signal 11)".
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - a closed stream must not stop the exit
            pass
    world = _world()
    # another thread may call MPI only under MPI_THREAD_MULTIPLE; else hydra still ends the
    # other ranks when this one exits with a non-zero status
    if world is not None and (not from_thread or (_thread is not None and _thread.channel)):
        world.Abort(code)
    os._exit(code)


class _Watchdog(threading.Thread):
    """Reads the signal wakeup socket, times the call in flight, answers other ranks' requests."""

    def __init__(self, world):
        super().__init__(name="mpiml-watchdog", daemon=True)
        self.world = world
        self.rank = world.Get_rank()
        self.size = world.Get_size()
        from mpi4py import MPI

        self.mpi = MPI
        self.channel = MPI.Query_thread() == MPI.THREAD_MULTIPLE
        self.request = None
        self.inbox = None
        self.dumped = False
        self.stopping = False
        self.lock = threading.Lock()
        self.seen = None        # CALLS when a call was first seen in flight, and when
        self.seen_at = 0.0
        self.read_end, self.write_end = socket.socketpair()
        self.read_end.setblocking(False)
        self.write_end.setblocking(False)
        self.wakeup_installed = False
        try:
            previous = signal.set_wakeup_fd(self.write_end.fileno(), warn_on_full_buffer=False)
            if previous != -1:  # someone else (an event loop) listens there: leave it theirs
                signal.set_wakeup_fd(previous)
            else:
                self.wakeup_installed = True
        except ValueError:
            pass

    def wake(self):
        try:
            self.write_end.send(b"\0")
        except OSError:
            pass

    def stop(self):
        self.stopping = True
        self.wake()
        self.join(timeout=2.0)
        with self.lock:
            if self.request is not None:
                try:
                    self.request.Cancel()
                    self.request.Wait()
                except Exception:  # noqa: BLE001 - finalizing anyway
                    pass
                self.request = None
        if self.wakeup_installed:
            try:
                signal.set_wakeup_fd(-1)
            except ValueError:
                pass

    def run(self):
        while not self.stopping:
            timeout = TIMEOUT
            tick = None if timeout is None else min(1.0, max(0.05, timeout / 10))
            try:
                ready, _, _ = select.select([self.read_end], [], [], tick)
            except (OSError, ValueError):
                return
            if ready:
                try:
                    data = self.read_end.recv(256)
                except BlockingIOError:
                    data = b""
                if signal.SIGINT in data:
                    self._interrupt()
            if self.stopping:
                return
            if timeout is not None:
                with self.lock:
                    self._serve()
                    self._time(timeout)

    # Ctrl-C
    def _interrupt(self):
        global _interrupted
        if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
            return  # the program handles SIGINT itself
        _interrupted = True
        time.sleep(INTERRUPT_GRACE)
        call = _main_call()
        where = f" in {call[0]}" if call else ""
        _write(f"[rank {self.rank}] mpiml: interrupted{where}; ending the job\n")
        _end_job(EXIT_INTERRUPTED, from_thread=True)

    # timeout
    def _time(self, timeout):
        count, call = CALLS[0], _main_call()
        now = time.monotonic()
        if call is None or count != self.seen:
            # no call in flight, or a new one since the last look: start timing afresh
            self.seen, self.seen_at = (count if call is not None else None), now
            return
        waited = now - self.seen_at
        if waited >= timeout:
            self._fire(call, count, waited, timeout)

    def _post(self):
        import numpy as np

        if self.request is None and self.channel:
            self.inbox = np.zeros(4, dtype=np.int64)
            self.request = self.world.Irecv(self.inbox, source=self.mpi.ANY_SOURCE, tag=DUMP_TAG)

    def _serve(self):
        """Answer another rank's request: dump this rank's stack, send back its state."""
        self._post()
        if self.request is None or not self.request.Test():
            return
        requester, kind, name_code, seq = (int(v) for v in self.inbox)
        self.request = None
        self._post()
        if kind == 1:  # a request; kind 2 is a reply arriving late: ignore it
            call = _main_call()
            here = f"in {call[0]} #{CALLS[0]}" if call else f"not in a collective (after {CALLS[0]} call(s))"
            self._dump(f"stack requested by rank {requester}, whose {NAMES[name_code]} #{seq} timed out; "
                       f"this rank is {here}")
            self._reply(requester)

    def _state(self):
        import numpy as np

        call = _main_call()
        return np.array([self.rank, call is not None, _code(call[0]) if call else 0, CALLS[0]], dtype=np.int64)

    def _reply(self, requester):
        state = self._state()
        state[1] = 2 + state[1]  # 2: not in a call, 3: in one
        self.world.Isend(state, dest=requester, tag=DUMP_TAG).Wait()

    def _fire(self, call, seq, waited, timeout):
        import numpy as np

        name, frame = call
        states = {}
        if self.channel:
            request = np.array([self.rank, 1, _code(name), seq], dtype=np.int64)
            sends = [self.world.Isend(request, dest=r, tag=DUMP_TAG) for r in range(self.size) if r != self.rank]
        site = call_site(frame)
        site = f" (called at {site})" if site else ""
        self._dump(f"{name} #{seq}{site} has not finished after {waited:.1f} s (timeout {timeout:g} s); "
                   "asking every rank for its stack")
        if self.channel:
            deadline = time.monotonic() + REPLY_WAIT
            while len(states) < self.size - 1 and time.monotonic() < deadline:
                if self.request is not None and self.request.Test():
                    source, kind, code, other_seq = (int(v) for v in self.inbox)
                    self.request = None
                    if kind >= 2:
                        states[source] = (NAMES[code], other_seq) if kind == 3 else other_seq
                    elif kind == 1:  # another rank timed out too (this one has printed its stack)
                        self._reply(source)
                    self._post()
                else:
                    time.sleep(0.01)
            for s in sends:
                s.Cancel()
        comm = frame.f_locals.get("c") if frame is not None else None
        waits = []
        for r in _world_ranks(comm, self.mpi):
            state = states.get(r)
            if r == self.rank or state == (name, seq):
                continue
            if r not in states:
                waits.append(f"rank {r} (no answer)")
            elif isinstance(state, int):
                waits.append(f"rank {r} (not in a collective, after {state} call(s))")
            else:
                waits.append(f"rank {r} (in {state[0]} #{state[1]})")
        said = ", ".join(waits) if waits else "every rank is in it: a peer is slow or the network is stuck"
        _write(f"[rank {self.rank}] mpiml: error: {name} #{seq} timed out after {timeout:g} s waiting for "
               f"{said}; ending the job\n")
        time.sleep(0.5)  # hydra forwards the text before the abort tears its pipes down
        _end_job(EXIT_TIMEOUT, from_thread=True)

    def _dump(self, header):
        if self.dumped:
            return
        self.dumped = True
        tag = f"[rank {self.rank}] "
        lines = ["mpiml: " + header]
        for ident, frame in sys._current_frames().items():
            if ident == self.ident:
                continue  # this thread's own stack says nothing
            thread = "main thread" if ident == threading.main_thread().ident else f"thread {ident:#x}"
            lines.append(f"Stack of the {thread} (most recent call last):")
            lines.extend(line for text in traceback.format_stack(frame) for line in text.rstrip("\n").split("\n"))
        _write("".join(tag + line + "\n" for line in lines))


def _code(name):
    return NAMES.index(name) if name in NAMES else 0


def _main_call():
    """``(name, frame)`` of the outermost public collective the main thread is in, or None."""
    frame = sys._current_frames().get(threading.main_thread().ident)
    found = None
    while frame is not None:
        name = _PUBLIC.get(frame.f_code)
        if name is not None:
            found = (name, frame)
        frame = frame.f_back
    return found


def _world_ranks(comm, MPI):
    """The COMM_WORLD ranks of ``comm``'s members (all of them if unknown)."""
    if comm is None or not isinstance(comm, MPI.Comm):
        return list(range(MPI.COMM_WORLD.Get_size()))
    try:
        group, world = comm.Get_group(), MPI.COMM_WORLD.Get_group()
        ranks = MPI.Group.Translate_ranks(group, list(range(group.Get_size())), world)
        return [r for r in ranks if r != MPI.UNDEFINED]
    except Exception:  # noqa: BLE001 - only for the message
        return list(range(MPI.COMM_WORLD.Get_size()))


_COLLECTIVES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "collectives") + os.sep
_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def call_site(frame) -> str | None:
    """``file:line`` of the innermost frame of ``frame``'s stack outside mpiml's collectives,
    followed by `` via file:line`` of the innermost frame outside mpiml when that differs."""
    inner = user = None
    while frame is not None:
        name = frame.f_code.co_filename
        if inner is None and not name.startswith(_COLLECTIVES):
            inner = frame
        if not name.startswith(_PACKAGE):
            user = frame
            break
        frame = frame.f_back
    if inner is None:
        return None
    text = _where(inner)
    return text if user is None or user is inner else f"{text} via {_where(user)}"


def _where(frame):
    return where(frame.f_code.co_filename, frame.f_lineno)


def where(path, line) -> str:
    """``path:line``, the path relative to the working directory when it lies below it."""
    try:
        relative = os.path.relpath(path)
        path = relative if not relative.startswith("..") else path
    except ValueError:
        pass
    return f"{path}:{line}"


def _write(text):
    data = text.encode(errors="replace")
    try:
        while data:
            data = data[os.write(2, data):]
    except OSError:
        pass
