"""Data, model and hybrid parallelism from Python: one model, three layouts, the bytes each moves.

    mpiexec -n 4 python examples/parallelism.py
    mpiexec -n 4 python examples/parallelism.py --features 20    # narrow data: data parallelism wins

``LinearModel(parallel=...)`` lays the same ranks out three ways (see ``mpiml.parallel``):

- ``data``: every rank holds the whole model and a block of the rows; each update
  allreduces the whole gradient (``d + 1`` numbers) over all ranks.
- ``model``: a 1 x p grid; every rank holds a block of the features (columns) and of the
  weights, for every row; each update allreduces only the batch's partial margins
  (one number per row of the batch) to finish ``X w``.
- ``hybrid``: an R x C grid (R, C > 1, so p = 4, 6, 8, ...): R row groups of C ranks, the
  features split within a group, the group's gradient blocks summed over the R groups.

The data is wide and sparse (5,000 features, 20 nonzeros a row: the hashed-text shape),
where the gradient is big and the margins are small. Training is sync SGD, whose batches
are drawn from the global rows (the same at any rank count and layout), so the three
layouts compute the same model up to rounding, and the same as one process would.

To see what moves, the script registers an allreduce algorithm of its own, ``counted``:
the library's ring algorithm on a transport that counts the bytes each rank sends
(``mpiml.collectives.registry.register``; the same hook adds a real algorithm). Every sum
of the training goes through it. Rank 0 prints one line per layout, at 4 ranks::

    data     grid 4x1  sent/update   60084 B (model estimate   60072 B)  final loss 0.3086254765
    model    grid 1x4  sent/update    1212 B (model estimate    1600 B)  final loss 0.3086254765
    hybrid   grid 2x2  sent/update   20448 B (model estimate   20416 B)  final loss 0.3086254765

"sent/update" is the bytes one rank sends per update (the mean over ranks and updates,
leaving out the evaluation at each epoch's end). The estimate is the cost model's
(``layout_["estimated_bytes_per_step"]``, what ``parallel="auto"`` compares); it prices
the algorithm ``auto`` would pick, which for the model layout's small messages is
recursive doubling (more bytes, fewer steps) where ``counted`` always runs the ring.
At a prime number of ranks there is no hybrid grid, and the hybrid line says so.
"""

import argparse

from mpi4py import MPI

from mpiml.collectives import registry
from mpiml.data import load_shard
from mpiml.errors import ArgumentError
from mpiml.sgd import LinearModel

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--rows", type=int, default=3000)
parser.add_argument("--features", type=int, default=5000)
parser.add_argument("--nonzeros", type=int, default=20, help="per row")
args = parser.parse_args()
comm = MPI.COMM_WORLD

DATA = f"synthetic:classification,n={args.rows},d={args.features},density={args.nonzeros / args.features},seed=2"
# Sync SGD: one allreduce per update. The features are not standardized (standardize=False
# keeps the sparse rows as they are); a row has about 20 nonzeros, so a large step suits.
SGD = dict(strategy="sync", epochs=3, batch_size=100, lr=5.0, alpha=1e-4, seed=0)


class CountingTransport:
    """The transport an algorithm receives, counting the bytes this rank sends."""

    sent = 0  # over every call on this rank

    def __init__(self, inner):
        self.comm, self.rank, self.size, self.inner = inner.comm, inner.rank, inner.size, inner
        self.waitall = inner.waitall

    def sendrecv(self, sendbuf, dest, recvbuf, source, tag):
        CountingTransport.sent += sendbuf.nbytes
        self.inner.sendrecv(sendbuf, dest, recvbuf, source, tag)

    def send(self, buf, dest, tag):
        CountingTransport.sent += buf.nbytes
        self.inner.send(buf, dest, tag)

    def recv(self, buf, source, tag):
        self.inner.recv(buf, source, tag)

    def isend(self, buf, dest, tag):
        CountingTransport.sent += buf.nbytes
        return self.inner.isend(buf, dest, tag)


ring = registry.get("allreduce", "ring")
registry.register("allreduce", "counted", cost=ring.cost, commutative_only=True,
                  run=lambda transport, x, out, op, workspace: ring.run(CountingTransport(transport), x, out, op,
                                                                        workspace))

class ByteMeter:
    """A ``progress`` for ``fit``: the bytes sent between consecutive updates (leaving out
    the evaluation at each epoch's end, which ``epoch`` is told of)."""

    def __init__(self):
        self.mark, self.per_update = CountingTransport.sent, []

    def update(self, epoch, step, steps, loss):
        self.per_update.append(CountingTransport.sent - self.mark)
        self.mark = CountingTransport.sent

    def epoch(self, record):
        self.mark = CountingTransport.sent


data = load_shard(DATA)  # each rank makes its block of the rows
for parallel in ("data", "model", "hybrid"):
    # grid=px1 for data parallelism only so that layout_ carries the cost model's estimate
    layout = dict(grid=f"{comm.size}x1") if parallel == "data" else {}
    meter = ByteMeter()
    model = LinearModel("logistic", parallel=parallel, split="features", algorithm="counted", standardize=False,
                        progress=meter, **layout, **SGD)
    try:
        model.fit(data.X, data.y)
    except ArgumentError as exc:  # hybrid at a prime p: no such grid (the same error on every rank)
        if comm.rank == 0:
            print(f"{parallel:<8} skipped: {exc}")
        continue
    # the first update also carries fit's setup (row counts): leave it out
    sent = comm.allreduce(sum(meter.per_update[1:])) / comm.size / (len(meter.per_update) - 1)
    if comm.rank == 0:
        print(f"{parallel:<8} grid {model.layout_['grid']:<4} sent/update {sent:7.0f} B "
              f"(model estimate {model.layout_['estimated_bytes_per_step']:7.0f} B)  "
              f"final loss {model.history_[-1]['train_loss']:.10f}")
