"""Real-data benchmark: mpiml's matrix factorization and linear models against the
single-node libraries a user already has (Surprise, implicit, scikit-learn), on public
data sets kept outside the repository (see benchmarks/README.md for where to get them).

    python benchmarks/real_data.py run --data-dir ~/data --rounds 3 --json real.json --plot real.png
    python benchmarks/real_data.py run --ratings ml-1m=~/data/ml-1m/ratings.dat \\
        --libsvm a9a=~/data/a9a:~/data/a9a.t --libsvm w8a=~/data/w8a
    python benchmarks/real_data.py run --data-dir ~/data --quick       # small subsets, one round
    python benchmarks/real_data.py report real.json --plot real.png    # the table again, from a saved run
    python benchmarks/real_data.py checksums --data-dir ~/data         # SHA-256 against the recorded ones

Every measured run is its own process (so wall time includes start-up and loading), with
one BLAS/numba thread per rank. For each data set the runs are repeated over ``--rounds``
rounds; the order of the runs is reversed every other round, so a loaded shared machine
hits all of them alike, and the ratios are taken within a round, then the median over rounds.

Ratings (90/10 split hashed from each rating's line number: mpiml's ``--test-fraction 0.1
--split-seed S``, and the peers split with the same function): mpiml ALS, DSGD and implicit
ALS with no tuning flags at p=1 and p=2, tuned ALS/DSGD, implicit ALS at a matched rank,
alpha, regularization and iteration count; Surprise SVD (and SVD++ under ``--svdpp-cap``);
implicit's AlternatingLeastSquares (its defaults, and matched to mpiml: once fed the training
values, confidence ``alpha * r``, once fed ``1 + alpha * r`` with its alpha = 1, which is
mpiml's confidence, so the same objective). Test ratings of users or items unseen in
training are dropped for everyone, as mpiml's default ``--cold-start drop`` does.

LIBSVM binary sets (the ``.t`` file as test set when there is one, else a seeded 80/20
split of the global rows, mpiml's ``--test-fraction 0.2``): mpiml ``sync`` SGD with no
tuning flags and L-BFGS at ``alpha = 1 / (C n_train)``, C = 1, at p=1 and p=2; scikit-learn's
LogisticRegression() (the same objective, scaled by C n) and SGDClassifier(loss='log_loss')
(mean log loss + alpha/2 ||w||^2 with alpha = 1e-4, the objective mpiml's SGD defaults
minimize); mpiml's svmlight reader against sklearn.datasets.load_svmlight_file.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SCRIPT = Path(__file__).resolve()

# ---------------------------------------------------------------------------------------------
# What the suite reads from `mpiml mf|sgd --json`. Field names are changing between versions:
# the first key present wins; "a-b" means the difference of two keys. A quantity a job needs
# that is missing is reported with the keys that were there.
#
#   quantity            mf (mpiml mf --json)                  sgd (mpiml sgd --json)
#   fit_seconds         fit_seconds | seconds                  fit_seconds | seconds - load_seconds
#   rmse                test_rmse                              -
#   ndcg / precision    ndcg_at_10 ... / precision_at_10 ...   -
#   accuracy            -                                      test_accuracy
#   objective           objective                              train_loss (mean loss + penalty)
#   iterations          iterations                             lbfgs_iterations | epochs
#   compute_imbalance   compute_imbalance (if present)         compute_imbalance (if present)
# ---------------------------------------------------------------------------------------------
MF_FIELDS = {
    "fit_seconds": ("fit_seconds", "seconds"),
    "rmse": ("test_rmse", "rmse"),
    "ndcg": ("ndcg_at_10", "test_ndcg_at_10", "ndcg@10", "ndcg"),
    "precision": ("precision_at_10", "test_precision_at_10", "precision@10", "p@10"),
    "iterations": ("iterations", "iters"),
    "objective": ("objective",),
    "test_count": ("test_count",),
    "train_ratings": ("train_ratings",),
    "test_ratings": ("test_ratings",),
    "users": ("users",),
    "items": ("items",),
    "ranked_users": ("ranked_users",),
    "comm_fraction": ("comm_fraction",),
    "compute_imbalance": ("compute_imbalance",),
    "per_rank": ("per_rank",),
}
SGD_FIELDS = {
    "fit_seconds": ("fit_seconds", "seconds-load_seconds"),
    "load_seconds": ("load_seconds",),
    "accuracy": ("test_accuracy",),
    "objective": ("train_loss",),
    "iterations": ("lbfgs_iterations", "epochs"),
    "compute_imbalance": ("compute_imbalance",),
    "per_rank": ("per_rank",),
}
SHORT = {"mf-explicit": "mf", "mf-implicit": "imf", "logreg": "logreg", "load": "load"}
# Substrings that find a renamed ranking key when none of the listed ones is there.
FUZZY = {"ndcg": "ndcg", "precision": "precision"}
# What each job must report (else the run is flagged).
NEEDS = {"mf-explicit": ("fit_seconds", "rmse"), "mf-implicit": ("fit_seconds", "ndcg", "precision"),
         "logreg": ("fit_seconds", "accuracy", "objective"), "load": ("fit_seconds",)}

# Digests of the public copies benchmarks/README.md lists (SHA-256; a 40-digit one is a git blob
# SHA-1), by the file's last two path components or its name; a manifest.json or --sha256 overrides.
KNOWN_DIGESTS = {
    "a9a": ["f5d5ffd8d865ff41328e7ee043e4b020816914ff6843ff15b98905ddbedce906"],
    "a9a.t": ["7d8c09f1120d9ff231d85caba98956906033f3c4d53e2b15ab7ef83710de6a76"],
    "w8a": ["b464b4f6ce6a5d9e181ffc793e19a04751036273722312398ef7673705014902"],
    "ijcnn1": ["7fe291672c3fefe6a7e3c51529becd23f0e985ba05ffb8d53c9c648c1e91cc19"],
    "ijcnn1.t": ["e7b0bbd518641980dc322746c6bc59d019d3153934e6258e48f9d8cfae2c4bb8"],
    "reuters-lasvm": ["caacd2baf041b15b51ab65c0ec2ac834a439a561fb6708427c1c002c10ac7215"],
    "reuters-lasvm.t": ["6e267dcb1f83c68bcb1c3f30d7a70dd9fe059e1da39b9c191456ff827507539f"],
    "ml-100k/u.data": ["06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490"],
    # the rebuilt copy (timestamps 0), and the original GroupLens file by its git blob SHA-1
    "ml-1m/ratings.dat": ["d77eea6105d759ebb726c6e60f565c7aa6665792f87083ffd04052e54f02c081",
                          "77a7c4b150f588c23bb9e1f068aa996c0b413695"],
    "ratings_users_1-2999.dat": ["1273c4edfe3c0ff9e3a0a0d55819faeb947da0ad7df3927333b51ebefbeedc3d"],
    # built from public raw data (not LIBSVM's own files): see benchmarks/README.md
    "news20-hashed": ["39d207ed9102c4132e8fd38f1dc2b622200fb960e17974f6c2ffb0ba81b6defb"],
    "news20-hashed.t": ["9e8c1779e3ae60a5c79c6aebe0a879e42b69a8cbf3f3558dd9d431f05809f44e"],
    "covtype.binary": ["d0959bbd681f63ba387c3009a89456b9a6d88bbd556b7017ec4cd0fa486eb937"],
    "skin_nonskin": ["d8db15510379bd4cef541a80d8550a4d9c2d0f4f85848e5221dc3980b6386d21"],
}
RATINGS_TEST_FRACTION, LIBSVM_TEST_FRACTION, LIBSVM_SPLIT_SEED, K = 0.1, 0.2, 0, 10
SKLEARN_MAX_ITER = 100  # LogisticRegression()'s default
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")
# Tuned mpiml configurations (``--tuned ALGO=FLAGS`` replaces an algorithm's list).
# (picked on ML-1M: each the best of a few tries; see benchmarks/README.md)
TUNED = {"als": ["--rank 50 --reg 0.07", "--rank 100 --reg 0.07"],
         "dsgd": ["--iters 30", "--rank 100 --iters 30"],
         "ials": ["--confidence 0.25", "--rank 64 --confidence 0.25"]}
# mpiml implicit ALS and implicit's ALS at the same settings (``--match``).
MATCH = {"rank": 64, "alpha": 0.5, "reg": 30.0, "iters": 15}
QUICK_RATINGS, QUICK_TRAIN_ROWS, QUICK_TEST_ROWS = 60000, 6000, 3000


# ============================================================================ pure helpers
def pick(result: dict, keys) -> object:
    """The value of the first of ``keys`` present in ``result`` ("a-b": a difference); None if none."""
    for key in keys:
        if "-" in key and key not in result:
            a, b = key.split("-", 1)
            if isinstance(result.get(a), (int, float)) and isinstance(result.get(b), (int, float)):
                return result[a] - result[b]
        elif key in result and result[key] is not None:
            return result[key]
    return None


def read_mpiml(result: dict, fields: dict, job: str) -> dict:
    """Normalized metrics from one ``mpiml --json`` object; ``missing`` lists absent needs with the keys seen."""
    out = {}
    for name, keys in fields.items():
        value = pick(result, keys)
        if value is None and name in FUZZY:
            found = sorted(k for k in result if FUZZY[name] in k.lower() and isinstance(result[k], (int, float)))
            value = result[found[0]] if found else None
        if value is not None:
            out[name] = value
    missing = [n for n in NEEDS.get(job, ()) if n not in out]
    if missing:
        out["missing"] = {"quantities": missing, "keys_seen": sorted(result)}
    return out


def logistic_objective(X, y, coef, intercept, alpha: float) -> float:
    """Mean logistic loss (labels > 0 positive) plus ``alpha / 2 * ||coef||^2``: mpiml's objective."""
    import numpy as np

    sign = np.where(np.asarray(y) > 0, 1.0, -1.0)
    margin = np.asarray(X @ np.ravel(coef)).ravel() + float(np.ravel(intercept)[0] if np.size(intercept) else 0.0)
    coef = np.ravel(coef)
    return float(np.mean(np.logaddexp(0.0, -sign * margin)) + 0.5 * alpha * coef @ coef)


def median_or_none(values):
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return statistics.median(values) if values else None


def summarize(runs: list[dict]) -> list[dict]:
    """One row per (data set, variant): medians over rounds and the per-round ratios' medians.

    ``fit_vs_peer`` / ``wall_vs_peer``: a run's seconds over the fastest peer library of the
    same data set and job in the same round; ``p2_over_p1``: a p=2 run's fit seconds over its
    p=1 twin's in the same round.
    """
    order, groups = [], {}
    for run in runs:
        key = (run["dataset"], run["variant"])
        if key not in groups:
            order.append(key)
            groups[key] = []
        groups[key].append(run)
    by_round = {(r["dataset"], r["variant"], r["round"]): r for r in runs}

    def ok(run):
        return run is not None and not run.get("error") and run.get("metrics", {}).get("fit_seconds") is not None

    rows = []
    for dataset, variant in order:
        group = groups[(dataset, variant)]
        first = group[0]
        good = [r for r in group if ok(r)]
        row = {"dataset": dataset, "variant": variant, "job": first["job"], "label": first["label"],
               "ranks": first["ranks"], "peer": first["peer"], "rounds": len(group), "ok_rounds": len(good),
               "error": next((r["error"] for r in group if r.get("error")), None)}
        for name in ("fit_seconds", "rmse", "ndcg", "precision", "accuracy", "objective", "iterations"):
            row[name] = median_or_none(r["metrics"].get(name) for r in good)
        row["wall_seconds"] = median_or_none(r.get("wall_seconds") for r in good)
        peers = [r for r in runs if r["dataset"] == dataset and r["job"] == first["job"] and r["peer"]]
        fit_ratios, wall_ratios, p2 = [], [], []
        for run in good:
            same_round = [p for p in peers if p["round"] == run["round"] and ok(p)]
            if same_round:
                fastest = min(same_round, key=lambda p: p["metrics"]["fit_seconds"])
                if fastest["metrics"]["fit_seconds"] > 0:
                    fit_ratios.append(run["metrics"]["fit_seconds"] / fastest["metrics"]["fit_seconds"])
                fastest_wall = min(p["wall_seconds"] for p in same_round)
                if fastest_wall > 0:
                    wall_ratios.append(run["wall_seconds"] / fastest_wall)
            twin = by_round.get((dataset, first.get("pair"), run["round"])) if first.get("pair") else None
            if ok(twin) and twin["metrics"]["fit_seconds"] > 0:
                p2.append(run["metrics"]["fit_seconds"] / twin["metrics"]["fit_seconds"])
        row["fit_vs_peer"] = median_or_none(fit_ratios)
        row["wall_vs_peer"] = median_or_none(wall_ratios)
        row["p2_over_p1"] = median_or_none(p2)
        rows.append(row)
    for row in rows:
        row["quality_vs_peer"] = quality_vs_peer(row, [r for r in rows if r["dataset"] == row["dataset"]
                                                       and r["job"] == row["job"] and r["peer"]])
    sets = list(dict.fromkeys(r["dataset"] for r in rows))
    jobs = list(NEEDS)
    return sorted(rows, key=lambda r: (sets.index(r["dataset"]), jobs.index(r["job"]) if r["job"] in jobs else 99))


# Counts every run that reports them must agree on: they show all saw the same split.
SPLIT_COUNTS = ("train_ratings", "test_count", "ranked_users", "n_train", "n_test")


def split_check(runs: list[dict], expected: dict | None = None) -> str:
    """A note saying the runs' split counts agree (with ``expected`` too), or which differ."""
    seen = {}
    for key, value in (expected or {}).items():
        seen.setdefault(key, {}).setdefault(value, []).append("expected")
    for run in runs:
        for key in SPLIT_COUNTS:
            value = run.get("metrics", {}).get(key)
            if value is not None:
                seen.setdefault(key, {}).setdefault(value, []).append(run["variant"])
    differ = {key: values for key, values in seen.items() if len(values) > 1}
    if differ:
        return "SPLIT MISMATCH: " + "; ".join(
            f"{key}: " + ", ".join(f"{value} ({'/'.join(sorted(set(who)))})" for value, who in values.items())
            for key, values in differ.items())
    return "same split everywhere: " + (", ".join(f"{key} {next(iter(values))}" for key, values in seen.items())
                                        or "nothing to compare")


QUALITY = {"mf-explicit": ("rmse", -1), "mf-implicit": ("ndcg", 1), "logreg": ("accuracy", 1)}


def quality_vs_peer(row: dict, peers: list[dict]):
    """The row's quality over the best peer's, higher better (RMSE: best peer's over the row's)."""
    if row["job"] not in QUALITY:
        return None
    name, sign = QUALITY[row["job"]]
    values = [p[name] for p in peers if p.get(name) is not None]
    if row.get(name) is None or not values:
        return None
    best = min(values) if sign < 0 else max(values)
    if sign < 0:
        return best / row[name] if row[name] > 0 else None
    return row[name] / best if best > 0 else None


def quality_text(row: dict) -> str:
    """The job's quality numbers, short."""
    def f(name, fmt):
        return "-" if row.get(name) is None else format(row[name], fmt)
    if row["job"] == "mf-explicit":
        return f"rmse {f('rmse', '.4f')}"
    if row["job"] == "mf-implicit":
        return f"ndcg {f('ndcg', '.4f')} p@10 {f('precision', '.4f')}"
    if row["job"] == "logreg":
        return f"acc {f('accuracy', '.4f')} obj {f('objective', '.5f')}"
    return ""


def _last_line(text) -> str:
    lines = [line.strip() for line in str(text or "").splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _num(value, fmt=".2f") -> str:
    return "-" if value is None else format(value, fmt)


def format_table(rows: list[dict], rounds: list[dict] | None = None, notes: dict | None = None) -> str:
    """The compact text table (one block per data set), with load averages and notes under each."""
    headers = ("set", "job", "run", "p", "quality", "fit_s", "wall_s", "fit/peer", "wall/peer", "p2/p1", "it")
    cells = []
    for row in rows:
        quality = quality_text(row) if row["ok_rounds"] else "FAILED " + _last_line(row.get("error"))[-32:]
        iters = "-" if row.get("iterations") is None else f"{row['iterations']:.0f}"
        cells.append((row["dataset"], SHORT.get(row["job"], row["job"]), row["label"], str(row["ranks"]), quality,
                      _num(row["fit_seconds"]), _num(row["wall_seconds"]), _num(row["fit_vs_peer"]),
                      _num(row["wall_vs_peer"]), _num(row["p2_over_p1"]), iters))
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, h in enumerate(headers)]

    def line(values):
        return "  ".join(v.ljust(w) for v, w in zip(values, widths)).rstrip()

    out = [line(headers), line(["-" * w for w in widths])]
    previous = None
    for row, cell in zip(rows, cells):
        if previous is not None and row["dataset"] != previous:
            out.extend(_footer(previous, rounds, notes))
        previous = row["dataset"]
        out.append(line(cell))
    if previous is not None:
        out.extend(_footer(previous, rounds, notes))
    return "\n".join(out)


def _footer(dataset, rounds, notes) -> list[str]:
    lines = []
    loads = [r for r in rounds or [] if r["dataset"] == dataset]
    if loads:
        lines.append(f"  {dataset}: load avg before->after each round: "
                     + ", ".join(f"{r['load_before']:.1f}->{r['load_after']:.1f}" for r in loads))
    for note in (notes or {}).get(dataset, []):
        lines.append(f"  {dataset}: {note}")
    return lines


def sha256_of(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def git_blob_sha1(path) -> str:
    """``git hash-object`` of a file: how a copy is matched to the one in a public repository."""
    digest = hashlib.sha1(f"blob {os.path.getsize(path)}\0".encode())
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def known_digests(path) -> list[str]:
    """Digests recorded in this file for a data file, by its last two path components or its name."""
    parts = Path(path).parts
    return KNOWN_DIGESTS.get("/".join(parts[-2:])) or KNOWN_DIGESTS.get(parts[-1]) or []


def check_files(expected: dict) -> list[dict]:
    """``[{path, expected, actual, ok}]`` for ``{path: digest, list of digests or None}``. A digest is a
    SHA-256 (64 hex digits) or a git blob SHA-1 (40); a mismatch is warned about, not fatal."""
    out = []
    for path, want in expected.items():
        wants = [w.lower() for w in ([want] if isinstance(want, str) else want or [])]
        actual = sha256_of(path) if os.path.isfile(path) else None
        ok = (actual in wants) if wants else None
        if ok is False and actual and any(len(w) == 40 for w in wants):
            ok = git_blob_sha1(path) in wants
        if ok is False:
            print(f"warning: {path}: SHA-256 {actual} differs from the recorded {' or '.join(wants)}",
                  file=sys.stderr)
        elif not wants:
            print(f"note: {path}: no recorded SHA-256 (it is {actual})", file=sys.stderr)
        out.append({"path": str(path), "expected": wants or None, "actual": actual, "ok": ok})
    return out


def manifest_checksums(manifest) -> dict:
    """``{absolute path: sha256}`` from a manifest of any shape ({key: {path, sha256}}, lists, ...)."""
    found = {}

    def walk(node):
        if isinstance(node, dict):
            path = node.get("path") or node.get("file")
            if isinstance(path, str) and isinstance(node.get("sha256"), str):
                found[os.path.abspath(path)] = node["sha256"]
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(manifest)
    return found


def discover(data_dir, manifest: dict | None) -> tuple[list["Dataset"], dict]:
    """Data sets under ``data_dir``: from ``manifest.json`` (ratings files: entries with users and a
    format "user..item..rating..."; LIBSVM: svmlight entries, ``NAME.t`` the test set of ``NAME``), else by the
    usual layout (ml-*/ratings.dat or u.data, libsvm/NAME[.t])."""
    data_dir = Path(data_dir)
    sets = []
    if manifest:
        entries = {k: v for k, v in manifest.items() if isinstance(v, dict) and isinstance(v.get("path"), str)}
        for key, entry in entries.items():
            fmt = str(entry.get("format", ""))
            path = entry["path"] if os.path.isabs(entry["path"]) else str(data_dir / entry["path"])
            if fmt == "svmlight" and not key.endswith(".t"):
                test = entries.get(key + ".t")
                test_path = None
                if test:
                    test_path = test["path"] if os.path.isabs(test["path"]) else str(data_dir / test["path"])
                sets.append(Dataset(key.split("/")[-1], "libsvm", path, test_path))
            elif "users" in entry and re.search(r"user.{1,4}item.{1,4}rating", fmt) and os.path.isfile(path):
                sets.append(Dataset(key.split("/")[0], "ratings", path))
    else:
        for directory in sorted(data_dir.glob("ml-*")):
            for name in ("ratings.dat", "u.data", "ratings.csv"):
                if (directory / name).is_file():
                    sets.append(Dataset(directory.name, "ratings", str(directory / name)))
                    break
        for path in sorted((data_dir / "libsvm").glob("*")):
            if path.is_file() and path.suffix not in (".t", ".bz2", ".xz", ".gz", ".zip", ".md", ".json"):
                test = path.with_name(path.name + ".t")
                sets.append(Dataset(path.name, "libsvm", str(path), str(test) if test.is_file() else None))
    return [s for s in sets if os.path.isfile(s.train)], manifest_checksums(manifest or {})


# ============================================================================ data sets and runs
@dataclass
class Dataset:
    name: str
    kind: str  # "ratings" | "libsvm"
    train: str
    test: str | None = None
    facts: dict = field(default_factory=dict)

    def files(self):
        return [p for p in (self.train, self.test) if p]


@dataclass
class Variant:
    key: str
    job: str
    label: str
    ranks: int
    peer: bool
    argv: list
    reads: str  # "mf", "sgd" (mpiml --json) or "peer" (a RESULT line from a worker)
    pair: str | None = None
    timeout: float | None = None


def data_rows(path) -> int:
    """Data lines of a text file (not blank, not a # comment): the rows mpiml numbers globally."""
    count = 0
    with open(path, "rb") as handle:
        for line in handle:
            if line.strip() and not line.startswith(b"#"):
                count += 1
    return count


def svmlight_width(paths) -> int:
    """Feature count of svmlight files together: the largest index (+1 if some index is 0)."""
    low, high = None, 0
    pattern = re.compile(rb"[ \t](\d+):")
    for path in paths:
        with open(path, "rb") as handle:
            for line in handle:
                found = [int(i) for i in pattern.findall(line.split(b"#", 1)[0])]
                if found:
                    high, low = max(high, max(found)), min(found) if low is None else min(low, min(found))
    return high + 1 if low == 0 else high


def write_prefix(path, out, rows: int) -> str:
    """The first ``rows`` data lines of ``path`` (comments kept) into ``out``."""
    kept = 0
    with open(path, "rb") as src, open(out, "wb") as dst:
        for line in src:
            if kept >= rows:
                break
            dst.write(line)
            if line.strip() and not line.startswith(b"#"):
                kept += 1
    return str(out)


def write_sample(path, out, rows: int) -> str:
    """Every k-th data line of ``path`` into ``out``, about ``rows`` of them: files sorted by label
    (skin_nonskin) keep both classes, unlike a prefix."""
    stride = max(1, -(-data_rows(path) // rows))
    seen = 0
    with open(path, "rb") as src, open(out, "wb") as dst:
        for line in src:
            if line.strip() and not line.startswith(b"#"):
                if seen % stride == 0:
                    dst.write(line)
                seen += 1
    return str(out)


def mpiml_argv(*args) -> list:
    return [sys.executable, "-m", "mpiml", *map(str, args)]


def peer_argv(spec: dict) -> list:
    return [sys.executable, str(SCRIPT), "worker", json.dumps(spec)]


def ratings_variants(ds: Dataset, opts) -> list[Variant]:
    base = ["--ratings", ds.train, "--test-fraction", RATINGS_TEST_FRACTION, "--split-seed", opts.split_seed, "--json"]
    out = []
    for algo, job in (("als", "mf-explicit"), ("dsgd", "mf-explicit"), ("ials", "mf-implicit")):
        for p in (1, 2):
            out.append(Variant(f"mpiml-{algo}-p{p}", job, f"mpiml {algo}", p, False,
                               mpiml_argv("mf", "--algorithm", algo, *base), "mf",
                               pair=f"mpiml-{algo}-p1" if p == 2 else None))
    for algo, configs in opts.tuned.items():
        job = "mf-implicit" if algo == "ials" else "mf-explicit"
        for n, flags in enumerate(configs, 1):
            out.append(Variant(f"mpiml-{algo}-tuned{n}", job, f"mpiml {algo} tuned{n}", 1, False,
                               mpiml_argv("mf", "--algorithm", algo, *base, *shlex.split(flags)), "mf"))
    m = opts.match
    matched = ["--rank", m["rank"], "--confidence", m["alpha"], "--reg", m["reg"], "--iters", m["iters"]]
    for solver in ("cholesky", "cg"):
        out.append(Variant(f"mpiml-ials-match-{solver}", "mf-implicit", f"mpiml ials r{m['rank']} {solver[:4]}", 1,
                           False, mpiml_argv("mf", "--algorithm", "ials", *base, *matched, "--solver", solver), "mf"))
    split = {"ratings": ds.train, "fraction": RATINGS_TEST_FRACTION, "seed": opts.split_seed}
    out.append(Variant("surprise-svd", "mf-explicit", "surprise SVD", 1, True,
                       peer_argv({"worker": "surprise", "algo": "SVD", **split}), "peer"))
    if opts.svdpp_cap > 0 and ds.facts.get("rows", 0) <= opts.svdpp_max_ratings:
        out.append(Variant("surprise-svdpp", "mf-explicit", "surprise SVDpp", 1, True,
                           peer_argv({"worker": "surprise", "algo": "SVDpp", **split}), "peer",
                           timeout=opts.svdpp_cap))
    out.append(Variant("implicit-defaults", "mf-implicit", "implicit defaults", 1, True,
                       peer_argv({"worker": "implicit", "defaults": True, "values": "raw", **split}), "peer"))
    for values, label in (("raw", "c=a*r"), ("one-plus", "c=1+a*r")):
        out.append(Variant(f"implicit-match-{values}", "mf-implicit", f"implicit r{m['rank']} {label}", 1, True,
                           peer_argv({"worker": "implicit", "defaults": False, "values": values, **m, **split}),
                           "peer"))
    return out


def libsvm_variants(ds: Dataset, opts) -> list[Variant]:
    held = ["--test", ds.test] if ds.test else ["--test-fraction", LIBSVM_TEST_FRACTION]
    # the width of train and test together (what load_svmlight_files gives the peers): a test
    # file may use a feature the training file never does
    base = ["--data", ds.train, *held, "--format", "svmlight", "--n-features", ds.facts["n_features"],
            "--seed", LIBSVM_SPLIT_SEED, "--json"]
    alpha = 1.0 / (opts.C * ds.facts["n_train"])
    out = []
    # The lbfgs runs stop by LogisticRegression()'s rule: tol 1e-4 (mpiml's default) and its max_iter 100
    # (mpiml's default is 500: on covtype's raw features neither converges by 100).
    lbfgs = ["--strategy", "lbfgs", "--reg", repr(alpha), "--iters", SKLEARN_MAX_ITER]
    for name, extra in (("sgd", []), ("lbfgs", lbfgs)):
        for p in (1, 2):
            out.append(Variant(f"mpiml-{name}-p{p}", "logreg", f"mpiml {name}", p, False,
                               mpiml_argv("sgd", *base, *extra), "sgd", pair=f"mpiml-{name}-p1" if p == 2 else None))
    split = {"train": ds.train, "test": ds.test, "fraction": LIBSVM_TEST_FRACTION, "seed": LIBSVM_SPLIT_SEED}
    out.append(Variant("sklearn-logreg", "logreg", "sklearn LogReg", 1, True,
                       peer_argv({"worker": "sklearn", "model": "logreg", "C": opts.C, **split}), "peer"))
    out.append(Variant("sklearn-sgd", "logreg", "sklearn SGD", 1, True,
                       peer_argv({"worker": "sklearn", "model": "sgd", **split}), "peer"))
    out.append(Variant("load-mpiml", "load", "mpiml read_shard", 1, False,
                       peer_argv({"worker": "load", "reader": "mpiml", "path": ds.train}), "peer"))
    out.append(Variant("load-sklearn", "load", "sklearn load_svmlight", 1, True,
                       peer_argv({"worker": "load", "reader": "sklearn", "path": ds.train}), "peer"))
    return out


def worker_env() -> dict:
    sys.path.insert(0, str(REPO / "tests"))
    from mpirun import mpi_env

    return mpi_env({var: "1" for var in THREAD_VARS})


def launch(variant: Variant, timeout: float) -> dict:
    """Run one variant as its own process (under mpiexec at p > 1); wall time and parsed results."""
    import signal

    sys.path.insert(0, str(REPO / "tests"))
    from mpirun import mpiexec_command

    argv = mpiexec_command(variant.ranks, variant.argv) if variant.ranks > 1 else variant.argv
    limit = min(timeout, variant.timeout or timeout)
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=worker_env(), cwd=str(REPO), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        return {"wall_seconds": time.perf_counter() - start, "returncode": None,
                "error": f"over the time limit ({limit:.0f} s)", "timed_out": True}
    wall = time.perf_counter() - start
    record = {"wall_seconds": wall, "returncode": proc.returncode}
    raw = _last_json(out, "RESULT " if variant.reads == "peer" else "")
    if proc.returncode != 0 or raw is None:
        record["error"] = (err or out).strip()[-1500:] or f"exit status {proc.returncode}"
        return record
    record["raw"] = raw
    fields = {"mf": MF_FIELDS, "sgd": SGD_FIELDS}.get(variant.reads)
    record["metrics"] = read_mpiml(raw, fields, variant.job) if fields else raw
    if record["metrics"].get("missing"):
        print(f"warning: {variant.key}: missing {record['metrics']['missing']['quantities']}; keys seen: "
              f"{record['metrics']['missing']['keys_seen']}", file=sys.stderr)
    return record


def _last_json(text: str, prefix: str):
    for line in reversed(text.splitlines()):
        line = line.strip()
        if prefix and prefix in line:
            line = line.split(prefix, 1)[1]
        elif prefix or not line.startswith("{"):
            continue
        try:
            # raw_decode: a launcher may append a rank tag after the object
            return json.JSONDecoder().raw_decode(line)[0]
        except ValueError:
            continue
    return None


# ============================================================================ peer workers
def ratings_split(path, fraction: float, seed: int):
    """``(train, test)`` exactly as ``mpiml mf --test-fraction F --split-seed S`` splits ``path``."""
    from mpi4py import MPI

    from mpiml.data.ratings import read_ratings, split_fraction

    return split_fraction(read_ratings(path, comm=MPI.COMM_SELF), fraction, seed)


def indexed(train, test):
    """Contiguous user/item indices (sorted raw ids, as mpiml) and the test ratings both sides know."""
    import numpy as np

    from mpiml.data.ratings import lookup

    users, items = np.unique(train.users), np.unique(train.items)
    tu, ti = lookup(users, test.users), lookup(items, test.items)
    known = (tu >= 0) & (ti >= 0)
    return (users, items, lookup(users, train.users), lookup(items, train.items),
            tu[known], ti[known], test.values[known])


def libsvm_split(train_path, test_path, fraction: float, seed: int):
    """``(X, y, X_test, y_test)`` as ``mpiml sgd`` sees them: the test file, else its seeded row holdout."""
    import numpy as np
    from sklearn.datasets import load_svmlight_file, load_svmlight_files

    if test_path:
        X, y, Xt, yt = load_svmlight_files([train_path, test_path])
    else:
        from mpiml.data.synthetic import holdout_mask

        X, y = load_svmlight_file(train_path)
        mask = holdout_mask(seed, 0, X.shape[0], fraction)
        X, y, Xt, yt = X[np.flatnonzero(~mask)], y[~mask], X[np.flatnonzero(mask)], y[mask]
    return _int32(X), y, _int32(Xt), yt


def _int32(X):
    """``X`` with 32-bit index arrays: scikit-learn 1.9's loader gives 64-bit ones its SGDClassifier refuses."""
    import numpy as np

    if X.nnz < 2**31 - 1:
        X.indices, X.indptr = X.indices.astype(np.int32), X.indptr.astype(np.int32)
    return X


def worker_surprise(spec: dict) -> dict:
    import numpy as np
    from surprise import SVD, Dataset, Reader, SVDpp

    train, test = ratings_split(spec["ratings"], spec["fraction"], spec["seed"])
    known = np.isin(test.users, train.users) & np.isin(test.items, train.items)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "train.tsv"
        np.savetxt(path, np.column_stack([train.users, train.items, train.values]), fmt=["%d", "%d", "%.6g"],
                   delimiter="\t")
        reader = Reader(line_format="user item rating", sep="\t",
                        rating_scale=(float(train.values.min()), float(train.values.max())))
        trainset = Dataset.load_from_file(str(path), reader).build_full_trainset()
    algo = (SVD if spec["algo"] == "SVD" else SVDpp)(random_state=0)
    start = time.perf_counter()
    algo.fit(trainset)
    fit = time.perf_counter() - start
    est = np.array([algo.predict(str(u), str(i)).est for u, i in zip(test.users[known], test.items[known])])
    err = est - test.values[known]
    return {"fit_seconds": fit, "rmse": float(np.sqrt(np.mean(err ** 2))), "test_count": int(known.sum()),
            "iterations": algo.n_epochs, "factors": algo.n_factors, "train_ratings": len(train)}


def worker_implicit(spec: dict) -> dict:
    import scipy.sparse
    from implicit.cpu.als import AlternatingLeastSquares

    train, test = ratings_split(spec["ratings"], spec["fraction"], spec["seed"])
    users, items, u, i, tu, ti, tv = indexed(train, test)
    if spec["defaults"]:
        model = AlternatingLeastSquares(num_threads=1, random_state=0)
    else:
        # implicit's confidence is alpha * value; mpiml's is 1 + alpha * r: "one-plus" feeds it
        # 1 + alpha * r with its alpha = 1, so both minimize the same objective.
        model = AlternatingLeastSquares(factors=spec["rank"], regularization=spec["reg"],
                                        alpha=spec["alpha"] if spec["values"] == "raw" else 1.0,
                                        iterations=spec["iters"], num_threads=1, random_state=0)
    values = train.values if spec["values"] == "raw" else 1.0 + spec["alpha"] * train.values
    matrix = scipy.sparse.csr_matrix((values, (u, i)), shape=(users.size, items.size))
    matrix.sum_duplicates()
    start = time.perf_counter()
    model.fit(matrix, show_progress=False)
    fit = time.perf_counter() - start
    return {"fit_seconds": fit, **ranking(model.user_factors, model.item_factors, matrix, tu, ti, tv, K),
            "iterations": model.iterations, "factors": model.factors, "alpha": model.alpha,
            "regularization": model.regularization, "dtype": str(model.dtype)}


def ranking(P, Q, train_matrix, tu, ti, tv, k: int) -> dict:
    """nDCG/precision@k with mpiml.mf.metrics: relevant = a user's positive held-out items,
    the user's training items never recommended (mpiml's ``evaluate``)."""
    import numpy as np

    from mpiml.mf.metrics import ranking_means, ranking_sums, top_k

    keep = tv > 0
    tu, ti = tu[keep], ti[keep]
    order = np.lexsort((ti, tu))
    tu, ti = tu[order], ti[order]
    ranked, starts = np.unique(tu, return_index=True)
    relevant = np.split(ti, starts[1:]) if ranked.size else []
    total = np.zeros(5)
    P, Q = np.asarray(P, dtype=np.float64), np.asarray(Q, dtype=np.float64)
    for lo in range(0, ranked.size, 512):
        batch = ranked[lo:lo + 512]
        scores = P[batch] @ Q.T
        for row, user in enumerate(batch):
            scores[row, train_matrix.indices[train_matrix.indptr[user]:train_matrix.indptr[user + 1]]] = -np.inf
        total += ranking_sums(top_k(scores, k), [set(r.tolist()) for r in relevant[lo:lo + 512]], k)
    means = ranking_means(total, k)
    return {"ndcg": means[f"ndcg_at_{k}"], "precision": means[f"precision_at_{k}"],
            "recall": means[f"recall_at_{k}"], "ranked_users": means["ranked_users"]}


def worker_sklearn(spec: dict) -> dict:
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression, SGDClassifier

    start = time.perf_counter()
    X, y, Xt, yt = libsvm_split(spec["train"], spec["test"], spec["fraction"], spec["seed"])
    load = time.perf_counter() - start
    if spec["model"] == "logreg":
        clf, alpha = LogisticRegression(C=spec["C"]), 1.0 / (spec["C"] * X.shape[0])
    else:
        clf = SGDClassifier(loss="log_loss", random_state=0)
        alpha = clf.alpha
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        start = time.perf_counter()
        clf.fit(X, y)
        fit = time.perf_counter() - start
    return {"fit_seconds": fit, "load_seconds": load, "accuracy": float(clf.score(Xt, yt)),
            "objective": logistic_objective(X, y, clf.coef_, clf.intercept_, alpha), "alpha": alpha,
            "iterations": int(max(getattr(clf, "n_iter_", [0]) if hasattr(clf.n_iter_, "__len__") else [clf.n_iter_])),
            "converged": not any(issubclass(w.category, ConvergenceWarning) for w in caught),
            "n_train": int(X.shape[0]), "n_test": int(Xt.shape[0]), "n_features": int(X.shape[1])}


def worker_load(spec: dict) -> dict:
    if spec["reader"] == "mpiml":
        from mpi4py import MPI

        from mpiml.data import read_shard
        from mpiml.data.fastparse import parse_svmlight

        # Like sklearn's import below, the one-time cost of importing numba and loading the
        # cached compiled parser (about 0.3 s) stays outside the timed read.
        parse_svmlight(b"1 1:1\n")
        start = time.perf_counter()
        shard = read_shard(spec["path"], "svmlight", comm=MPI.COMM_SELF)
        seconds = time.perf_counter() - start
        X = shard.X
    else:
        from sklearn.datasets import load_svmlight_file

        start = time.perf_counter()
        X, _ = load_svmlight_file(spec["path"])
        seconds = time.perf_counter() - start
    return {"fit_seconds": seconds, "rows": int(X.shape[0]), "features": int(X.shape[1]), "nnz": int(X.nnz)}


WORKERS = {"surprise": worker_surprise, "implicit": worker_implicit, "sklearn": worker_sklearn, "load": worker_load}


# ============================================================================ driver
def load_avg() -> float:
    return os.getloadavg()[0]


def prepare(datasets: list[Dataset], opts, tmp) -> list[Dataset]:
    """Facts the runs need (rows, n_train); with ``--quick``, prefixes of the files instead."""
    from mpiml.data.synthetic import holdout_mask

    out = []
    for ds in datasets:
        if opts.quick:
            folder = Path(tmp) / ds.name
            folder.mkdir(parents=True, exist_ok=True)
            if ds.kind == "ratings":
                ds = Dataset(ds.name, ds.kind, write_prefix(ds.train, folder / Path(ds.train).name, QUICK_RATINGS))
            else:
                test = write_sample(ds.test, folder / Path(ds.test).name, QUICK_TEST_ROWS) if ds.test else None
                ds = Dataset(ds.name, ds.kind, write_sample(ds.train, folder / Path(ds.train).name,
                                                            QUICK_TRAIN_ROWS), test)
        rows = data_rows(ds.train)
        ds.facts["rows"] = rows
        if ds.kind == "libsvm":
            ds.facts["n_train"] = rows if ds.test else int(rows - holdout_mask(
                LIBSVM_SPLIT_SEED, 0, rows, LIBSVM_TEST_FRACTION).sum())
            ds.facts["test_rows"] = data_rows(ds.test) if ds.test else rows - ds.facts["n_train"]
            ds.facts["n_features"] = svmlight_width(ds.files())
        out.append(ds)
    return out


def warm_up(ds: Dataset, tmp, timeout: float) -> None:
    """One untimed run per mpiml job on a tiny prefix, so numba's on-disk cache exists before timing."""
    tiny = Path(tmp) / "warm" / ds.name
    tiny.mkdir(parents=True, exist_ok=True)
    if ds.kind == "ratings":
        path = write_prefix(ds.train, tiny / Path(ds.train).name, 3000)
        commands = [mpiml_argv("mf", "--algorithm", a, "--ratings", path, "--test-fraction", 0.1, "--json",
                               "--iters", 1, *extra)
                    for a, extra in (("als", []), ("als", ["--biases"]), ("dsgd", []), ("ials", []),
                                     ("ials", ["--solver", "cg"]))]
    else:
        path = write_prefix(ds.train, tiny / Path(ds.train).name, 500)
        commands = [mpiml_argv("sgd", "--data", path, "--format", "svmlight", "--test-fraction", 0.2, "--json",
                               *extra) for extra in ([], ["--strategy", "lbfgs"])]
    for argv in commands:
        subprocess.run(argv, env=worker_env(), cwd=str(REPO), capture_output=True, timeout=timeout)


def run_suite(datasets: list[Dataset], opts) -> dict:
    report = {"meta": meta(opts), "datasets": {}, "runs": [], "rounds": [], "notes": {}}
    with tempfile.TemporaryDirectory(prefix="mpiml-real-") as tmp:
        sets = prepare(datasets, opts, tmp)
        for ds in sets:
            variants = ratings_variants(ds, opts) if ds.kind == "ratings" else libsvm_variants(ds, opts)
            if opts.only:
                variants = [v for v in variants if any(s in v.key for s in opts.only)]
            notes = report["notes"].setdefault(ds.name, [])
            report["datasets"][ds.name] = {"kind": ds.kind, "train": ds.train, "test": ds.test, "facts": ds.facts,
                                           "variants": {v.key: {"argv": v.argv, "ranks": v.ranks, "job": v.job}
                                                        for v in variants}}
            for algo, configs in (opts.tuned.items() if ds.kind == "ratings" else ()):
                notes.extend(f"{algo} tuned{n}: {flags}" for n, flags in enumerate(configs, 1))
            if ds.kind == "ratings" and ds.facts["rows"] > opts.svdpp_max_ratings:
                notes.append(f"no SVDpp: {ds.facts['rows']} ratings > --svdpp-max-ratings {opts.svdpp_max_ratings:g}")
            if ds.kind == "ratings":
                m = opts.match
                notes.append(f"ials r{m['rank']}: --rank {m['rank']} --confidence {m['alpha']:g} --reg {m['reg']:g} "
                             f"--iters {m['iters']} (implicit: same factors/reg/iterations)")
            else:
                notes.append(f"lbfgs: --reg {1.0 / (opts.C * ds.facts['n_train']):.6g} = 1/(C n_train), C={opts.C:g}"
                             f"; test = {'the .t file' if ds.test else 'seeded 20% of the rows'}")
            print(f"== {ds.name}: {ds.facts} ({len(variants)} runs a round)", file=sys.stderr, flush=True)
            if not opts.no_warm_up:
                warm_up(ds, tmp, opts.timeout)
            skipped = set()
            for round_ in range(opts.rounds):
                before = load_avg()
                for variant in (variants if round_ % 2 == 0 else variants[::-1]):
                    if variant.key in skipped:
                        continue
                    record = launch(variant, opts.timeout)
                    if record.get("timed_out") and variant.timeout:
                        skipped.add(variant.key)  # over its cap once: not tried again
                        notes.append(f"{variant.label}: over its {variant.timeout:.0f} s cap, skipped after round "
                                     f"{round_ + 1}")
                    report["runs"].append({"dataset": ds.name, "variant": variant.key, "job": variant.job,
                                           "label": variant.label, "ranks": variant.ranks, "peer": variant.peer,
                                           "pair": variant.pair, "round": round_, **record})
                    m = record.get("metrics", {})
                    print(f"   round {round_ + 1} {variant.key:26s} wall {record['wall_seconds']:8.2f} s  "
                          f"fit {_num(m.get('fit_seconds')):>8} s  {record.get('error', '')[:200]}",
                          file=sys.stderr, flush=True)
                report["rounds"].append({"dataset": ds.name, "round": round_, "load_before": before,
                                         "load_after": load_avg()})
            expected = {"n_train": ds.facts["n_train"], "n_test": ds.facts["test_rows"]} if ds.kind == "libsvm" else {}
            notes.append(split_check([r for r in report["runs"] if r["dataset"] == ds.name], expected))
            if notes[-1].startswith("SPLIT MISMATCH"):
                print(f"warning: {ds.name}: {notes[-1]}", file=sys.stderr)
    report["summary"] = summarize(report["runs"])
    return report


def meta(opts) -> dict:
    from importlib import metadata

    versions = {}
    for name in ("mpiml", "numpy", "scipy", "numba", "mpi4py", "scikit-learn", "scikit-surprise", "implicit"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    return {"argv": sys.argv, "started": time.strftime("%Y-%m-%d %H:%M:%S"), "cpus": os.cpu_count(),
            "python": sys.version.split()[0], "versions": versions, "commit": commit, "rounds": opts.rounds,
            "quick": opts.quick, "split_seed": opts.split_seed, "threads_per_rank": 1}


def plot(report: dict, path) -> None:
    """Bars per data set: fit seconds over the fastest peer's (log scale) above; quality over the
    best peer's (higher is better: RMSE inverted) below, each bar labelled with its own value."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, FormatStrFormatter, NullFormatter

    rows = [r for r in report["summary"] if r["ok_rounds"]]
    sets = list(dict.fromkeys(r["dataset"] for r in rows))
    if not sets:
        return
    colors = {"mf-explicit": "tab:blue", "mf-implicit": "tab:orange", "logreg": "tab:green", "load": "tab:gray"}
    per_row = min(4, len(sets))
    lines = -(-len(sets) // per_row)
    fig, axes = plt.subplots(2 * lines, per_row, figsize=(max(6.0, 4.6 * per_row), 8.5 * lines), squeeze=False)
    for n in range(len(sets), lines * per_row):  # empty slots of the last line
        axes[2 * (n // per_row)][n % per_row].set_visible(False)
        axes[2 * (n // per_row) + 1][n % per_row].set_visible(False)
    for n, name in enumerate(sets):
        mine = [r for r in rows if r["dataset"] == name]
        labels = [f"{r['label']} p{r['ranks']}" if r["ranks"] > 1 else r["label"] for r in mine]
        top, bottom = axes[2 * (n // per_row)][n % per_row], axes[2 * (n // per_row) + 1][n % per_row]
        bars = top.bar(range(len(mine)), [r["fit_vs_peer"] or float("nan") for r in mine],
                       color=[colors.get(r["job"], "k") for r in mine])
        for bar, r in zip(bars, mine):
            bar.set_hatch("//" if r["peer"] else None)
        top.axhline(1.0, color="k", lw=0.8)
        top.set_yscale("log")
        top.yaxis.set_major_locator(FixedLocator([0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100, 200]))
        top.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        top.yaxis.set_minor_formatter(NullFormatter())
        top.tick_params(axis="y", labelsize=7)
        top.set_title(f"{name}: fit seconds / fastest peer's (hatched: peers)", fontsize=9)
        top.set_xticks(range(len(mine)), labels, rotation=70, ha="right", fontsize=7)
        graded = [(label, r) for label, r in zip(labels, mine) if r.get("quality_vs_peer") is not None]
        bars = bottom.bar(range(len(graded)), [r["quality_vs_peer"] for _, r in graded],
                          color=[colors.get(r["job"], "k") for _, r in graded])
        for x, (bar, (_, r)) in enumerate(zip(bars, graded)):
            bar.set_hatch("//" if r["peer"] else None)
            bottom.text(x, r["quality_vs_peer"], quality_text(r).replace(" p@10", "\np@10").replace(" obj", "\nobj"),
                        ha="center", va="bottom", fontsize=5.5, rotation=90)
        bottom.axhline(1.0, color="k", lw=0.8)
        low = min([r["quality_vs_peer"] for _, r in graded] + [1.0])
        bottom.set_ylim(max(0.0, low - 0.15), 1.35)
        bottom.set_title(f"{name}: quality / best peer's (RMSE: inverted; higher is better)", fontsize=9)
        bottom.set_xticks(range(len(graded)), [label for label, _ in graded], rotation=70, ha="right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_json(report: dict, path) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as handle:
        json.dump(report, handle, indent=1, default=str)
    os.replace(tmp, path)


# ============================================================================ command line
def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the suite")
    checks = sub.add_parser("checksums", help="SHA-256 of the data files against the recorded ones")
    for p in (run, checks):
        p.add_argument("--data-dir", help="a folder with manifest.json (or ml-*/ and libsvm/ sub-folders)")
        p.add_argument("--ratings", action="append", default=[], metavar="NAME=PATH",
                       help="a ratings file (MovieLens ratings.dat/u.data, user,item,rating csv)")
        p.add_argument("--ml-1m", help="shorthand for --ratings ml-1m=PATH")
        p.add_argument("--ml-10m", help="shorthand for --ratings ml-10m=PATH")
        p.add_argument("--libsvm", action="append", default=[], metavar="NAME=TRAIN[:TEST]",
                       help="a LIBSVM binary set (without TEST: a seeded 80/20 split)")
        p.add_argument("--sha256", action="append", default=[], metavar="PATH=HEX", help="a recorded checksum")
        p.add_argument("--sets", help="only these data sets (comma-separated names)")
    run.add_argument("--rounds", type=int, default=3)
    run.add_argument("--quick", action="store_true",
                     help=f"small subsets (the first {QUICK_RATINGS} ratings; about {QUICK_TRAIN_ROWS}/{QUICK_TEST_ROWS} "
                          "evenly spaced training/test rows), one round")
    run.add_argument("--split-seed", type=int, default=1, help="ratings split seed (default 1)")
    run.add_argument("--tuned", action="append", default=[], metavar="ALGO=FLAGS",
                     help=f"tuned mpiml mf flags (repeat for a grid; replaces the defaults {TUNED})")
    run.add_argument("--match", default=",".join(f"{k}={v:g}" for k, v in MATCH.items()),
                     help="implicit ALS settings run by both mpiml and implicit (default %(default)s)")
    run.add_argument("--svdpp-cap", type=float, default=900.0, help="seconds; SVD++ runs over it are dropped")
    run.add_argument("--svdpp-max-ratings", type=float, default=2e5,
                     help="no SVD++ on larger sets (default 2e5: ML-100k; on ML-1M it takes over half an hour)")
    run.add_argument("--C", type=float, default=1.0, help="inverse L2 strength of the L-BFGS runs")
    run.add_argument("--only", help="only variants whose key contains one of these (comma-separated)")
    run.add_argument("--timeout", type=float, default=3600.0, help="seconds one run may take")
    run.add_argument("--no-warm-up", action="store_true", help="skip the untimed numba-cache warm-up runs")
    run.add_argument("--json", dest="json_out", metavar="FILE", help="write everything (all rounds) here")
    run.add_argument("--plot", metavar="FILE.png")
    report = sub.add_parser("report", help="print the table (and plot) of a saved --json file")
    report.add_argument("file")
    report.add_argument("--plot", metavar="FILE.png")
    worker = sub.add_parser("worker", help=argparse.SUPPRESS)
    worker.add_argument("spec")
    args = parser.parse_args(argv)
    if args.command == "run":
        args.only = [s for s in (args.only or "").split(",") if s]
        tuned = {}
        for item in args.tuned:
            algo, _, flags = item.partition("=")
            if algo not in ("als", "dsgd", "ials"):
                parser.error(f"--tuned {item!r}: expected als=..., dsgd=... or ials=...")
            tuned.setdefault(algo, []).append(flags)
        args.tuned = {**TUNED, **tuned}
        if args.quick:
            args.rounds = 1
            args.tuned = {algo: configs[:1] for algo, configs in args.tuned.items()}
            args.svdpp_cap = min(args.svdpp_cap, 120.0)
        match = dict(MATCH)
        for pair in filter(None, args.match.split(",")):
            key, _, value = pair.partition("=")
            if key not in MATCH:
                parser.error(f"--match: unknown key {key!r}; expected {sorted(MATCH)}")
            match[key] = type(MATCH[key])(float(value))
        args.match = match
    return args


def gather(args) -> tuple[list[Dataset], dict]:
    """The data sets named on the command line or found in ``--data-dir``, and the recorded checksums."""
    datasets, recorded = [], {}
    if args.data_dir:
        manifest_path = Path(args.data_dir) / "manifest.json"
        manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else None
        datasets, recorded = discover(args.data_dir, manifest)
    named = list(args.ratings)
    named += [f"ml-1m={args.ml_1m}"] if args.ml_1m else []
    named += [f"ml-10m={args.ml_10m}"] if args.ml_10m else []
    for item in named:
        name, _, path = item.partition("=")
        datasets.append(Dataset(name, "ratings", os.path.expanduser(path)))
    for item in args.libsvm:
        name, _, paths = item.partition("=")
        train, _, test = paths.partition(":")
        datasets.append(Dataset(name, "libsvm", os.path.expanduser(train), os.path.expanduser(test) or None))
    for item in args.sha256:
        path, _, digest = item.rpartition("=")
        recorded[os.path.abspath(os.path.expanduser(path))] = digest.lower()
    if args.sets:
        wanted = args.sets.split(",")
        datasets = [d for d in datasets if d.name in wanted]
    seen, unique = set(), []
    for ds in datasets:  # a set named twice (manifest and command line): the command line wins
        if ds.name in seen:
            unique = [d for d in unique if d.name != ds.name]
        seen.add(ds.name)
        unique.append(ds)
    return unique, recorded


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.command == "worker":
        sys.path.insert(0, str(REPO))
        spec = json.loads(args.spec)
        print("RESULT " + json.dumps(WORKERS[spec["worker"]](spec)), flush=True)
        return 0
    if args.command == "report":
        report = json.loads(Path(args.file).read_text())
        print(format_table(report["summary"], report.get("rounds"), report.get("notes")))
        if args.plot:
            plot(report, args.plot)
        return 0
    sys.path.insert(0, str(REPO))
    datasets, recorded = gather(args)
    if not datasets:
        print("no data sets: give --data-dir, --ratings NAME=PATH, --ml-1m, --libsvm NAME=TRAIN[:TEST]",
              file=sys.stderr)
        return 2
    missing = [p for d in datasets for p in d.files() if not os.path.isfile(p)]
    if missing:
        print(f"missing data files: {missing}", file=sys.stderr)
        return 2
    checks = check_files({os.path.abspath(p): recorded.get(os.path.abspath(p)) or known_digests(p)
                          for d in datasets for p in d.files()})
    if args.command == "checksums":
        for c in checks:
            state = {True: "ok", False: "MISMATCH", None: "not recorded"}[c["ok"]]
            print(f"{state:12s} {c['actual']}  {c['path']}")
        return 1 if any(c["ok"] is False for c in checks) else 0
    for var in THREAD_VARS:
        os.environ[var] = "1"
    report = run_suite(datasets, args)
    report["checksums"] = checks
    print(format_table(report["summary"], report["rounds"], report["notes"]))
    if args.json_out:
        write_json(report, args.json_out)
    if args.plot:
        plot(report, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
