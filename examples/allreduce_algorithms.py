"""Every allreduce algorithm on the same vector; each prints the same answer.

    mpiexec -n 4 python examples/allreduce_algorithms.py

Rank r contributes ``[0, 1, ..., 6] * (r + 1)``; every algorithm registered for allreduce
(``mpiml.ALGORITHMS["allreduce"]``) sums them. Rank 0 prints, at 4 ranks::

                native: [ 0. 10. 20. 30. 40. 50. 60.]
                  ring: [ 0. 10. 20. 30. 40. 50. 60.]
    recursive_doubling: [ 0. 10. 20. 30. 40. 50. 60.]
          rabenseifner: [ 0. 10. 20. 30. 40. 50. 60.]
                  tree: [ 0. 10. 20. 30. 40. 50. 60.]
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
