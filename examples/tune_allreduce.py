"""Choosing the allreduce for your job's message size: ask the model, measure, write a tuning file.

    mpiexec -n 3 python examples/tune_allreduce.py --floats 100000 --out tuning.json
    MPIML_TUNING=tuning.json mpiexec -n 3 python train.py     # then your job's "auto" follows it

``algorithm="auto"`` decides in this order (README, "What auto picks"): a tuning file's
measured winner for this collective, rank count and size, else the cost model's fastest
prediction. This script prints the model's choice for one gradient of ``--floats`` float64s,
times ``native`` (the MPI library's Allreduce) against the best hand-written algorithm at
exactly that size, checks both give the same bits, writes the winner as a tuning file (the
same format ``mpiml tune`` writes for a whole size grid), and runs a small job with it.
Rank 0 prints, for example::

    model pick ring (predicted ms: native 0.59, ring 0.47, recursive_doubling 0.81, ...)
    measured ms native 0.612 ring 0.455
    measured winner ring
    auto with tuning.json runs ring
    job checksum 149998500000.0
"""

import argparse
import os

import numpy as np
from mpi4py import MPI

import mpiml
from mpiml.collectives import model, select
from mpiml.collectives.tuning import FORMAT, VERSION, rules_document
from mpiml.perf.harness import Schedule, run_benchmark
from mpiml.perf.tune import measured_rules, write_tuning

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--floats", type=int, default=100_000, help="the job's message: float64s per allreduce")
parser.add_argument("--out", default="mpiml-tuning.json", help="tuning file to write")
parser.add_argument("--iters", type=int, default=30, help="timed calls per algorithm")
args = parser.parse_args()
comm = MPI.COMM_WORLD
p, nbytes = comm.size, args.floats * 8


def say(*text):
    if comm.rank == 0:
        print(*text, flush=True)


# 1. What the cost model (no measurements of this machine) would run, and why.
names = select.candidates("allreduce", size=p)
predicted = {name: model.predict(name, nbytes, p) for name in names}
say(f"model pick {select.model_winner('allreduce', nbytes, p)} (predicted ms: "
    + ", ".join(f"{name} {1e3 * t:.3g}" for name, t in predicted.items()) + ")")

# 2. Measure native against the best hand-written one, interleaved on a quiet moment of the
# job itself: the model knows textbook costs, not this network, MPI build or load.
challenger = min((n for n in names if n != "native"), key=predicted.get)
records = run_benchmark("allreduce", [nbytes], ["native", challenger], dtype="float64", check=True,
                        schedule=Schedule(iters=args.iters, warmup=3), comm=comm)
say("measured ms " + " ".join(f"{r['algorithm']} {1e3 * r['time_median_seconds']:.3f}" for r in records))
if not all(r["correct"] for r in records):
    raise SystemExit("the algorithms disagree: report a bug")

# 3. The winner (native keeps a tie: it must be beaten by 3%) as a tuning file.
rules = measured_rules(records)  # {("allreduce", p): [(0, winner)]}: one size, one range
say(f"measured winner {rules[('allreduce', p)][0][1]}")
if comm.rank == 0:
    write_tuning(args.out, {"format": FORMAT, "version": VERSION, "rules": rules_document(rules)})
comm.Barrier()  # the file exists before anyone reads it

# 4. The job, with the file in force (MPIML_TUNING=FILE does the same for a whole run).
select.set_tuning(args.out)
say(f"auto with {os.path.basename(args.out)} runs {select.choose('allreduce', 'auto', nbytes, p)}")
grad = np.arange(args.floats, dtype=np.float64) * (comm.rank + 1)
total = np.zeros_like(grad)
for step in range(5):
    total += mpiml.allreduce(grad)  # algorithm="auto": now the measured winner
say(f"job checksum {float(total.sum())!r}")
