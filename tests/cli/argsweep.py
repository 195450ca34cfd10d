"""Run many ``mpiml`` command lines in one process (one MPI job): what each rank printed and returned.

``python argsweep.py CASES.json OUT_DIR`` reads a list of ``{"argv": [...], "env": {...}}``
and writes ``OUT_DIR/rank-R.json``: per case this rank's exit status (or ``"traceback"``),
stdout and stderr. Each case runs as the ``mpiml`` entry point would run it, except that an
uncaught non-collective error is recorded instead of aborting the job (the test fails on it).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import traceback
from pathlib import Path


def run_case(argv, env, rank):
    from mpiml.cli import main as cli_main
    from mpiml.collectives.select import set_tuning
    from mpiml.errors import MpimlError

    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                status = cli_main.main(list(argv))
            except SystemExit as exc:
                status = exc.code if isinstance(exc.code, int) else 1
            except MpimlError as exc:
                if not exc.collective:
                    raise
                if rank == 0:
                    print(f"mpiml: error: {exc}", file=sys.stderr)
                status = 2
    except BaseException:  # noqa: BLE001 - recorded: the test shows it
        status = "traceback"
        err.write(traceback.format_exc())
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        set_tuning(None)
    return {"argv": argv, "status": status, "stdout": out.getvalue(), "stderr": err.getvalue()}


def main():
    from mpi4py import MPI

    cases = json.loads(Path(sys.argv[1]).read_text())
    rank = MPI.COMM_WORLD.Get_rank()
    results = []
    for case in cases:
        if os.environ.get("ARGSWEEP_TRACE"):  # which case a hung sweep is in
            print(f"[rank {rank}] {' '.join(case['argv'])}", file=sys.__stderr__, flush=True)
        results.append(run_case(case["argv"], case.get("env", {}), rank))
    Path(sys.argv[2], f"rank-{rank}.json").write_text(json.dumps(results))


if __name__ == "__main__":
    main()
