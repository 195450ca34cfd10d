"""Command-line errors, --help and --version: one rank speaks, once; suggestions; nothing guessed."""

from __future__ import annotations

import argparse
import importlib

import pytest
from clirun import mpiml, one_error

from mpiml.cli import main as cli_main
from mpiml.cli.parser import Parser, UsageError, comma_list, suggest


def every_parser():
    """(name, parser) of ``mpiml`` and of every subcommand and sub-subcommand."""
    found = [("mpiml", cli_main.build_parser())]
    for name, (module, _) in cli_main.SUBCOMMANDS.items():
        found.append((name, importlib.import_module(module).build_parser()))
    stack = list(found)
    while stack:
        name, parser = stack.pop()
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction) and name != "mpiml":
                subs = [(f"{name} {n}", p) for n, p in action.choices.items()]
                found += subs
                stack += subs
    return found


def test_every_parser_is_the_shared_one_and_never_abbreviates():
    for name, parser in every_parser():
        assert isinstance(parser, Parser) and parser.allow_abbrev is False, name


@pytest.mark.parametrize("ranks", [1, 3])
def test_a_misspelled_flag_is_one_line_with_a_suggestion(ranks):
    result = mpiml(ranks, "sgd", "--epoch", "3", status=None)
    one_error(result, "mpiml sgd: unrecognized arguments: --epoch 3", "did you mean --epochs?")


@pytest.mark.parametrize("ranks", [1, 3])
def test_help_and_version_print_once(ranks):
    helped = mpiml(ranks, "sgd", "--help")
    assert helped.stdout.count("usage: mpiml sgd") == 1 and helped.stderr == ""
    version = mpiml(ranks, "--version")
    assert version.stdout.strip().startswith("mpiml ") and version.stdout.count("\n") == 1


@pytest.mark.parametrize("ranks", [1, 3])
def test_choices_and_commands_get_suggestions(ranks):
    one_error(mpiml(ranks, "sgd", "--model", "logistc", status=None), "invalid choice 'logistc'",
              "did you mean logistic?")
    one_error(mpiml(ranks, "sdg", status=None), "unknown command 'sdg'", "did you mean sgd?")
    one_error(mpiml(ranks, "datagen", "ratings", "--user", "5", "--out", "x.csv", status=None),
              "mpiml datagen ratings: unrecognized arguments: --user 5", "did you mean --users?")


def test_lists_are_parsed_strictly():
    one_error(mpiml(3, "model", "--ranks", "2,,4", status=None), "--ranks", "empty item")
    one_error(mpiml(1, "model", "--ranks", "2,x", status=None), "not a comma list of integers")
    one_error(mpiml(1, "bench", "allreduce", "--collective-algorithm", "ring,,native", status=None), "empty item")
    kind = comma_list(int, minimum=1)
    assert kind("4,2,4") == [4, 2]
    for bad in ("", "2,", ",2", "2,,4", "0", "two"):
        with pytest.raises(argparse.ArgumentTypeError):
            kind(bad)


def test_inputs_are_checked_before_any_work():
    one_error(mpiml(3, "mf", "--ratings", "synthetic:user=3", status=None), "unknown synthetic parameter 'user'")
    one_error(mpiml(3, "sgd", "--data", "synthetic:classification,q=3", status=None), "bad synthetic option 'q=3'")


def test_outputs_are_checked_before_any_work(tmp_path):
    missing = tmp_path / "no" / "such"
    one_error(mpiml(3, "tune", "--out", missing / "t.json", status=None), "does not exist")
    one_error(mpiml(1, "datagen", "ratings", "--out", missing / "r.csv", status=None), "does not exist")
    one_error(mpiml(1, "sgd", "--out", missing / "m.npz", status=None), "does not exist")


def test_slurm_render_checks_an_mpiml_command_before_it_is_queued(tmp_path):
    one_error(mpiml(1, "slurm", "render", "single-node", "--", "mpiml", "sgd", "train", "--resume", status=None),
              "the job's command would fail", "unrecognized arguments: train")
    one_error(mpiml(1, "slurm", "render", "single-node", "--", "mpiml", "sgd", "--resume", status=None),
              "--resume needs --checkpoint-dir")
    # The preemptible template exports MPIML_CHECKPOINT_DIR, which mpiml sgd reads.
    rendered = mpiml(1, "slurm", "render", "preemptible", "--", "mpiml", "sgd", "--resume")
    assert "MPIML_COMMAND=(mpiml sgd --resume)" in rendered.stdout


def test_parser_unit_behaviour():
    parser = Parser(prog="mpiml demo")
    parser.add_argument("--epochs", type=int, default=5, help="passes")
    parser.add_argument("--flag", action="store_true", help="a switch")
    with pytest.raises(UsageError, match="did you mean --epochs"):
        parser.parse_args(["--epoch", "3"])
    assert "(default: 5)" in parser.format_help() and "(default: False)" not in parser.format_help()
    assert suggest("logistc", ["logistic", "linear"]) == "; did you mean logistic?"
    assert suggest("zzz", ["logistic"]) == ""
