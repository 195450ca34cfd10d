"""The watchdog: a collective that does not finish in time, or a Ctrl-C, ends the whole job.

Two services, both run by one daemon thread per process (started when mpiml's
collectives are imported in a job of more than one rank):

Timeout
    With a timeout (``MPIML_TIMEOUT`` seconds in the environment, ``--timeout`` on the
    ``mpiml`` commands, or :func:`configure`), every public collective records on entry
    its name and sequence number (``#N``: the N-th outermost mpiml collective call on
    that communicator in this process) and clears it on return. A call still in flight
    ``timeout`` seconds after the thread first saw it (at most one tick later: a tenth of
    the timeout, at most 1 s) fires: the rank asks every other rank for its stack and
    state (a message on ``COMM_WORLD`` with tag :data:`DUMP_TAG`, answered by their
    watchdog threads; needs ``MPI_THREAD_MULTIPLE``, else each rank dumps only its own),
    writes its own stack (every thread but the watchdog's, each line tagged
    ``[rank R]``), names the ranks the collective waits for (those not in the same call),
    and aborts the job (``MPI_Abort``, exit status :data:`EXIT_TIMEOUT`). The per-call
    cost is a few attribute stores and no clock read: the thread does the timing.

Ctrl-C
    ``mpiexec`` forwards SIGINT to every rank, but Python raises ``KeyboardInterrupt``
    only between bytecodes: a rank blocked in an MPI call (busy-polling for a peer that
    has already left) never sees it, and a rank that did exits through ``MPI_Finalize``,
    which waits for the stuck ones. So, while SIGINT has Python's default handler, the
    thread (woken through :func:`signal.set_wakeup_fd`) gives the rank
    :data:`INTERRUPT_GRACE` seconds to end by itself and then ends it (exit status 130);
    a rank that does leave through ``KeyboardInterrupt`` skips ``MPI_Finalize``. A
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

TRACK = False      # whether collectives record their calls (a timeout is set): read on every call
TIMEOUT = None     # seconds, or None


class _Calls:
    """What the main thread's collectives are doing; written per call, read by the watchdog thread."""

    __slots__ = ("depth", "call", "last")

    def __init__(self):
        self.depth = 0
        self.call = None   # (name, seq, context) of the outermost call in flight
        self.last = None   # the last one finished


_calls = _Calls()


def enter(name, context) -> None:
    """A collective starts (one line per public function: ``if tracked: enter(...)``)."""
    calls = _calls
    if not calls.depth:
        plans = context.plans
        seq = plans["calls"] = plans.get("calls", 0) + 1
        calls.call = (name, seq, context)
    calls.depth += 1


def leave() -> None:
    """The collective :func:`enter` announced has returned or raised."""
    calls = _calls
    if calls.depth:
        calls.depth -= 1
        if not calls.depth:
            calls.last, calls.call = calls.call, None


def configure(timeout) -> None:
    """Set the collective timeout in seconds (None or <= 0: none); call it on every rank."""
    global TIMEOUT, TRACK
    TIMEOUT = float(timeout) if timeout is not None and float(timeout) > 0 else None
    TRACK = TIMEOUT is not None
    if TRACK:
        install()
        if _thread is not None:
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


def seconds(text) -> float:
    """A ``--timeout`` value: seconds >= 0 (0: no timeout)."""
    import argparse

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected seconds >= 0 (0: none), got {text!r}")
    return value


def add_argument(group) -> None:
    """``--timeout SECONDS`` of the ``mpiml`` commands (default: ``MPIML_TIMEOUT``, else 30 min)."""
    group.add_argument("--timeout", type=seconds, metavar="SECONDS",
                       default=os.environ.get(TIMEOUT_ENV, "").strip() or str(DEFAULT_COMMAND_TIMEOUT),
                       help="a collective not finished after this long prints every rank's stack and ends "
                            f"the job (exit status {EXIT_TIMEOUT}); 0: never (default: ${TIMEOUT_ENV}, "
                            f"else {DEFAULT_COMMAND_TIMEOUT:g})")


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
        # MPI_Finalize would wait for ranks that may be stuck in a collective: end now, as
        # Python itself ends after an uncaught KeyboardInterrupt (killed by SIGINT).
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001 - a closed stream must not stop the exit
                pass
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
        os._exit(EXIT_INTERRUPTED)
    if _thread is not None:
        _thread.stop()


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
        self.seen = None        # the call in flight when first seen, and when
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
        call = _calls.call
        where = f" in {call[0]} #{call[1]}" if call else ""
        _write(f"[rank {self.rank}] mpiml: interrupted{where}; ending this rank\n")
        os._exit(EXIT_INTERRUPTED)

    # timeout
    def _time(self, timeout):
        call = _calls.call
        if call is None or call is not self.seen:
            self.seen, self.seen_at = call, time.monotonic()
            return
        waited = time.monotonic() - self.seen_at
        if waited >= timeout:
            self._fire(call, waited, timeout)

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
            self._dump(f"stack requested by rank {requester}, whose {NAMES[name_code]} #{seq} timed out; "
                       f"this rank is {_describe(_calls.call, _calls.last)}")
            self._reply(requester)

    def _state(self):
        import numpy as np

        call = _calls.call
        if call is None:
            return np.array([self.rank, 0, 0, 0], dtype=np.int64)
        return np.array([self.rank, 1, _code(call[0]), call[1]], dtype=np.int64)

    def _reply(self, requester):
        state = self._state()
        state[1] = 2 + state[1]  # 2: not in a call, 3: in one
        self.world.Isend(state, dest=requester, tag=DUMP_TAG).Wait()

    def _fire(self, call, waited, timeout):
        import numpy as np

        name, seq, context = call
        states = {}
        if self.channel:
            request = np.array([self.rank, 1, _code(name), seq], dtype=np.int64)
            sends = [self.world.Isend(request, dest=r, tag=DUMP_TAG) for r in range(self.size) if r != self.rank]
        site = _main_thread_site()
        self._dump(f"{name} #{seq}{site} has not finished after {waited:.1f} s (timeout {timeout:g} s); "
                   "asking every rank for its stack")
        if self.channel:
            deadline = time.monotonic() + REPLY_WAIT
            while len(states) < self.size - 1 and time.monotonic() < deadline:
                if self.request is not None and self.request.Test():
                    source, kind, code, other_seq = (int(v) for v in self.inbox)
                    self.request = None
                    if kind >= 2:
                        states[source] = (NAMES[code], other_seq) if kind == 3 else None
                    elif kind == 1 and not self.dumped:
                        self._reply(source)
                    self._post()
                else:
                    time.sleep(0.01)
            for s in sends:
                s.Cancel()
        members = _world_ranks(context.comm, self.mpi)
        waits = []
        for r in members:
            if r == self.rank:
                continue
            if r not in states:
                waits.append(f"rank {r} (no answer)")
            elif states[r] != (name, seq):
                state = states[r]
                waits.append(f"rank {r} ({'not in a collective' if state is None else f'in {state[0]} #{state[1]}'})")
        said = ", ".join(waits) if waits else "every rank is in it: a peer is slow or the network is stuck"
        _write(f"[rank {self.rank}] mpiml: error: {name} #{seq} timed out after {timeout:g} s waiting for "
               f"{said}; ending the job\n")
        time.sleep(0.5)  # hydra forwards the text before the abort tears its pipes down
        if self.channel:
            self.world.Abort(EXIT_TIMEOUT)
        os._exit(EXIT_TIMEOUT)

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


def _describe(call, last):
    if call is not None:
        return f"in {call[0]} #{call[1]}"
    return "not in a collective" + (f" (last finished: {last[0]} #{last[1]})" if last else "")


def _world_ranks(comm, MPI):
    try:
        group, world = comm.Get_group(), MPI.COMM_WORLD.Get_group()
        ranks = MPI.Group.Translate_ranks(group, list(range(group.Get_size())), world)
        return [r for r in ranks if r != MPI.UNDEFINED]
    except Exception:  # noqa: BLE001 - only for the message
        return list(range(MPI.COMM_WORLD.Get_size()))


def _main_thread_site():
    frame = sys._current_frames().get(threading.main_thread().ident)
    site = call_site(frame) if frame is not None else None
    return f" (called at {site})" if site else ""


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
    path = frame.f_code.co_filename
    try:
        relative = os.path.relpath(path)
        path = relative if not relative.startswith("..") else path
    except ValueError:
        pass
    return f"{path}:{frame.f_lineno}"


def _write(text):
    data = text.encode(errors="replace")
    try:
        while data:
            data = data[os.write(2, data):]
    except OSError:
        pass
