"""The readers' fuzz run (started by test_readers_fuzz.py under mpiexec at each rank count).

Rank 0 writes mutated copies of small valid files in every format (seeded); every rank
reads each one with mpiml; rank 0 compares the outcome with the reference readers of
reference_readers.py: either a DataError raised on every rank alike, collective, naming the
file and the line the reference names, or exactly the reference's rows (in order, with their
line numbers). Prints one JSON summary line; exit status 1 if any case failed.
"""

from __future__ import annotations

import io
import json
import os
import random
import sys
import tempfile
import traceback
import warnings
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from mpi4py import MPI

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reference_readers as ref  # noqa: E402

from mpiml.data.ratings import read_ratings  # noqa: E402
from mpiml.data.shard import read_shard  # noqa: E402
from mpiml.errors import DataError  # noqa: E402

COMM = MPI.COMM_WORLD
MEMORY = 2**30  # MPIML_MEMORY_LIMIT, set by the test
PER_FORMAT = int(os.environ.get("FUZZ_PER_FORMAT", "300"))
SEED = int(os.environ.get("FUZZ_SEED", "11"))

NUMBERS = ["0", "1", "-1", "2.5", "1e3", "-0.25", "3.", ".5", "7", "12", "0.1", "1E-2"]
INSERTS = [b"\n", b"\r", b"\r\n", b"\x0c", b"\x0b", b"\x00", b" ", b"\t", b",", b":", b"::", b"#", b"-", b"+",
           b".", b"e", b"_", b"nan", b"NaN", b"inf", b"1", b"0", b"\xef\xbb\xbf", b"\xff", b"x", b"%", b"1.5",
           b"1_0", b" 1099511627776:1", b"\"", b"\xc2\xa0"]


def valid_csv(rng):
    width = rng.randint(2, 5)
    rows = [",".join(rng.choice(NUMBERS) for _ in range(width)) for _ in range(rng.randint(3, 9))]
    if rng.random() < 0.4:
        rows.insert(0, ",".join(["label"] + [f"x{i}" for i in range(width - 1)]))
    if rng.random() < 0.2:
        rows.insert(rng.randrange(len(rows) + 1), rng.choice(["# comment", "", "  "]))
    return rows


def valid_svmlight(rng):
    rows = []
    for _ in range(rng.randint(3, 9)):
        cols = sorted(rng.sample(range(0 if rng.random() < 0.3 else 1, 12), rng.randint(0, 4)))
        line = " ".join([rng.choice(["0", "1", "-1", "2"])] + [f"{c}:{rng.choice(NUMBERS)}" for c in cols])
        if rng.random() < 0.1:
            line += " # note"
        rows.append(line)
    return rows


def valid_ratings(rng):
    sep = rng.choice([",", "\t", "::", " "])
    four = rng.random() < 0.5
    rows = [sep.join([str(rng.randint(1, 30)), str(rng.randint(1, 30)), rng.choice(["1", "2.5", "4", "5"])]
                     + ([str(rng.randint(10**8, 10**9))] if four else [])) for _ in range(rng.randint(3, 9))]
    if rng.random() < 0.3 and sep != " ":
        rows.insert(0, sep.join(["user", "item", "rating"] + (["time"] if four else [])))
    return rows


def mutate_text(rng, rows: list[str]) -> bytes:
    end = rng.choice(["\n", "\n", "\r\n", "\r"])
    data = (end.join(rows) + (end if rng.random() < 0.8 else "")).encode()
    for _ in range(rng.randint(0, 3)):
        kind = rng.randrange(10)
        lines = data.split(b"\n")
        if kind == 0 and data:
            data = data[:rng.randrange(len(data))]
        elif kind in (1, 2, 3):
            at = rng.randrange(len(data) + 1)
            data = data[:at] + rng.choice(INSERTS) + data[at:]
        elif kind == 4 and data:
            at = rng.randrange(len(data))
            data = data[:at] + data[at + rng.randint(1, 3):]
        elif kind == 5 and len(lines) > 1:
            i = rng.randrange(len(lines))
            lines.insert(i, lines[i])
            data = b"\n".join(lines)
        elif kind == 6 and len(lines) > 1:
            del lines[rng.randrange(len(lines))]
            data = b"\n".join(lines)
        elif kind == 7:
            data = b"\xef\xbb\xbf" + data
        elif kind == 8 and data:
            at = rng.randrange(len(data))
            data = data[:at] + bytes([rng.randrange(256)]) + data[at + 1:]
        elif kind == 9 and lines:  # a token repeated (a duplicate svmlight index, an extra field)
            i = rng.randrange(len(lines))
            tokens = lines[i].split(b" ")
            tokens.insert(rng.randrange(len(tokens) + 1), rng.choice(tokens))
            lines[i] = b" ".join(tokens)
            data = b"\n".join(lines)
    return data


def long_line(rng, fmt) -> bytes:
    """A valid file with one line of about 2 MB among short ones."""
    if fmt == "svmlight":
        big = "1 " + " ".join(f"{c}:0.5" for c in range(1, 2000)) + " " * 2_000_000 + "# a long line"
        rows = ["0 1:1", big, "1 3:2", "0 2:1"]
    else:
        big = "1," + ",".join(["0.125"] * 2) + " " * 2_000_000
        rows = ["0,1,2", big, "1,2,3", "0,5,6"]
    return ("\r".join(rows) + "\r").encode() if rng.random() < 0.5 else ("\n".join(rows) + "\n").encode()


def npz_case(rng, path: Path, write: bool) -> None:
    n, d = rng.randint(3, 8), rng.randint(1, 4)
    X = np.round(np.array([[rng.uniform(-2, 2) for _ in range(d)] for _ in range(n)]) * (np.arange(d) % 2), 2)
    y = np.array([float(rng.randint(0, 1)) for _ in range(n)])
    S = sp.csr_matrix(X)
    sparse = rng.random() < 0.5
    arrays = ({"data": S.data, "indices": S.indices, "indptr": S.indptr, "shape": np.array(S.shape),
               "format": np.array("csr"), "y": y} if sparse else {"X": X, "y": y})
    for _ in range(rng.randint(0, 2)):
        kind = rng.randrange(14)
        try:  # a mutation that does not apply to this archive is skipped
            if kind == 0:
                arrays["y"] = arrays["y"][:-1]
            elif kind == 1 and "X" in arrays and arrays["X"].ndim == 2:
                arrays["X"] = np.vstack([arrays["X"], arrays["X"][:1]])
            elif kind == 2:
                name = rng.choice(list(arrays))
                if arrays[name].dtype.kind == "f":
                    arrays[name] = arrays[name].astype(complex)
            elif kind == 3:
                name = rng.choice(list(arrays))
                if arrays[name].dtype.kind == "f" and arrays[name].size:
                    arrays[name] = arrays[name].copy()
                    arrays[name].flat[rng.randrange(arrays[name].size)] = rng.choice([np.nan, np.inf])
            elif kind == 4 and "shape" in arrays:
                arrays["shape"] = np.array([n, max(int(S.indices.max(initial=0)), 0)])
            elif kind == 5 and "indices" in arrays and arrays["indices"].size:
                arrays["indices"] = arrays["indices"].astype(np.int64)
                arrays["indices"][rng.randrange(arrays["indices"].size)] = rng.choice([0, d + 3, -1, 2**40])
            elif kind == 6 and "indptr" in arrays:
                arrays["indptr"] = arrays["indptr"][::-1].copy()
            elif kind == 7:
                del arrays[rng.choice(list(arrays))]
            elif kind == 8 and "shape" in arrays:
                arrays["shape"] = np.array([n, 2**40])
            elif kind == 9:
                arrays["y"] = arrays["y"].reshape(-1, 1) if arrays["y"].ndim == 1 else arrays["y"]
            elif kind == 10 and "X" in arrays:
                arrays["X"] = arrays["X"].reshape(-1)
            elif kind == 11:
                arrays["y"] = arrays["y"].astype(rng.choice([np.int32, np.float32, bool, "U1"]))
            elif kind == 12 and "format" in arrays:
                arrays["format"] = np.array(rng.choice(["coo", "bsr", "csr"]))
            elif kind == 13 and "X" in arrays:
                arrays.update(data=S.data, indices=S.indices, indptr=S.indptr, shape=np.array(S.shape))
        except (KeyError, ValueError, IndexError, TypeError, OverflowError):
            pass
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    raw = buffer.getvalue()
    if rng.random() < 0.25:  # byte damage to the archive itself
        at = rng.randrange(len(raw))
        raw = raw[:at] if rng.random() < 0.5 else raw[:at] + bytes([rng.randrange(256)]) + raw[at + 1:]
    if write:
        path.write_bytes(raw)


def make_cases(folder: Path, mine):
    """Every case (the same list on every rank); this rank writes the files ``mine(number)`` picks."""
    rng = random.Random(SEED)
    cases = []
    for fmt in ("csv", "svmlight", "ratings", "npz"):
        for i in range(PER_FORMAT):
            path = folder / f"{fmt}{i}.{ {'csv': 'csv', 'svmlight': 'svm', 'ratings': 'txt', 'npz': 'npz'}[fmt]}"
            options = {}
            write = mine(len(cases))
            if fmt == "npz":
                npz_case(rng, path, write)
            else:
                if fmt in ("csv", "svmlight") and i < 3:
                    data = long_line(rng, fmt)
                else:
                    rows = {"csv": valid_csv, "svmlight": valid_svmlight, "ratings": valid_ratings}[fmt](rng)
                    data = mutate_text(rng, rows)
                if write:
                    path.write_bytes(data)
                if fmt in ("csv", "ratings"):
                    options["header"] = rng.choice(["auto", "auto", "auto", "yes", "no"])
                if fmt == "svmlight":
                    options["zero_based"] = rng.choice(["auto", "auto", True, False])
            cases.append((fmt, str(path), options))
    return cases


def read(fmt, path, options):
    if fmt == "ratings":
        s = read_ratings(path, "auto", COMM, header=options["header"])
        return {"lines": s.keys, "users": s.users, "items": s.items, "values": s.values}
    if fmt == "csv":
        s = read_shard(path, "csv", COMM, header=options["header"])
    elif fmt == "svmlight":
        s = read_shard(path, "svmlight", COMM, zero_based=options["zero_based"])
    else:
        s = read_shard(path, "npz", COMM)
    X = sp.csr_matrix(s.X)
    return {"lines": s.row_line, "y": s.y, "X": (X.data, X.indices, X.indptr, X.shape[1])}


def expected(fmt, path, options):
    raw = Path(path).read_bytes()
    if fmt == "csv":
        return ref.csv(raw, options["header"])
    if fmt == "svmlight":
        return ref.svmlight(raw, options["zero_based"], MEMORY)
    if fmt == "ratings":
        return ref.ratings(raw, options["header"])
    return ref.npz(path, MEMORY)


def stack(parts, fmt):
    """The rows of every rank, in rank order, as one table per field."""
    lines = np.concatenate([p["lines"] for p in parts])
    if fmt == "ratings":
        return lines, [(int(u), int(i), float(v)) for p in parts for u, i, v in zip(p["users"], p["items"],
                                                                                     p["values"])]
    rows = []
    for p in parts:
        data, indices, indptr, width = p["X"]
        for r in range(len(indptr) - 1):
            pairs = sorted(zip(indices[indptr[r]:indptr[r + 1]].tolist(), data[indptr[r]:indptr[r + 1]].tolist()))
            rows.append((float(p["y"][r]), [(c, v) for c, v in pairs if v != 0], width))
    return lines, rows


def reference_rows(fmt, rows):
    if fmt == "ratings":
        return [r[0] for r in rows], [(u, i, v) for _, u, i, v in rows]
    if fmt == "csv":
        return [r[0] for r in rows], [(r[1], [(c, v) for c, v in enumerate(r[2]) if v != 0], len(r[2]))
                                      for r in rows]
    if fmt == "svmlight":
        table, width = rows
        return [r[0] for r in table], [(r[1], sorted((c, v) for c, v in r[2].items() if v != 0), width)
                                       for r in table]
    X, y = rows
    return list(range(1, len(y) + 1)), [(float(y[r]), [(c, float(X[r, c])) for c in range(X.shape[1]) if X[r, c]],
                                         X.shape[1]) for r in range(len(y))]


def judge(fmt, path, everyone, reference, tally) -> str | None:
    """What is wrong with the ranks' outcomes for one file (None: nothing)."""
    verdict, want = reference
    tally["cases"] += 1
    tally["valid"] += verdict == "ok"
    kinds = {o[0] for o in everyone}
    if "traceback" in kinds:
        return "traceback: " + next(o[1] for o in everyone if o[0] == "traceback")
    if len(kinds) != 1:
        return f"ranks disagree: {[o[:2] for o in everyone]}"
    if kinds == {"error"}:
        tally["errors"] += 1
        first = everyone[0]
        few = verdict == "ok" and "cannot fill" in first[1] and len(reference_rows(fmt, want)[0]) < len(everyone)
        if any(o[1:] != first[1:] for o in everyone) or not first[4]:
            return f"not one collective error: {everyone}"
        if first[2] != path:
            return f"error does not name the file: {first[1]}"
        if verdict == "ok" and not few:
            return f"valid file refused: {first[1]}"
        if verdict == "error" and first[3] != want:
            return f"error at line {first[3]}, the reference says line {want}: {first[1]}"
        return None
    tally["rows"] += 1
    if verdict != "ok":
        return f"silent wrong data: read rows, the reference says line {want} is bad"
    got_lines, got = stack([o[1] for o in everyone], fmt)
    want_lines, want_rows = reference_rows(fmt, want)
    if got_lines.tolist() != want_lines or got != want_rows:
        return f"silent wrong data: rows differ ({len(got)} read, {len(want_rows)} expected)"
    return None


def main() -> int:
    warnings.simplefilter("ignore")  # the generator casts complex to real on purpose
    folder = tempfile.mkdtemp(prefix="mpiml-fuzz-", dir=os.environ.get("FUZZ_DIR")) if COMM.rank == 0 else None
    folder = COMM.bcast(folder, root=0)
    cases = make_cases(Path(folder), lambda number: number % COMM.size == COMM.rank)
    COMM.Barrier()
    # Each rank reads every file and keeps its outcome; the reference readers' work is shared out.
    outcomes, references = [], {}
    for number, (fmt, path, options) in enumerate(cases):
        try:
            outcome = ("rows", read(fmt, path, options))
        except DataError as exc:
            outcome = ("error", exc.args[0], exc.path, exc.line, exc.collective)
        except Exception:  # a traceback: what must never happen
            outcome = ("traceback", traceback.format_exc(limit=4))
        outcomes.append(outcome)
        if number % COMM.size == COMM.rank:
            references[number] = expected(fmt, path, options)
    everyone = COMM.gather(outcomes, root=0)
    shared = COMM.gather(references, root=0)
    tally = {fmt: {"cases": 0, "rows": 0, "errors": 0, "valid": 0} for fmt in ("csv", "svmlight", "ratings", "npz")}
    failures = []
    if COMM.rank == 0:
        references = {k: v for part in shared for k, v in part.items()}
        for number, (fmt, path, options) in enumerate(cases):
            problem = judge(fmt, path, [ranks[number] for ranks in everyone], references[number], tally[fmt])
            if problem:
                failures.append({"format": fmt, "file": path, "options": options, "problem": problem[:2000]})
    if COMM.rank == 0:
        print(json.dumps({"ranks": COMM.size, "tally": tally, "failures": failures}), flush=True)
        if not failures:
            import shutil

            shutil.rmtree(folder, ignore_errors=True)
    return 1 if COMM.rank == 0 and failures else 0


if __name__ == "__main__":
    sys.exit(main())
