"""A hyperparameter sweep on Slurm from Python: render the sweep template, submit, wait, gather.

    python examples/slurm_sweep.py --rates 0.05,0.1,0.2 --workdir sweep      (on a login node)

Run it where ``sbatch`` works (not under mpiexec: each run of the sweep is a task of a Slurm
job array, started with 2 ranks by the template). It writes one line of arguments per run
to ``WORKDIR/sweep.txt``, fills in ``slurm/sweep.sbatch`` with :func:`mpiml.slurm.render_script`
(array size, ranks per run, the command: ``examples/preemptible_job.py``, least squares by
gradient descent at each ``--rate``), submits it with ``sbatch --wait`` (which returns when
every task has ended) and gathers the tasks' JSON results into one table, as ``mpiml slurm
gather`` does. Where there is no Slurm it prints ``skipped: no Slurm (...)`` and exits 0.
Prints (the job id is the cluster's)::

    submitted job array 42 (3 runs) and waited for it
    run 0 --rate 0.05 objective 0.1015543731
    run 1 --rate 0.1 objective 0.0109669691
    run 2 --rate 0.2 objective 0.005162524018
    best --rate 0.2 objective 0.005162524018
"""

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

from mpiml.errors import SubmitError
from mpiml.slurm import render_script, templates
from mpiml.slurm.gather import gather
from mpiml.slurm.submit import sbatch

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--rates", default="0.05,0.1,0.2", help="comma list: one run per rate")
parser.add_argument("--steps", type=int, default=30)
parser.add_argument("--workdir", default="sweep", help="sweep file, job logs and results go here")
parser.add_argument("--max-parallel", type=int, help="run at most this many tasks at once")
parser.add_argument("--partition", help="your site's queue (default: the cluster's default)")
args = parser.parse_args()


def no_slurm():
    """Why Slurm cannot take a job from here, or None."""
    if shutil.which("sbatch") is None or shutil.which("sinfo") is None:
        return "sbatch not found"
    try:  # without a reachable controller sbatch fails only after long retries: ask sinfo first
        if subprocess.run(["sinfo", "-h"], capture_output=True, timeout=30).returncode != 0:
            return "sinfo cannot reach a controller"
    except subprocess.TimeoutExpired:
        return "sinfo did not answer within 30 s"
    return None


why = no_slurm()
if why:
    print(f"skipped: no Slurm ({why})")
    sys.exit(0)

work = Path(args.workdir).resolve()
work.mkdir(parents=True, exist_ok=True)
rates = args.rates.split(",")
(work / "sweep.txt").write_text("".join(f"--rate {rate}\n" for rate in rates))

# Every rank of every run runs this command plus its sweep line. This Python's absolute path,
# so the job uses the same environment (on a real cluster, also give --venv or module loads).
example = Path(__file__).resolve().parent / "preemptible_job.py"
array = f"0-{len(rates) - 1}" + (f"%{args.max_parallel}" if args.max_parallel else "")
options = {"array": array, "ntasks-per-node": "2", "time": "00:05:00",
           "output": str(work / "job-%A_%a.out"), "partition": args.partition}
script = render_script(templates.find("sweep").read_text(), {k: v for k, v in options.items() if v},
                       [sys.executable, str(example), "--steps", str(args.steps), "--json"])
(work / "sweep.sbatch").write_text(script)  # kept, to read or to resubmit by hand

# The template reads the sweep file and the results folder from the environment sbatch passes on.
env = f"--export=ALL,MPIML_SWEEP_FILE={work / 'sweep.txt'},MPIML_RESULTS_DIR={work / 'results'}"
try:
    job = sbatch(script, args=["--wait", env], timeout=600)
except SubmitError as exc:  # a task failed (sbatch --wait says so by its exit status), or no submission
    sys.exit(f"mpiml: error: {exc}; the tasks' logs are {work}/job-*.out")
print(f"submitted job array {job} ({len(rates)} runs) and waited for it")

rows = gather(work / "results")  # one row per task: its sweep line and its JSON result
for row in rows:
    print(f"run {row['task']} {row['args']} objective {row['objective']:.10g}")
best = min(rows, key=lambda row: row["objective"])
print(f"best {best['args']} objective {best['objective']:.10g}")
