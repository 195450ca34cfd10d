"""Drive the throw-away Slurm cluster of ``slurm/testing/local-cluster.sh`` from tests.

Every call is bounded: the script and the client commands have timeouts. Jobs are
submitted with ``sbatch --wait``, so sbatch itself reports the job's final status; waiting
also polls ``scontrol`` (sbatch's own polling backs off to 10 s and more, and a requeued job
needs its records) until the job has finished or the deadline passed.
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from mpirun import REPO, mpi_env

from mpiml.slurm import templates
from mpiml.slurm.render import render_script

SCRIPT = REPO / "slurm" / "testing" / "local-cluster.sh"
FINISHED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE",
            "PREEMPTED"}
_FIELD = re.compile(r"(?:^| )([A-Za-z][A-Za-z/:]*)=")


ASK = ("the Slurm cluster tests run only when asked: MPIML_SLURM_TESTS=1 (or CI=true); they start slurmctld "
       "and slurmd as root")


def why_not_here(environ=os.environ) -> str | None:
    """Why the local cluster does not run here, or None if it does.

    Only when asked (``MPIML_SLURM_TESTS=1`` or ``CI=true``), and it installs Slurm and
    munge with apt-get only when that is asked too (``MPIML_SLURM_INSTALL=1`` or ``CI=true``).
    """
    ci = environ.get("CI") == "true"
    if not (ci or environ.get("MPIML_SLURM_TESTS") == "1"):
        return ASK
    if not sys.platform.startswith("linux"):
        return f"Slurm daemons need Linux, this is {sys.platform}"
    if os.geteuid() != 0:
        return ("starting slurmctld/slurmd needs root; run the tests as root (CI does), or see "
                "slurm/testing/local-cluster.sh")
    installed = all(Path(p).exists() for p in ("/usr/sbin/slurmctld", "/usr/sbin/slurmd", "/usr/sbin/munged"))
    if not installed and not (ci or environ.get("MPIML_SLURM_INSTALL") == "1"):
        return ("Slurm and munge are not installed: MPIML_SLURM_INSTALL=1 lets the tests install them "
                "with apt-get (slurm/testing/local-cluster.sh)")
    if not installed and shutil.which("apt-get") is None:
        return "Slurm and munge are not installed and there is no apt-get to install them"
    return None


def skip_or_fail(reason: str, environ=os.environ) -> None:
    """Skip a test that needs the cluster, except where it was asked for (CI=true, MPIML_SLURM_TESTS=1): fail."""
    import pytest

    if environ.get("CI") == "true" or environ.get("MPIML_SLURM_TESTS") == "1":
        pytest.fail(f"the Slurm tests were asked for, but cannot run: {reason}", pytrace=False)
    pytest.skip(reason)


def parse_job_record(line: str) -> dict:
    """``scontrol -o show job`` output line -> {field: value}."""
    keys = list(_FIELD.finditer(line))
    record = {}
    for here, after in zip(keys, keys[1:] + [None]):
        end = after.start() if after else len(line)
        record[here.group(1)] = line[here.end():end].strip()
    return record


def _free_port_base(count: int) -> int:
    """A port p such that p .. p+count are free now (the controller and one per node)."""
    for base in range(17817, 30000, 97):
        try:
            for port in range(base, base + count + 1):
                with socket.socket() as probe:
                    probe.bind(("0.0.0.0", port))
        except OSError:
            continue
        return base
    raise RuntimeError("no free ports for the local Slurm cluster")


@dataclass
class Job:
    job_id: str
    records: list  # one per job, or per array task

    @property
    def states(self) -> list:
        return [(r.get("JobState"), r.get("ExitCode")) for r in self.records]

    @property
    def ok(self) -> bool:
        return all(state == ("COMPLETED", "0:0") for state in self.states)


class LocalCluster:
    """One private cluster (own directory, config and ports), started and stopped by us."""

    def __init__(self, nodes: int = 2, cpus: int = 4):
        self.directory = Path(tempfile.mkdtemp(prefix="mpiml-slurm-"))
        self.directory.chmod(0o755)  # munged (user munge) must reach its socket in here
        self.nodes = nodes
        self.settings = {"MPIML_SLURM_DIR": str(self.directory), "MPIML_SLURM_NODES": str(nodes),
                         "MPIML_SLURM_CPUS": str(cpus), "MPIML_SLURM_PORT": str(_free_port_base(nodes)),
                         "MPIML_SLURM_WAIT": "60"}
        self.conf = self.directory / "etc" / "slurm.conf"
        self._sbatch_waiting: dict[str, subprocess.Popen] = {}

    def _script(self, action: str, timeout: float) -> subprocess.CompletedProcess:
        env = {**os.environ, **self.settings}
        return subprocess.run(["bash", str(SCRIPT), action], env=env, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)

    def start(self) -> None:
        done = self._script("start", timeout=600)  # includes apt-get install on a fresh machine
        if done.returncode != 0:
            raise RuntimeError(f"local-cluster.sh start failed ({done.returncode}):\n{done.stderr[-4000:]}")

    def stop(self) -> str:
        for proc in self._sbatch_waiting.values():
            proc.kill()
        done = self._script("stop", timeout=120)
        if done.returncode == 0:
            shutil.rmtree(self.directory, ignore_errors=True)
        return done.stderr

    def env(self, extra: dict | None = None) -> dict:
        """Environment for client commands and jobs: this cluster, this Python, one thread."""
        bin_dir = str(Path(sys.executable).parent)
        env = mpi_env({"SLURM_CONF": str(self.conf)})
        env["PATH"] = os.pathsep.join([bin_dir, env.get("PATH", "")])
        if (Path(sys.prefix) / "bin" / "activate").exists():
            env["MPIML_VENV"] = sys.prefix
        env.update(extra or {})
        return env

    def run(self, *argv: str, timeout: float = 60, env: dict | None = None, cwd=None) -> subprocess.CompletedProcess:
        return subprocess.run(list(argv), env=self.env(env), capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, cwd=cwd)

    def sbatch(self, script: Path, *args: str, workdir: Path, env: dict | None = None) -> str:
        """Submit with ``sbatch --wait``; returns the job id as soon as sbatch prints it.

        sbatch stays running until the job ends; :meth:`wait` collects its exit status.
        """
        proc = subprocess.Popen(["sbatch", "--wait", "--parsable", *args, str(script)], env=self.env(env),
                                cwd=workdir, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        line = proc.stdout.readline() if ready else ""
        if not line.strip():
            proc.kill()
            raise AssertionError(f"sbatch {script} refused or silent: {proc.communicate()[1]}")
        job_id = line.strip().split(";")[0]
        self._sbatch_waiting[job_id] = proc
        return job_id

    def sbatch_wrap(self, command: str, *args: str, workdir: Path, env: dict | None = None) -> str:
        """Submit a one-line job (``sbatch --wrap``)."""
        done = self.run("sbatch", "--parsable", *args, "--wrap", command, env=env, cwd=workdir)
        if done.returncode != 0:
            raise AssertionError(f"sbatch --wrap {command!r} refused: {done.stderr}")
        return done.stdout.strip().split(";")[0]

    def records(self, job_id: str) -> list:
        done = self.run("scontrol", "-o", "show", "job", job_id)
        return [parse_job_record(line) for line in done.stdout.splitlines() if line.strip()]

    def wait(self, job_id: str, timeout: float = 120, restarts: int = 0, settle: float = 3.0) -> Job:
        """Poll until every record of ``job_id`` has finished; returns them.

        With ``restarts``, a job that finished before restarting that often is returned
        only after it stayed finished for ``settle`` seconds (a requeue in flight).
        """
        deadline = time.monotonic() + timeout
        finished_since = None
        while True:
            records = self.records(job_id)
            finished = bool(records) and all(r.get("JobState") in FINISHED for r in records)
            finished_since = (finished_since or time.monotonic()) if finished else None
            restarted = all(int(r.get("Restarts", 0)) >= restarts for r in records)
            if finished and (restarted or time.monotonic() - finished_since >= settle):
                job = Job(job_id, records)
                self._check_sbatch_wait(job, restarts, deadline)
                return job
            if time.monotonic() > deadline:
                self.run("scancel", job_id)  # a stuck job would hold nodes that later tests need
                raise AssertionError(f"job {job_id} not finished after {timeout:.0f} s: "
                                     f"{[(r.get('JobState'), r.get('Reason')) for r in records]}")
            time.sleep(0.25)

    def cancel_all(self) -> list:
        """Cancel every job still queued or running on this cluster; returns their ids."""
        queued = self.run("squeue", "--noheader", "--format=%i").stdout.split()
        if queued:
            self.run("scancel", *queued)
        return queued

    def _check_sbatch_wait(self, job: Job, restarts: int, deadline: float) -> None:
        """``sbatch --wait`` must have returned the job's outcome: 0 exactly when it succeeded."""
        proc = self._sbatch_waiting.pop(job.job_id, None)
        if proc is None:
            return
        if restarts:  # sbatch --wait follows only the first run of a requeued job
            proc.kill()
            proc.communicate()
            return
        try:
            proc.wait(timeout=max(deadline - time.monotonic(), 15))
        except subprocess.TimeoutExpired:
            proc.kill()
            raise AssertionError(f"sbatch --wait for job {job.job_id} still waiting after it ended: {job.states}")
        assert (proc.returncode == 0) == job.ok, f"sbatch --wait exited {proc.returncode} for {job.states}"

    def wait_for_text(self, path: Path, text: str, timeout: float = 60) -> str:
        """Poll a job's log until it contains ``text``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            content = path.read_text() if path.exists() else ""
            if text in content:
                return content
            time.sleep(0.1)
        raise AssertionError(f"{path} never showed {text!r}; it has:\n{content}")


def render(template: str, path: Path, command, **options) -> Path:
    """Write ``template`` rendered with ``options`` (python names: cpus_per_task) to ``path``."""
    text = render_script(templates.find(template).read_text(),
                         {name.replace("_", "-"): value for name, value in options.items()}, command)
    path.write_text(text)
    return path


def last_json(path: Path) -> dict:
    lines = [line for line in path.read_text().splitlines() if line.startswith("{")]
    assert lines, f"no JSON line in {path}:\n{path.read_text()}"
    return json.loads(lines[-1])


def job_log(tmp_path: Path, job_id: str) -> Path:
    return tmp_path / f"job-{job_id}.out"
