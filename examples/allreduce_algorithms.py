"""Every allreduce algorithm on the same vector; each prints the same answer.

    mpiexec -n 5 python examples/allreduce_algorithms.py
"""

import numpy as np
from mpi4py import MPI

import mpiml

comm = MPI.COMM_WORLD
x = np.arange(7, dtype=np.float64) * (comm.rank + 1)
for algorithm in mpiml.ALGORITHMS["allreduce"]:
    result = mpiml.allreduce(x, algorithm=algorithm)
    if comm.rank == 0:
        print(f"{algorithm:>18}: {result}")
