"""Ctrl-C on a script looping ``mpiml.allreduce``: how long until every rank is gone.

Each trial starts the loop under ``mpiexec``, waits until every rank is in it, waits a
random 0-0.5 s more (so the signal lands anywhere in a call), sends SIGINT to mpiexec's
process group as a terminal does, and records the seconds until mpiexec ended and whether
any rank process outlived it. The promise (issue 11): every rank gone within 2 s, 20/20.

    python benchmarks/ctrl_c.py --trials 20 --ranks 2,3
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.join(HERE, "..", "tests"), os.path.join(HERE, "..", "tests", "runtime")]

from interrupt import LOOP, interrupt  # noqa: E402

CASES = [("ring", 4), ("auto", 4), ("ring", 100_000), ("tree", 4), ("recursive_doubling", 1000)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=20, help="per rank count")
    parser.add_argument("--ranks", default="2,3")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    script = os.path.join(tempfile.mkdtemp(), "loop.py")
    with open(script, "w") as f:
        f.write(LOOP)
    failures = 0
    for ranks in (int(r) for r in args.ranks.split(",")):
        seconds = []
        for trial in range(args.trials):
            algorithm, size = CASES[trial % len(CASES)]
            result = interrupt(ranks, [sys.executable, script, algorithm, str(size)], after=rng.uniform(0, 0.5),
                               bound=30)
            ok = result.clean and result.seconds < 2.0
            failures += not ok
            seconds.append(result.seconds if result.seconds is not None else float("inf"))
            took = "-" if result.seconds is None else f"{result.seconds:.2f}"
            print(f"p={ranks} trial {trial + 1:2d} {algorithm:>18s} n={size:<6d} {'ok  ' if ok else 'FAIL'} {took} s, "
                  f"exit {result.returncode}, ranks left {result.survivors}", flush=True)
            if not ok:
                print(result.describe(), flush=True)
        good = sum(s < 2.0 for s in seconds)
        print(f"p={ranks}: {good}/{len(seconds)} ended within 2 s; median {statistics.median(seconds):.2f} s, "
              f"max {max(seconds):.2f} s; load {os.getloadavg()[0]:.1f}", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
