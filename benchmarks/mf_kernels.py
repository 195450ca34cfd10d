"""Micro-benchmark: mpiml's compiled factorization kernels against the single-node peers.

    PYTHONPATH=. python benchmarks/mf_kernels.py                          # synthetic, MovieLens-1M sized
    PYTHONPATH=. python benchmarks/mf_kernels.py --ratings /work/data/ml-1m/ratings.dat
    PYTHONPATH=. python benchmarks/mf_kernels.py --quick --json           # a small smoke run

One process, one thread (BLAS and numba pinned to 1), the same ratings for everybody.
Each case times one unit of work of mpiml's kernel and of its peer, interleaved over
``--repeats`` rounds (the order alternating), so slow phases of a shared machine hit
both alike; it reports medians of CPU seconds (``time.process_time``, robust to other
load on the machine) and of wall seconds, and their ratios mpiml / peer. First calls
(compilation or cache load) are excluded and reported separately.

* ``ials_cg_f32`` / ``ials_cg_f64``: one iALS iteration (users then items half-step,
  conjugate gradient, 3 steps, warm start) against ``implicit``'s
  ``least_squares_cg`` (the routine ``AlternatingLeastSquares(use_cg=True)`` runs per
  half-step) at ``num_threads=1``, given the confidences ``1 + alpha * r`` that mpiml
  uses; both start from the same factors, and the report gives how far apart they end.
* ``ials_chol_f64``: the same with the exact (Cholesky) solvers (``implicit``'s
  ``least_squares``).
* ``als_f64``: an explicit ALS-WR iteration, biases on, against mpiml's numpy reference
  (no peer library has explicit ALS; its work per row is that of ``ials_chol``).
* ``sgd_epoch``: one epoch of per-rating SGD with biases over all ratings against
  Surprise's ``SVD(n_epochs=1, biased=True).fit`` (which also draws its initial factors,
  a small part of the time).
* ``pair_dots``/``ials_loss``: the loss sums against the numpy references.

``compile`` runs a fresh interpreter twice with an empty numba cache directory: the
first run compiles every kernel (cold), the second loads them from the cache (warm);
it reports CPU seconds per kernel (wall time on a loaded machine says little).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from mpiml.mf import als, dsgd, ials  # noqa: E402
from mpiml.mf.partition import build_rows, pair_dots  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratings", help="a ratings file: user item [rating] per line, separated by "
                                          "'::', tab, comma or spaces (MovieLens ratings.dat works)")
    parser.add_argument("--users", type=int, default=6040)
    parser.add_argument("--items", type=int, default=3706)
    parser.add_argument("--nnz", type=float, default=1.0e6, help="synthetic ratings")
    parser.add_argument("--rank", type=int, default=64)
    parser.add_argument("--sgd-rank", type=int, default=64)
    parser.add_argument("--reg", type=float, default=0.1)
    parser.add_argument("--alpha", type=float, default=2.0)
    parser.add_argument("--cg-steps", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cases", default="ials_cg_f32,ials_cg_f64,ials_chol_f64,als_f64,sgd_epoch,pair_dots,"
                                           "ials_loss,compile")
    parser.add_argument("--quick", action="store_true", help="small data, 2 rounds")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--probe-compile", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.users, args.items, args.nnz, args.rank, args.sgd_rank, args.repeats = 600, 400, 3e4, 16, 16, 2
    return args


# --------------------------------------------------------------------- data
def load_ratings(args):
    """``(users, items, values)`` as dense 0-based indices and float64 values."""
    if args.ratings:
        text = Path(args.ratings).read_text()
        for sep in ("::", "\t", ","):
            text = text.replace(sep, " ")
        first = text.split("\n", 1)[0].split()
        table = np.array(text.split(), dtype=np.float64).reshape(-1, len(first))
        users = np.unique(table[:, 0], return_inverse=True)[1]
        items = np.unique(table[:, 1], return_inverse=True)[1]
        values = table[:, 2] if table.shape[1] > 2 else np.ones(len(table))
        source = args.ratings
    else:
        from mpiml.data.synthetic_ratings import SyntheticSpec, synthetic_ratings

        spec = SyntheticSpec(users=args.users, items=args.items, ratings=int(args.nnz), rank=16, noise=0.5, seed=1)
        shard = synthetic_ratings(spec)
        users = np.unique(shard.users, return_inverse=True)[1]
        items = np.unique(shard.items, return_inverse=True)[1]
        values = np.clip(np.round(shard.values), 1, 5)
        source = spec.describe()
    return users.astype(np.int64), items.astype(np.int64), values.astype(np.float64), source


def _timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.process_time() - cpu, time.perf_counter() - wall


# -------------------------------------------------------------------- cases
def case_ials(data, args, dtype, solver):
    """One iALS iteration of mpiml against implicit's native routine."""
    import scipy.sparse
    from implicit.cpu import _als

    users, items, values = data
    nu, ni, k = users.max() + 1, items.max() + 1, args.rank
    ur, ir = build_rows(0, nu, users, items, values), build_rows(0, ni, items, users, values)
    cui = scipy.sparse.csr_matrix(((1.0 + args.alpha * np.abs(values)).astype(np.float32), (users, items)),
                                  shape=(nu, ni))
    ciu = cui.T.tocsr()
    rng = np.random.default_rng(0)
    x0, y0 = (rng.random((nu, k)) * 0.01).astype(dtype), (rng.random((ni, k)) * 0.01).astype(dtype)
    result = {}

    def mine():
        x, y = x0.copy(), y0.copy()
        x = ials.ials_rows(ur, y, y.T @ y, args.reg, args.alpha, solver, args.cg_steps, x)
        y = ials.ials_rows(ir, x, x.T @ x, args.reg, args.alpha, solver, args.cg_steps, y)
        result["mpiml"] = x, y

    def peer():
        x, y = x0.copy(), y0.copy()
        if solver == "cg":
            _als.least_squares_cg(cui, x, y, args.reg, num_threads=1, cg_steps=args.cg_steps)
            _als.least_squares_cg(ciu, y, x, args.reg, num_threads=1, cg_steps=args.cg_steps)
        else:
            _als.least_squares(cui, x, y, args.reg, num_threads=1)
            _als.least_squares(ciu, y, x, args.reg, num_threads=1)
        result["peer"] = x, y

    def check():
        (xm, ym), (xp, yp) = result["mpiml"], result["peer"]
        return {"max_rel_diff_to_peer": float(max(np.abs(xm - xp).max() / np.abs(xp).max(),
                                                  np.abs(ym - yp).max() / np.abs(yp).max())),
                "dtype": str(xm.dtype)}

    return mine, peer, "implicit", check


def case_als(data, args):
    users, items, values = data
    nu, ni = users.max() + 1, items.max() + 1
    ur, ir = build_rows(0, nu, users, items, values), build_rows(0, ni, items, users, values)
    layout = als.Layout(args.rank, True)
    p0, q0 = als.initial_factors(0, nu, ni, layout)
    mu = float(values.mean())
    result = {}

    def iteration(key):
        p = als.half_step(ur, p0, q0, mu, args.reg, layout, "users")
        q = als.half_step(ir, q0, p, mu, args.reg, layout, "items")
        result[key] = p, q

    def peer():
        os.environ["MPIML_KERNELS"] = "numpy"
        try:
            iteration("peer")
        finally:
            del os.environ["MPIML_KERNELS"]

    def check():
        (pm, qm), (pp, qp) = result["mpiml"], result["peer"]
        return {"max_rel_diff_to_peer": float(max(np.abs(pm - pp).max() / np.abs(pp).max(),
                                                  np.abs(qm - qp).max() / np.abs(qp).max()))}

    return (lambda: iteration("mpiml")), peer, "numpy reference", check


def case_sgd(data, args):
    from surprise import SVD, Trainset

    users, items, values = data
    nu, ni, k = users.max() + 1, items.max() + 1, args.sgd_rank
    ur, ir = {}, {}
    for u, i, r in zip(users.tolist(), items.tolist(), values.tolist()):
        ur.setdefault(u, []).append((i, r))
        ir.setdefault(i, []).append((u, r))
    trainset = Trainset(ur, ir, nu, ni, len(values), (float(values.min()), float(values.max())),
                        {u: u for u in range(nu)}, {i: i for i in range(ni)})
    layout = als.Layout(k, True)
    p0, q0 = als.initial_factors(0, nu, ni, layout)
    p0[:, :k] *= 0.1 * k ** 0.5  # Surprise's init_std_dev = 0.1
    q0[:, :k] *= 0.1 * k ** 0.5
    block = dsgd.BlockRatings(users, items, values)
    mu, epoch = float(values.mean()), [0]

    def mine():
        p, q = p0.copy(), q0.copy()
        dsgd.sgd_block(block, p, q, mu, 0.005, 0.02, np.random.default_rng(epoch[0]),
                       layout.fixed("users"), layout.fixed("items"))
        epoch[0] += 1

    def peer():
        SVD(n_factors=k, n_epochs=1, biased=True, lr_all=0.005, reg_all=0.02, random_state=0).fit(trainset)

    return mine, peer, "surprise", lambda: {}


def case_pair_dots(data, args):
    from mpiml.mf import kernels

    users, items, values = data
    rng = np.random.default_rng(0)
    p, q = rng.normal(size=(users.max() + 1, args.rank)), rng.normal(size=(items.max() + 1, args.rank))
    out = np.empty(users.size)
    return (lambda: kernels.pair_dots(p, users, q, items, out)), (lambda: pair_dots(p, users, q, items)), \
        "numpy reference", lambda: {}


def case_ials_loss(data, args):
    users, items, values = data
    rows = build_rows(0, users.max() + 1, users, items, values)
    rng = np.random.default_rng(0)
    p, q = rng.normal(size=(rows.n_rows, args.rank)), rng.normal(size=(items.max() + 1, args.rank))

    def peer():
        os.environ["MPIML_KERNELS"] = "numpy"
        try:
            ials.observed_loss(rows, p, q, args.alpha)
        finally:
            del os.environ["MPIML_KERNELS"]

    return (lambda: ials.observed_loss(rows, p, q, args.alpha)), peer, "numpy reference", lambda: {}


CASES = {
    "ials_cg_f32": lambda d, a: case_ials(d, a, np.float32, "cg"),
    "ials_cg_f64": lambda d, a: case_ials(d, a, np.float64, "cg"),
    "ials_chol_f64": lambda d, a: case_ials(d, a, np.float64, "cholesky"),
    "als_f64": case_als,
    "sgd_epoch": case_sgd,
    "pair_dots": case_pair_dots,
    "ials_loss": case_ials_loss,
}


def run_case(name, data, args) -> dict:
    mine, peer, peer_name, check = CASES[name](data, args)
    first = _timed(mine)  # compile or cache load, plus the work itself
    _timed(peer)
    times = {"mpiml": [], "peer": []}
    for rnd in range(args.repeats):
        order = [("mpiml", mine), ("peer", peer)]
        for key, fn in order if rnd % 2 == 0 else order[::-1]:
            times[key].append(_timed(fn))
    med = {key: (statistics.median(t[0] for t in v), statistics.median(t[1] for t in v)) for key, v in times.items()}
    return {"peer": peer_name,
            "mpiml_cpu_s": med["mpiml"][0], "peer_cpu_s": med["peer"][0],
            "mpiml_wall_s": med["mpiml"][1], "peer_wall_s": med["peer"][1],
            "ratio_cpu": med["mpiml"][0] / med["peer"][0], "ratio_wall": med["mpiml"][1] / med["peer"][1],
            "first_call_wall_s": first[1], **check()}


# ------------------------------------------------------------------ compile
def probe_compile() -> dict:
    """CPU seconds of each kernel's first call on tiny inputs (compilation, or loading from the cache)."""
    out = {}
    start = time.process_time()
    import numba  # noqa: F401

    out["import_numba"] = time.process_time() - start
    rng = np.random.default_rng(0)
    users, items = np.array([0, 1, 1]), np.array([1, 0, 2])
    vals = np.array([3.0, 4.0, 5.0])
    rows = build_rows(0, 2, users, items, vals)
    q64 = rng.normal(size=(3, 4))
    calls = {
        "als (gram_solve_rows, f64)": lambda: als.ridge_rows(rows, q64, 0.5, 0.1),
        "ials cholesky (gram_solve_rows, f32)": lambda: ials.ials_rows(rows, q64.astype(np.float32),
                                                                       q64.T @ q64, 0.1, 2.0),
        "ials cg (cg_rows, f64)": lambda: ials.ials_rows(rows, q64, q64.T @ q64, 0.1, 2.0, "cg"),
        "ials cg (cg_rows, f32)": lambda: ials.ials_rows(rows, q64.astype(np.float32), q64.T @ q64, 0.1, 2.0, "cg"),
        "sgd (sgd_ratings)": lambda: dsgd.sgd_block(dsgd.BlockRatings(users, items, vals), rng.normal(size=(2, 4)),
                                                    q64.copy(), 0.0, 0.01, 0.01, rng, 3, 2),
        "block_sse (residual_sse)": lambda: dsgd.block_sse(dsgd.BlockRatings(users, items, vals), q64, q64, 0.0),
        "predict_rows (pair_dots)": lambda: als.predict_rows(rows, q64, q64, 0.0),
        "ials loss (ials_observed)": lambda: ials.observed_loss(rows, q64[:2], q64, 2.0),
    }
    for name, call in calls.items():
        start = time.process_time()
        call()
        out[name] = time.process_time() - start
    out["total"] = sum(out.values())
    return out


def measure_compile() -> dict:
    result = {}
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache, "PYTHONPATH": str(REPO)}
        for phase in ("cold", "warm"):
            proc = subprocess.run([sys.executable, __file__, "--probe-compile"], env=env, capture_output=True,
                                  text=True, check=True)
            result[phase] = json.loads(proc.stdout)
    return result


# ------------------------------------------------------------------- driver
def main(argv=None):
    args = parse_args(argv)
    if args.probe_compile:
        print(json.dumps(probe_compile()))
        return
    users, items, values, source = load_ratings(args)
    data = (users, items, values)
    report = {"data": {"source": source, "users": int(users.max() + 1), "items": int(items.max() + 1),
                       "ratings": int(values.size)},
              "rank": args.rank, "sgd_rank": args.sgd_rank, "cg_steps": args.cg_steps, "repeats": args.repeats,
              "load_before": os.getloadavg(), "cases": {}}
    for name in filter(None, args.cases.split(",")):
        if name == "compile":
            report["compile_s"] = measure_compile()
            continue
        try:
            report["cases"][name] = run_case(name, data, args)
        except ImportError as exc:
            report["cases"][name] = {"missing": str(exc)}
        if not args.json:
            print(name, json.dumps(report["cases"][name]), flush=True)
    report["load_after"] = os.getloadavg()
    if args.json:
        print(json.dumps(report, indent=1))
        return
    print(f"\ndata: {report['data']}  load before/after: {report['load_before']} / {report['load_after']}")
    print(f"{'case':15s} {'peer':16s} {'mpiml cpu s':>11s} {'peer cpu s':>11s} {'ratio cpu':>9s} {'ratio wall':>10s}")
    for name, r in report["cases"].items():
        if "missing" in r:
            print(f"{name:15s} missing: {r['missing']}")
            continue
        print(f"{name:15s} {r['peer']:16s} {r['mpiml_cpu_s']:11.4f} {r['peer_cpu_s']:11.4f} "
              f"{r['ratio_cpu']:9.3f} {r['ratio_wall']:10.3f}")
    if "compile_s" in report:
        for phase in ("cold", "warm"):
            c = report["compile_s"][phase]
            print(f"first calls, {phase} cache: total {c['total']:.2f} CPU s (import numba {c['import_numba']:.2f} s)")


if __name__ == "__main__":
    main()
