"""Loading an svmlight file: ``mpiml.data.read_shard`` at one rank vs scikit-learn's loader.

Run from the repository root (scikit-learn from the ``bench`` extra)::

    python benchmarks/svmlight_load.py /work/data/libsvm/a9a [more files] [--rounds 7] [--json]

Per file: one untimed warm-up of each (numba's cached kernels load, the file is in the page
cache), then ``rounds`` interleaved rounds (mpiml, sklearn, mpiml, sklearn, ...) so machine
noise hits both alike. Reports the median seconds of each, the ratio mpiml / sklearn and
the load average. Both produce a float64 CSR matrix and the labels; the result is checked
to be the same matrix. Single-threaded BLAS; ``MPIML_KERNELS=numpy`` times the Python
reference parser instead.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("files", nargs="+")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    from mpi4py import MPI
    from sklearn.datasets import load_svmlight_file

    from mpiml.data import read_shard

    def ours(path):
        shard = read_shard(path, "svmlight", comm=MPI.COMM_SELF)
        return shard.X, shard.y

    def theirs(path):
        return load_svmlight_file(str(path))

    results = []
    for path in args.files:
        (Xa, ya), (Xb, yb) = ours(path), theirs(path)  # warm-up, and the check
        Xb = Xb[:, :Xa.shape[1]] if Xb.shape[1] > Xa.shape[1] else Xb
        same = Xa.shape == Xb.shape and abs(Xa - Xb).max() == 0 and np.array_equal(ya, yb)
        times = {"mpiml": [], "sklearn": []}
        for _ in range(args.rounds):
            for name, fn in (("mpiml", ours), ("sklearn", theirs)):
                start = time.perf_counter()
                fn(path)
                times[name].append(time.perf_counter() - start)
        med = {k: statistics.median(v) for k, v in times.items()}
        results.append({"file": str(path), "bytes": os.path.getsize(path), "rows": Xa.shape[0], "nnz": Xa.nnz,
                        "same_matrix": bool(same), "mpiml_seconds": med["mpiml"], "sklearn_seconds": med["sklearn"],
                        "ratio": med["mpiml"] / med["sklearn"], "kernels": os.environ.get("MPIML_KERNELS", "auto"),
                        "load_average": os.getloadavg()[0]})
    if args.json:
        print(json.dumps(results, indent=1))
        return
    print(f"{'file':<28} {'MB':>6} {'rows':>7} {'mpiml_s':>8} {'sklearn_s':>9} {'ratio':>6} same  load")
    for r in results:
        print(f"{Path(r['file']).name:<28} {r['bytes'] / 1e6:>6.1f} {r['rows']:>7} {r['mpiml_seconds']:>8.3f} "
              f"{r['sklearn_seconds']:>9.3f} {r['ratio']:>6.2f} {str(r['same_matrix']):<5} {r['load_average']:.2f}")


if __name__ == "__main__":
    main()
