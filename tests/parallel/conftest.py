from mpi_tmp import shared_tmp  # noqa: F401  (fixture)
