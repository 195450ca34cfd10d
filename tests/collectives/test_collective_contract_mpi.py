"""Every registered algorithm of every collective (and ``auto``) against the shared contract.

The parameters come from the registry at collection time, so an algorithm added as a
module under ``mpiml/collectives/algorithms/`` is checked without editing this file; an
algorithm registered elsewhere (a test's toy) calls ``collective_contract.check`` itself.
"""

from __future__ import annotations

import pytest
from collective_contract import check, every_algorithm


@pytest.mark.mpi
@pytest.mark.parametrize("collective, algorithm", every_algorithm())
def test_algorithm_meets_the_contract(collective, algorithm):
    check(collective, algorithm)
