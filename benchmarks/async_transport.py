"""How the asynchronous SGD strategy moves the shared model: one-sided RMA vs a served shard.

Run: ``mpiexec -n 3 python benchmarks/async_transport.py`` (MPICH or Open MPI wheel).

Rank 0 holds the shared model (``n`` doubles plus a clock per rank) and is itself a worker
that computes in pieces of ``--piece`` seconds and, as a 2x straggler, sleeps as long again
after each (:mod:`mpiml.runtime.stragglers`). The other ranks each make a read of the whole
model plus an accumulate of a delta into it, as :mod:`mpiml.train.asynchronous` does once
per update, as fast as they can for ``--seconds``:

- ``rma``: ``Win.Allocate`` on rank 0, one ``Lock_all`` epoch for the whole run (opened while
  every rank is in MPI), ``Get_accumulate(NO_OP)`` + ``Flush`` and ``Accumulate(SUM)`` + ``Flush``.
- ``rma-lock``: the same with a ``Lock``/``Unlock`` (shared) around each operation.
- ``p2p``: rank 0 serves its shard with point-to-point messages: between its pieces of work
  it polls (``Iprobe``) and answers every pending request; the workers ``Send`` a delta and
  ``Recv`` the model.

Prints the median and 99th percentile seconds of one read+accumulate per mode and the number
done. Under MPICH 5 ``rma-lock`` waits until rank 0 enters MPI (no passive progress for the
lock), ``rma`` with ``Lock_all`` does not; ``p2p`` waits for rank 0's next poll, so a slow
host slows everyone, which is what asynchronous training is meant to avoid.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from mpi4py import MPI

TAG_REQ, TAG_REP, TAG_END = 71, 72, 73


def busy(seconds):
    end = time.perf_counter() + seconds
    x = 0.0
    while time.perf_counter() < end:
        x += 1.0
    return x


def run_rma(comm, n, seconds, piece, per_op_lock):
    r, p = comm.rank, comm.size
    win = MPI.Win.Allocate(8 * (n + p) if r == 0 else 0, 8, comm=comm)
    if not per_op_lock:
        win.Lock_all()
    comm.Barrier()
    times = []
    got, zeros, delta = np.empty(n + p), np.zeros(n + p), np.full(n, 1e-3)
    start = time.perf_counter()
    if r == 0:
        while time.perf_counter() - start < seconds:
            busy(piece)
            time.sleep(piece)   # a 2x straggler, no MPI call
    else:
        while time.perf_counter() - start < seconds:
            s = time.perf_counter()
            if per_op_lock:
                win.Lock(0, MPI.LOCK_SHARED)
            win.Get_accumulate(zeros, got, 0, op=MPI.NO_OP)
            win.Unlock(0) if per_op_lock else win.Flush(0)
            if per_op_lock:
                win.Lock(0, MPI.LOCK_SHARED)
            win.Accumulate(delta, 0, target=(0, n, MPI.DOUBLE), op=MPI.SUM)
            win.Unlock(0) if per_op_lock else win.Flush(0)
            times.append(time.perf_counter() - s)
            busy(piece / 4)   # the worker's own gradient
    if not per_op_lock:
        win.Unlock_all()
    comm.Barrier()
    win.Free()
    return times


def run_p2p(comm, n, seconds, piece):
    r, p = comm.rank, comm.size
    times = []
    model = np.zeros(n + p)
    start = time.perf_counter()
    if r == 0:
        done, delta, status = 0, np.empty(n), MPI.Status()
        while done < p - 1:
            working = time.perf_counter() - start < seconds
            if working:
                busy(piece)
                time.sleep(piece)
            while comm.Iprobe(MPI.ANY_SOURCE, MPI.ANY_TAG, status) or (not working and done < p - 1):
                src, tag = status.Get_source(), status.Get_tag()
                if not comm.Iprobe(MPI.ANY_SOURCE, MPI.ANY_TAG, status):
                    comm.Probe(MPI.ANY_SOURCE, MPI.ANY_TAG, status)
                src, tag = status.Get_source(), status.Get_tag()
                if tag == TAG_END:
                    comm.Recv([delta[:0], MPI.DOUBLE], source=src, tag=TAG_END)
                    done += 1
                    continue
                comm.Recv(delta, source=src, tag=TAG_REQ)
                model[:n] += delta
                comm.Send(model, dest=src, tag=TAG_REP)
    else:
        delta = np.full(n, 1e-3)
        while time.perf_counter() - start < seconds:
            s = time.perf_counter()
            comm.Send(delta, dest=0, tag=TAG_REQ)
            comm.Recv(model, source=0, tag=TAG_REP)
            times.append(time.perf_counter() - s)
            busy(piece / 4)
        comm.Send([delta[:0], MPI.DOUBLE], dest=0, tag=TAG_END)
    comm.Barrier()
    return times


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=124, help="model size (doubles; a9a's logistic model: 124)")
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--piece", type=float, default=0.004, help="seconds of rank 0's compute between MPI calls")
    args = ap.parse_args()
    comm = MPI.COMM_WORLD
    if comm.size < 2:
        raise SystemExit("run under mpiexec with 2 or more ranks")
    lib = MPI.Get_library_version().splitlines()[0].strip()
    results = {}
    for mode in ("rma", "rma-lock", "p2p"):
        t = run_p2p(comm, args.n, args.seconds, args.piece) if mode == "p2p" else \
            run_rma(comm, args.n, args.seconds, args.piece, mode == "rma-lock")
        everyone = comm.gather(t, root=0)
        if comm.rank == 0:
            alls = np.array([x for part in everyone for x in part]) if any(everyone) else np.array([np.nan])
            results[mode] = alls
            print(f"{mode:9s} {lib[:40]:40s} p={comm.size} n={args.n}: {len(alls):6d} read+accumulate in "
                  f"{args.seconds:g} s, median {np.median(alls) * 1e6:8.0f} us, "
                  f"p99 {np.percentile(alls, 99) * 1e3:7.1f} ms", flush=True)
    if comm.rank == 0:
        ratio = np.median(results["p2p"]) / np.median(results["rma"])
        print(f"verdict: one-sided (Lock_all + Flush) is {ratio:.0f}x faster per update than a served shard while "
              f"the host straggles; {'use rma' if ratio > 1 else 'use p2p'}")


if __name__ == "__main__":
    main()
