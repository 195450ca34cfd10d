"""Every argument error of every command: one ``mpiml: error:`` line from rank 0, exit status 2, before any work.

One MPI job (3 ranks) runs every case in-process through ``mpiml.cli.main.main`` (see
``argsweep.py``): the generated cases give every typed option of every command a value it
cannot take, and the listed ones bad values only the command itself can tell (ranges,
output paths, a missing tuning file), each found by a sweep of -1, 0, nan and inf over the
numeric options. Cases that passed the check would start work: their inputs are tiny.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

from mpirun import run_mpi

from mpiml.cli import main as cli_main

RANKS = 3
SGD = ["sgd", "--data", "synthetic:classification,n=200,d=5", "--epochs", "1"]
MF = ["mf", "--ratings", "synthetic:users=30,items=20,ratings=300,rank=2", "--iters", "1", "--rank", "2"]
BENCH = ["bench", "allreduce", "--sizes", "8", "--collective-algorithm", "native"]
TUNE = ["tune", "--sizes", "8", "--collective", "allreduce", "--max-iters", "3", "--repeats", "1"]


def listed(tmp: Path) -> list:
    """(argv, env, text the error line must hold) of the bad values a parser cannot see."""
    folder, afile, missing = tmp / "folder", tmp / "a-file", tmp / "missing" / "m.npz"
    bad_tuning = {"MPIML_TUNING": str(tmp / "no-such-tuning.json")}
    return [
        ([*SGD, "--test-fraction", "1.5"], {}, "--test-fraction must be in [0, 1), got 1.5"),
        ([*SGD, "--test-fraction", "nan"], {}, "--test-fraction must be in [0, 1)"),
        ([*SGD, "--seed", "-1"], {}, "seed must be >= 0"),
        ([*SGD, "--n-features", "0"], {}, "--n-features must be at least 1"),
        ([*SGD, "--classes", "1"], {}, "--classes must be at least 2"),
        ([*SGD, "--stop-after-updates", "0"], {}, "--stop-after-updates must be at least 1"),
        ([*SGD, "--lr", "nan"], {}, "lr must be"),
        ([*SGD, "--out", str(folder)], {}, "is a folder"),
        ([*SGD, "--out", "/dev/null"], {}, "is not a regular file"),
        ([*SGD, "--out", str(missing)], {}, "does not exist"),
        ([*SGD, "--out", str(afile / "m.npz")], {}, "is not a folder"),
        ([*SGD, "--checkpoint-dir", str(afile)], {}, "is a file, not a folder"),
        ([*SGD, "--plot", str(folder)], {}, "is a folder"),
        ([*SGD, "--data", "synthetic:classification,seed=-1"], {}, "synthetic seed must be >= 0"),
        ([*SGD, "--data", "synthetic:classification,noise=nan"], {}, "noise finite"),
        (SGD, bad_tuning, "MPIML_TUNING: cannot read tuning file"),
        ([*MF, "--k", "0"], {}, "--k must be at least 1"),
        ([*MF, "--test-fraction", "1.5"], {}, "--test-fraction must be in [0, 1)"),
        (["mf", "--ratings", "synthetic:users=30,items=20,ratings=300,skew=nan"], {}, "noise and skew"),
        (["mf", "--ratings", "synthetic:users=30,items=20,ratings=300,seed=-2"], {}, "seed >= 0"),
        ([*MF, "--out", str(folder)], {}, "is a folder"),
        ([*MF, "--checkpoint-dir", str(afile)], {}, "is a file, not a folder"),
        (MF, bad_tuning, "MPIML_TUNING"),
        (["datagen", "classification", "--seed", "-1", "--out", str(tmp / "d.svm")], {}, "seed must be >= 0"),
        (["datagen", "regression", "--noise", "nan", "--out", str(tmp / "d.csv")], {}, "noise finite"),
        (["datagen", "regression", "--noise", "-1", "--out", str(tmp / "d.csv")], {}, "noise finite and >= 0"),
        (["datagen", "ratings", "--skew", "nan", "--out", str(tmp / "r.csv")], {}, "noise and skew"),
        (["datagen", "ratings", "--mean", "inf", "--out", str(tmp / "r.csv")], {}, "must be finite"),
        (["datagen", "ratings", "--out", str(tmp / "folder.csv")], {}, "is a folder"),
        (["datagen", "classification", "--shards", "--out", str(afile)], {}, "is a file, not a folder"),
        ([*BENCH, "--min-time", "nan"], {}, "--min-time must be a positive number"),
        ([*BENCH, "--max-iters", "0"], {}, "--max-iters at least 1"),
        ([*BENCH, "--iters", "0"], {}, "--iters must be at least 1"),
        ([*BENCH, "--csv", str(folder)], {}, "is a folder"),
        ([*BENCH, "--tuning", str(missing)], {}, "cannot read tuning file"),
        (BENCH, bad_tuning, "MPIML_TUNING"),
        ([*TUNE, "--min-time", "inf", "--out", str(tmp / "t.json")], {}, "--min-time must be a positive number"),
        ([*TUNE, "--repeats", "0", "--out", str(tmp / "t.json")], {}, "--repeats at least 1"),
        ([*TUNE, "--out", str(folder)], {}, "is a folder"),
        ([*TUNE, "--ranks", "9"], {}, "--ranks must be between 1 and the job's"),
        (["model", "--tuning", str(missing)], {}, "cannot read tuning file"),
        (["model", "--plot", str(folder)], {}, "is a folder"),
        (["slurm", "render", "single-node", "--out", str(folder), "--", "mpiml", "info"], {}, "is a folder"),
        (["slurm", "render", "single-node", "--", "mpiml", "sgd", "--test-fraction", "2"], {},
         "the job's command would fail"),
        (["run", "-n", "0", "--", "hostname"], {}, "-n must be at least 1"),
        (["run", "-n", "2", "--restarts", "1", "--", "mpiml", *SGD], {}, "--restarts needs a job that checkpoints"),
        (["run", "-n", "2"], {}, "give the job's command after `--`"),
        (["run", "-n", "2", "--min-ranks", "3", "--", "hostname"], {}, "--min-ranks must be between 1 and -n 2"),
        (["run", "-n", "2", "--", "mpiml", *MF, "--k", "0"], {}, "the job's command would fail"),
        (["info", "--verbose"], {}, "unrecognized arguments: --verbose"),
    ]


def parsers():
    """(argv prefix, parser) of every command and subcommand."""
    found, stack = [], [([name], importlib.import_module(module).build_parser())
                        for name, (module, _) in cli_main.SUBCOMMANDS.items()]
    while stack:
        prefix, parser = stack.pop()
        found.append((prefix, parser))
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                stack += [([*prefix, name], sub) for name, sub in action.choices.items()]
    return found


def generated() -> list:
    """Every option with a value type, given a word it refuses; and an unknown option per command."""
    cases = []
    for prefix, parser in parsers():
        # (A command with a required argument may name that first.)
        cases.append(([*prefix, "--no-such-option"], {}, f"mpiml {' '.join(prefix)}: "))
        for action in parser._actions:
            if not action.option_strings or action.type in (None, str) or action.nargs == 0:
                continue
            try:
                action.type("x")
                continue  # "x" is a value it takes
            except (argparse.ArgumentTypeError, ValueError, TypeError):
                pass
            cases.append(([*prefix, action.option_strings[-1], "x"], {}, action.option_strings[-1]))
    return cases


def test_every_argument_error_is_one_line_and_status_2(tmp_path):
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder.csv").mkdir()
    (tmp_path / "a-file").write_text("not a folder\n")
    cases = listed(tmp_path) + generated()
    assert len(cases) > 100
    (tmp_path / "cases.json").write_text(json.dumps([{"argv": argv, "env": env} for argv, env, _ in cases]))
    driver = Path(__file__).with_name("argsweep.py")
    result = run_mpi(RANKS, [sys.executable, str(driver), str(tmp_path / "cases.json"), str(tmp_path)],
                     timeout=300, env={"MPIML_PROGRESS": "never"}, cwd=tmp_path)
    assert result.returncode == 0, result.describe()
    ranks = [json.loads((tmp_path / f"rank-{r}.json").read_text()) for r in range(RANKS)]
    wrong = []
    for (argv, env, text), *outcomes in zip(cases, *ranks):
        lines = [line for line in outcomes[0]["stderr"].splitlines() if line.strip()]
        ok = (all(o["status"] == 2 and not o["stdout"] for o in outcomes)
              and not any(o["stderr"].strip() for o in outcomes[1:])
              and len(lines) == 1 and lines[0].startswith("mpiml: error: ") and text in lines[0])
        if not ok:
            wrong.append(f"{' '.join(argv)} {env or ''}: status {[o['status'] for o in outcomes]}, "
                         f"rank 0 stderr {outcomes[0]['stderr'][-600:]!r}, rank 1 {outcomes[1]['stderr'][-300:]!r}")
    assert not wrong, f"{len(wrong)} of {len(cases)} cases:\n" + "\n".join(wrong)
