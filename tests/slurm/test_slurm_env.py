"""Reading Slurm's environment; checkpoint folders and log prefixes; gathering sweep results."""

from __future__ import annotations

from pathlib import Path

import pytest

from mpiml.errors import ArgumentError, DataError
from mpiml.slurm.env import checkpoint_dir, log_prefix, slurm_env
from mpiml.slurm.gather import cell, columns, gather

STEP_TASK = {"SLURM_JOB_ID": "812", "SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1",
             "SLURM_NODEID": "2", "SLURM_JOB_NUM_NODES": "4", "SLURM_CPUS_PER_TASK": "3",
             "SLURM_RESTART_COUNT": "2", "SLURM_JOB_NAME": "train", "SLURMD_NODENAME": "c17",
             "SLURM_STEP_ID": "0", "SLURM_SUBMIT_DIR": "/home/u/run"}


def test_a_task_of_a_job_step():
    env = slurm_env(STEP_TASK)
    assert env.in_job and env.run_id == "812"
    assert (env.procid, env.ntasks, env.localid, env.nodeid, env.nnodes, env.cpus_per_task) == (5, 8, 1, 2, 4, 3)
    assert (env.restart_count, env.job_name, env.nodename, env.step_id) == (2, "train", "c17", "0")
    assert env.as_dict()["run_id"] == "812"


def test_outside_slurm_everything_is_unset():
    env = slurm_env({"HOME": "/root"})
    assert not env.in_job and env.run_id is None and env.restart_count == 0 and env.procid is None


def test_array_task_run_id_and_empty_values():
    env = slurm_env({"SLURM_JOB_ID": "901", "SLURM_ARRAY_JOB_ID": "900", "SLURM_ARRAY_TASK_ID": "1",
                     "SLURM_RESTART_COUNT": ""})
    assert env.run_id == "900_1" and env.array_task_id == 1 and env.restart_count == 0


def test_malformed_number_names_the_variable():
    with pytest.raises(ArgumentError, match="SLURM_NTASKS"):
        slurm_env({"SLURM_NTASKS": "4(x2)"})


def test_checkpoint_dir_is_stable_across_requeues_and_overridable():
    first = checkpoint_dir("ck", {**STEP_TASK, "SLURM_RESTART_COUNT": "0"})
    assert first == checkpoint_dir("ck", STEP_TASK) == Path("ck/812")
    assert checkpoint_dir("ck", {"SLURM_JOB_ID": "3", "SLURM_ARRAY_JOB_ID": "2", "SLURM_ARRAY_TASK_ID": "1"}) \
        == Path("ck/2_1")
    assert checkpoint_dir("ck", {**STEP_TASK, "MPIML_CHECKPOINT_DIR": "/scratch/x"}) == Path("/scratch/x")
    assert checkpoint_dir("ck", {}) == Path("ck/local")


def test_log_prefix():
    assert log_prefix(3, STEP_TASK) == "[job 812 restart 2 rank 3]"
    assert log_prefix(None, {"SLURM_JOB_ID": "5"}) == "[job 5]"
    assert log_prefix(None, {}) == ""


def write_task(directory: Path, task: int, args: str, lines: list[str]):
    (directory / f"task-{task}.args").write_text(args + "\n")
    (directory / f"task-{task}.json").write_text("".join(line + "\n" for line in lines))


def test_gather_orders_tasks_numerically_and_reads_the_last_json_line(tmp_path):
    write_task(tmp_path, 10, "--rate 1", ['{"loss": 0.5, "x": [1, 2]}'])
    write_task(tmp_path, 2, "--rate 0.1", ["some log line", '{"loss": 0.25, "extra": null}', ""])
    (tmp_path / "task-3.json.part").write_text("{")  # an unfinished run is not a result
    rows = gather(tmp_path)
    assert rows == [{"task": 2, "args": "--rate 0.1", "loss": 0.25, "extra": None},
                    {"task": 10, "args": "--rate 1", "loss": 0.5, "x": [1, 2]}]
    assert columns(rows) == ["task", "args", "loss", "extra", "x"]
    assert [cell(v) for v in ([1, 2], {"a": 1}, None, 0.5)] == ["[1,2]", '{"a":1}', "", "0.5"]


@pytest.mark.parametrize("content,where", [("", "task-0.json"), ("{oops\n", "task-0.json:1"),
                                           ('log\n[1, 2]\n', "task-0.json:2")])
def test_gather_names_the_bad_file_and_line(tmp_path, content, where):
    (tmp_path / "task-0.json").write_text(content)
    with pytest.raises(DataError, match=where.replace(".", r"\.")):
        gather(tmp_path)


def test_gather_needs_results(tmp_path):
    with pytest.raises(DataError, match="no task-N.json"):
        gather(tmp_path)
    with pytest.raises(DataError, match="no such results folder"):
        gather(tmp_path / "missing")

