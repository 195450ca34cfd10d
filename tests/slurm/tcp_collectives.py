"""Every collective's contract over TCP: the job a 2-node Slurm test runs (one rank per task).

The job runs with MPI kept off shared memory (MPICH ``MPIR_CVAR_NOLOCAL=1 FI_PROVIDER=tcp``,
Open MPI ``OMPI_MCA_btl=self,tcp``) and ``MPIML_RANKS_PER_NODE`` set to the Slurm tasks per
node, so the node-aware algorithms see the job's two nodes. Checks, on every rank: the
emulated nodes are Slurm's (``SLURM_NODEID``), MPI maps no two processes into one window
(under MPICH), then every registered algorithm of every collective meets the contract of
``tests/collectives/collective_contract.py`` (oracle on every rank's input, bitwise equal on
every rank). Prints one JSON line on rank 0; a failure on any rank fails every rank.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent / "collectives"), str(HERE.parent)]

from collective_contract import check, every_algorithm  # noqa: E402
from mpi4py import MPI  # noqa: E402
from mpi_helpers import agree  # noqa: E402

from mpiml.collectives import nodes  # noqa: E402


def main() -> int:
    world = MPI.COMM_WORLD
    g = nodes.layout(world).grouping
    slurm_node = int(os.environ.get("SLURM_NODEID", "-1"))
    agree(world, g.node == slurm_node, ("emulated node", g.node, "Slurm node", slurm_node))
    domain = world.Split_type(MPI.COMM_TYPE_SHARED)
    alone = domain.Get_size() == 1
    domain.Free()
    mpich = "MPICH" in MPI.Get_library_version()
    agree(world, alone or not mpich, "MPICH maps processes into one window: shared memory is not off")
    checked = []
    for collective, algorithm in every_algorithm():
        check(collective, algorithm)
        checked.append(f"{collective}:{algorithm}")
    if world.rank == 0:
        print(json.dumps({"ranks": world.size, "nodes": g.nodes, "checked": checked, "shared_memory_off": alone,
                          "library": MPI.Get_library_version().splitlines()[0].strip()}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
