"""One flag vocabulary across commands; the 0.1 spellings still work, with a warning."""

from __future__ import annotations

import argparse
import importlib

import pytest
from clirun import mpiml, one_json

from mpiml.cli import main as cli_main
from mpiml.cli.parser import option_spellings

# command -> options it must have (the README's flag vocabulary)
VOCABULARY = {
    "sgd": {"--reg", "--iters", "--epochs", "--collective-algorithm", "--out", "--json", "--seed", "--test",
            "--test-fraction"},
    "mf": {"--algorithm", "--reg", "--iters", "--confidence", "--collective-algorithm", "--out", "--json", "--seed",
           "--test", "--test-fraction"},
    "bench": {"--collective-algorithm", "--iters", "--max-iters", "--sizes", "--json", "--plot"},
    "tune": {"--collective", "--ranks", "--sizes", "--max-iters", "--out", "--json"},
    "model": {"--collective", "--ranks", "--sizes", "--json"},
}
OLD = {"--alpha", "--max-iter", "--exchange", "--algorithms", "--collectives"}


def parser_of(command):
    return importlib.import_module(cli_main.SUBCOMMANDS[command][0]).build_parser()


@pytest.mark.parametrize("command", sorted(cli_main.SUBCOMMANDS))
def test_one_vocabulary(command):
    spellings = option_spellings(parser_of(command))
    assert VOCABULARY.get(command, set()) <= spellings
    assert not spellings & OLD, spellings & OLD
    if command == "sgd":
        assert "--algorithm" not in spellings  # the method of sgd is --strategy; --algorithm is mf's


def walk(name, parser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from walk(f"{name} {sub_name}", sub)
        elif action.option_strings and action.dest != "help":
            yield name, action


@pytest.mark.parametrize("command", sorted(cli_main.SUBCOMMANDS))
def test_every_option_has_help_and_shows_its_default(command):
    parser = parser_of(command)
    for name, action in walk(command, parser):
        assert action.help, (name, action.option_strings)
        shown = parser._get_formatter()._get_help_string(action)
        if action.default not in (None, False, [], argparse.SUPPRESS) and not isinstance(action, argparse._StoreConstAction):
            assert "default" in shown, (name, action.option_strings, shown)


def test_old_spellings_still_work_with_one_warning():
    result = mpiml(3, "sgd", "--data", "synthetic:classification,n=300,d=5", "--strategy", "lbfgs", "--alpha", "0.01",
                   "--max-iter", "5", "--algorithm", "ring", "--json")
    report = one_json(result)
    assert report["lbfgs_iterations"] <= 5
    warnings = [line for line in result.stderr.splitlines() if "warning" in line]
    assert warnings == ["mpiml: warning: mpiml sgd --alpha is now --reg; the old spelling will go away",
                        "mpiml: warning: mpiml sgd --max-iter is now --iters; the old spelling will go away",
                        "mpiml: warning: mpiml sgd --algorithm is now --collective-algorithm; the old spelling will "
                        "go away"], result.stderr


def test_new_spellings_reach_the_estimators():
    from mpiml.cli import mf, sgd

    args = sgd.build_parser().parse_args(["--reg", "0.5", "--iters", "7", "--collective-algorithm", "ring"])
    assert (args.alpha, args.max_iter, args.collective_algorithm) == (0.5, 7, "ring")
    args = mf.build_parser().parse_args(["--ratings", "synthetic:users=10", "--algorithm", "ials", "--confidence",
                                         "3", "--collective-algorithm", "ring"])
    assert mf.given(args) == {"alpha": 3.0, "exchange": "ring"}
    assert mf.make_model(args, None).get_params()["alpha"] == 3.0
