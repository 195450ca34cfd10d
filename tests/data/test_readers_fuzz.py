"""The readers never guess: 300 mutated files per format (CSV, svmlight, ratings, npz), read at
p=1 and p=3 (one mpiexec each), give exactly the rows of the reference readers
(reference_readers.py) or one collective DataError naming the file and the line the reference
names. No traceback, no hang (bounded run), no valid file refused. See fuzz_readers.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mpirun import python_command, run_mpi

SCRIPT = Path(__file__).with_name("fuzz_readers.py")
PER_FORMAT = 300


@pytest.mark.parametrize("ranks", [1, 3])
def test_mutated_files_give_the_reference_rows_or_a_clean_error(tmp_path, ranks):
    env = {"MPIML_MEMORY_LIMIT": "1G", "FUZZ_PER_FORMAT": str(PER_FORMAT), "FUZZ_DIR": str(tmp_path),
           "MPIR_CVAR_ENABLE_HEAVY_YIELD": "1", "OMPI_MCA_mpi_yield_when_idle": "1"}  # ranks > cores: yield
    result = run_mpi(ranks, python_command(str(SCRIPT)), timeout=300, env=env)
    assert not result.hung, result.describe()
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert lines, result.describe()
    summary = json.loads(lines[-1])
    failures = summary["failures"]
    assert not failures, "\n".join(f"{f['format']} {f['file']} {f['options']}: {f['problem']}" for f in failures[:20])
    assert result.returncode == 0, result.describe()
    for fmt, tally in summary["tally"].items():
        assert tally["cases"] == PER_FORMAT, (fmt, tally)
        # both outcomes are exercised: files the reference accepts (read alike) and files it refuses
        assert 0.2 * PER_FORMAT < tally["valid"] < 0.8 * PER_FORMAT, (fmt, tally)
        assert tally["rows"] + tally["errors"] == PER_FORMAT, (fmt, tally)
