"""Which ``mpiexec`` to start jobs with: ``MPIML_MPIEXEC``, else the one beside this Python (a virtual
environment with the ``mpich``/``openmpi`` extra), else the first on ``PATH``."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

MISSING = "no mpiexec found: install the 'mpich' or 'openmpi' extra, or set MPIML_MPIEXEC"
# MPICH's mpiexec (hydra): each rank bound to a core, in turn (two a core where they outnumber the cores)
MPICH_BIND_TO_CORE = ("-bind-to", "core", "-map-by", "core")


def find_mpiexec(environ=None) -> str | None:
    """The ``mpiexec`` to use (see the module docstring), or None when there is none."""
    override = (os.environ if environ is None else environ).get("MPIML_MPIEXEC")
    if override:
        return override
    beside = Path(sys.executable).parent / "mpiexec"
    if beside.exists():
        return str(beside)
    return shutil.which("mpiexec")
