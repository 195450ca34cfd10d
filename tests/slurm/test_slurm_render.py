"""Rendering job scripts: golden files, validation, and that no value can inject shell code.

Golden files (tests/slurm/golden/) pin every template rendered with fixed values; after a
deliberate change to a template or to the renderer, rewrite them with
``MPIML_UPDATE_GOLDEN=1 python -m pytest tests/slurm/test_slurm_render.py`` and review
the diff.
"""

from __future__ import annotations

import json
import os
import shlex
import stat
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mpiml.errors import ArgumentError
from mpiml.slurm import templates
from mpiml.slurm.options import check_option, time_seconds
from mpiml.slurm.render import render_script, sbatch_header, template_options

GOLDEN = Path(__file__).parent / "golden"
RM = '"; rm -rf ~'  # must only ever appear quoted

GOLDEN_CASES = {
    "single-node": ({"ntasks-per-node": 8, "time": "2:00:00", "partition": "compute", "account": "proj-42",
                     "job-name": RM}, ["mpiml", "info", "--json"], "/opt/venvs/mpiml env"),
    "multi-node": ({"nodes": 4, "ntasks-per-node": 32, "time": "1-00:00:00", "exclusive": None,
                    "mail-type": "END,FAIL"}, ["mpiml", "info"], None),
    "hybrid": ({"nodes": 2, "ntasks-per-node": 2, "cpus-per-task": 16, "mem": "64G"}, ["mpiml", "info"], None),
    "sweep": ({"array": "0-99%10", "output": "sweeps/%x-%A_%a.out"},
              ["python", "train.py", "--json", "--note", "$(date)"], None),
    "preemptible": ({"time": "12:00:00", "signal": "B:USR1@300", "qos": "low"},
                    ["mpiml", "sgd", "--checkpoint-dir", "ck; " + RM[3:], "--resume"], "/home/me/venvs/mpiml"),
    "evaluate": ({"dependency": "afterok:1234"}, ["mpiml", "info", "it's `here`"], None),
}


def test_every_template_has_a_golden_case():
    assert sorted(GOLDEN_CASES) == sorted(templates.available())


@pytest.mark.parametrize("name", sorted(GOLDEN_CASES))
def test_rendered_template_matches_golden_file(name):
    options, command, venv = GOLDEN_CASES[name]
    text = render_script(templates.find(name).read_text(), options, command, venv)
    golden = GOLDEN / f"{name}.sbatch"
    if os.environ.get("MPIML_UPDATE_GOLDEN") == "1":
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(text)
    assert text == golden.read_text()


@pytest.mark.parametrize("name", sorted(GOLDEN_CASES))
def test_template_renders_to_itself_without_changes(name):
    """The shipped templates are in the renderer's canonical form (so diffs stay small)."""
    text = templates.find(name).read_text()
    assert render_script(text) == text


@pytest.mark.parametrize("name", sorted(GOLDEN_CASES))
def test_rendered_script_is_valid_bash(name):
    options, command, venv = GOLDEN_CASES[name]
    done = subprocess.run(["bash", "-n"], input=render_script(templates.find(name).read_text(), options, command,
                                                                venv), text=True, capture_output=True, timeout=30)
    assert done.returncode == 0, done.stderr


def test_header_is_a_pure_function_of_the_values():
    header = sbatch_header({"job-name": "my run", "nodes": 2, "time": "1:30:00", "requeue": None,
                            "output": "logs/%x-%j.out", "account": RM})
    assert header == ("#SBATCH --job-name='my run'\n#SBATCH --nodes=2\n#SBATCH --time=1:30:00\n"
                      "#SBATCH --requeue\n#SBATCH --output=logs/%x-%j.out\n"
                      "#SBATCH --account='\"; rm -rf ~'")


def test_options_override_the_template_and_new_ones_follow_its_last_directive():
    template = "#!/bin/bash\n#SBATCH --nodes=1   # machines\n#SBATCH --time=5\n\nMPIML_COMMAND=(true)\n"
    text = render_script(template, {"nodes": "3", "partition": "big"}, ["hostname"])
    assert text == ("#!/bin/bash\n#SBATCH --nodes=3   # machines\n#SBATCH --time=5\n#SBATCH --partition=big\n\n"
                    "MPIML_COMMAND=(hostname)\n")
    assert template_options(text) == {"nodes": "3", "time": "5", "partition": "big"}


def sbatch_value(script: str, name: str):
    """What sbatch reads for ``--name``: its #SBATCH parser removes quotes like a POSIX shell."""
    for line in script.split("\n"):
        if line.startswith(f"#SBATCH --{name}="):
            (word,) = shlex.split(line[len("#SBATCH"):], comments=True)
            return word.split("=", 1)[1]
    return None


NASTY = [RM, "$(touch canary)", "`touch canary`", "a'b", 'a"b', "x # y", "  spaced  ", "*", "~", "&&", "${HOME}",
         "'", "\"'\"", ";"]


@pytest.mark.parametrize("value", NASTY)
def test_header_values_reach_sbatch_verbatim_and_bash_sees_comments(value):
    script = render_script(templates.find("single-node").read_text(), {"job-name": value, "account": value},
                           ["true"])
    assert sbatch_value(script, "job-name") == value and sbatch_value(script, "account") == value
    lines = script.split("\n")  # bash: each value stays inside one comment line
    assert sum(line.startswith(("#SBATCH --job-name=", "#SBATCH --account=")) for line in lines) == 2
    assert len(lines) == len(templates.find("single-node").read_text().split("\n"))  # placeholder replaced


FAKE_SRUN = """#!/usr/bin/env python3
import json, os, sys
with open(os.environ["SRUN_RECORD"], "w") as out:
    json.dump(sys.argv[1:], out)
"""


def run_rendered(tmp_path, command, template="single-node"):
    """Run a rendered template in bash with a stand-in srun; returns the argv srun got."""
    fake = tmp_path / "bin"
    fake.mkdir(exist_ok=True)
    (fake / "srun").write_text(FAKE_SRUN)
    (fake / "srun").chmod(stat.S_IRWXU)
    script = tmp_path / "job.sbatch"
    script.write_text(render_script(templates.find(template).read_text(), {}, command))
    env = {"PATH": f"{fake}:{os.environ['PATH']}", "SRUN_RECORD": str(tmp_path / "argv.json"),
           "SLURM_JOB_ID": "1", "SLURM_NTASKS": "1", "SLURM_JOB_NODELIST": "n1", "HOME": str(tmp_path)}
    done = subprocess.run(["bash", str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return json.loads((tmp_path / "argv.json").read_text())


def test_command_words_reach_the_launcher_verbatim_and_run_nothing(tmp_path):
    command = ["prog", *NASTY, "line\nbreak", "", "\t"]
    argv = run_rendered(tmp_path, command)
    assert argv == ["--mpi=pmi2", *command]
    assert not list(tmp_path.rglob("canary"))


@given(st.lists(st.text(st.characters(blacklist_characters="\0", blacklist_categories=("Cs",))), min_size=1,
                max_size=4))
def test_any_command_round_trips_through_bash(words):
    line = render_script("#!/bin/bash\n#SBATCH --nodes=1\nMPIML_COMMAND=(x)\n", {}, words).split("\n", 2)[2]
    done = subprocess.run(["bash", "-c", line + '\nprintf "%s\\0" "${MPIML_COMMAND[@]}"'], capture_output=True,
                          timeout=30)
    assert done.returncode == 0
    assert done.stdout.decode("utf-8", "surrogateescape").split("\0")[:-1] == words


@given(st.text(st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="\\"), min_size=1))
def test_any_printable_header_value_round_trips(value):
    script = render_script("#!/bin/bash\n#SBATCH --nodes=1\nMPIML_COMMAND=(x)\n", {"comment": value})
    assert sbatch_value(script, "comment") == value


@pytest.mark.parametrize("value", ["a\nb", "a\rb", "tab\there", "nul\0", "back\\slash", "bell\x07", "del\x7f", ""])
def test_values_that_cannot_be_quoted_safely_are_refused(value):
    with pytest.raises(ArgumentError, match="--job-name"):
        render_script(templates.find("single-node").read_text(), {"job-name": value})


@pytest.mark.parametrize("text,seconds", [("5", 300), ("90", 5400), ("5:30", 330), ("120:00", 7200),
                                          ("1:00:00", 3600), ("30:00:00", 108000), ("2-0", 172800),
                                          ("1-12:30", 131400), ("0-0:0:1", 1)])
def test_slurm_time_formats(text, seconds):
    assert time_seconds(text) == seconds
    assert check_option("time", text) == text


@pytest.mark.parametrize("text", ["", "abc", "0", "0:00", "-5", "1:60:00", "10:60", "1:2:3:4", "1-24",
                                  "1-0:60", "5m", "1.5", "1:00:00; rm -rf ~", "UNLIMITED"])
def test_bad_times_are_refused(text):
    with pytest.raises(ArgumentError, match="--time"):
        check_option("time", text)


@pytest.mark.parametrize("name", ["nodes", "ntasks", "ntasks-per-node", "cpus-per-task"])
@pytest.mark.parametrize("value", [0, -1, "2x", "1.5", "", "3; rm -rf ~", " "])
def test_counts_must_be_positive_whole_numbers(name, value):
    with pytest.raises(ArgumentError, match=f"--{name}"):
        check_option(name, value)


def test_counts_are_normalised():
    assert check_option("nodes", 4) == "4" and check_option("ntasks", " 007 ") == "7"


@pytest.mark.parametrize("name,good,bad", [
    ("array", ["0-9", "1,3,5", "0-99%10", "0-20:2"], ["0-", "a-b", "1;2", "0-9%"]),
    ("dependency", ["afterok:12", "afterok:12:13,afterany:14", "singleton", "afterok:5_3"],
     ["afterok", "afterok:x", "later:12", "afterok:12;rm"]),
    ("signal", ["B:USR1@120", "USR1", "SIGTERM@60", "R:TERM@30"], ["USR1@", "usr1", "B:USR1@2m"]),
])
def test_structured_values(name, good, bad):
    for value in good:
        assert check_option(name, value) == value
    for value in bad:
        with pytest.raises(ArgumentError, match=f"--{name}"):
            check_option(name, value)


@pytest.mark.parametrize("name", ["Nodes", "--nodes", "a b", "", "x;y", "1x"])
def test_option_names_are_checked(name):
    with pytest.raises(ArgumentError, match="is not an sbatch long option name"):
        check_option(name, "1")


def test_warning_signal_must_fit_in_the_time_limit():
    with pytest.raises(ArgumentError, match="--signal"):
        render_script(templates.find("preemptible").read_text(), {"time": "2"})  # template: B:USR1@120
    assert "--signal=B:USR1@60" in render_script(templates.find("preemptible").read_text(),
                                                  {"time": "2", "signal": "B:USR1@60"})


@pytest.mark.parametrize("template,message", [
    ("#!/bin/bash\nMPIML_COMMAND=(x)\n", "no #SBATCH"),
    ("#!/bin/bash\n#SBATCH -N 2\nMPIML_COMMAND=(x)\n", "one long option"),
    ("#!/bin/bash\n#SBATCH --nodes=1\n#SBATCH --nodes=2\nMPIML_COMMAND=(x)\n", "twice"),
    ("#!/bin/bash\n#SBATCH --nodes=1\nsrun x\n", "MPIML_COMMAND"),
])
def test_malformed_templates_are_refused(template, message):
    with pytest.raises(ArgumentError, match=message):
        render_script(template, {}, ["y"])


def test_empty_command_is_refused():
    with pytest.raises(ArgumentError, match="empty"):
        render_script(templates.find("single-node").read_text(), {}, [])
