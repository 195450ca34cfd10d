"""Ctrl-C as a terminal sends it: SIGINT to the foreground process group of ``mpiexec``.

Used by tests/runtime/test_watchdog.py (a few trials) and benchmarks/ctrl_c.py (many).
"""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import time
from dataclasses import dataclass, field

from mpirun import REPO, mpi_env, mpiexec_command

# A user script as the issue found it: a loop of tiny allreduces, ranks in MPI most of the time.
LOOP = """
import os, sys
import numpy as np
import mpiml
algorithm = sys.argv[1] if len(sys.argv) > 1 else "auto"
x = np.ones(int(sys.argv[2]) if len(sys.argv) > 2 else 4)
sys.stdout.write(f"ready {os.getpid()}\\n")
sys.stdout.flush()
while True:
    mpiml.allreduce(x, algorithm=algorithm)
"""


@dataclass
class Trial:
    ranks: int
    seconds: float | None          # from SIGINT to mpiexec's exit; None: still running after the bound
    returncode: int | None
    survivors: list = field(default_factory=list)  # rank PIDs alive after mpiexec ended
    stdout: str = ""
    stderr: str = ""

    @property
    def clean(self) -> bool:
        return self.seconds is not None and not self.survivors

    def describe(self) -> str:
        return (f"p={self.ranks}: {'ended' if self.seconds is not None else 'still running'} "
                f"after {self.seconds} s, exit status {self.returncode}, ranks left {self.survivors}\n"
                f"--- stdout ---\n{self.stdout[-3000:]}\n--- stderr ---\n{self.stderr[-3000:]}")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def interrupt(ranks: int, argv: list[str], *, ready=r"ready (\d+)", after: float = 0.3, bound: float = 10.0,
              start_bound: float = 60.0, env: dict | None = None, cwd=REPO) -> Trial:
    """Start ``argv`` on ``ranks`` ranks; when every rank has printed ``ready PID`` (or, if
    ``ready`` matches no PID group, once it matched), wait ``after`` seconds and send SIGINT to
    mpiexec's process group; wait at most ``bound`` seconds for the end."""
    proc = subprocess.Popen(mpiexec_command(ranks, argv), cwd=cwd, env=mpi_env(env), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    out, err, pids = b"", b"", []
    pattern = re.compile(ready)
    deadline = time.monotonic() + start_bound
    try:
        while time.monotonic() < deadline:
            readable, _, _ = select.select([proc.stdout, proc.stderr], [], [], 0.1)
            for stream in readable:
                chunk = os.read(stream.fileno(), 65536)
                if stream is proc.stdout:
                    out += chunk
                else:
                    err += chunk
            matches = pattern.findall(out.decode(errors="replace"))
            pids = [int(m) for m in matches if str(m).isdigit()]
            if (pids and len(pids) >= ranks) or (matches and not pattern.groups) or proc.poll() is not None:
                break
        time.sleep(after)
        sent = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)
        try:
            more_out, more_err = proc.communicate(timeout=bound)
            seconds = time.monotonic() - sent
        except subprocess.TimeoutExpired:
            seconds = None
            os.killpg(proc.pid, signal.SIGKILL)
            more_out, more_err = proc.communicate()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    time.sleep(0.05)
    survivors = [pid for pid in pids if _alive(pid)]
    for pid in survivors:  # hydra runs each rank in its own session: killpg does not reach them
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    return Trial(ranks, seconds, proc.returncode, survivors, (out + more_out).decode(errors="replace"),
                 (err + more_err).decode(errors="replace"))
