"""Test configuration shared by the serial run and the runs under mpiexec.

A plain ``pytest`` runs the serial tests and, through ``test_under_mpiexec.py``, every
test marked ``@pytest.mark.mpi`` under ``mpiexec`` at each rank count in RANK_COUNTS.
Inside those runs (``--with-mpi``) only the MPI tests are selected.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings
from mpi_helpers import shared_tmp  # noqa: F401  (a fixture for every test directory)

# Examples must be the same on every rank (they drive collective calls), so generation is
# derandomized and independent of timing; no example database is shared between ranks.
settings.register_profile(
    "mpi",
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=int(os.environ.get("MPIML_HYPOTHESIS_EXAMPLES", "25")),
    suppress_health_check=list(HealthCheck),
    print_blob=False,
)
settings.register_profile("serial", deadline=None, max_examples=100)


def pytest_configure(config):
    settings.load_profile("mpi" if config.getoption("--with-mpi", default=False) else "serial")


def pytest_collection_modifyitems(config, items):
    with_mpi = config.getoption("--with-mpi", default=False)
    keep, drop = [], []
    for item in items:
        is_mpi = item.get_closest_marker("mpi") is not None
        (keep if is_mpi == with_mpi else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
