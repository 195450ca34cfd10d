"""The field table of training settings: strategy resolution, settings a strategy would not use,
validation, the generated command-line options, and the estimator's parameters (no MPI)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from mpi4py import MPI

from mpiml.cli.sgd import _flag, build_parser, resolve_settings
from mpiml.errors import ArgumentError
from mpiml.train.config import DEFAULTS, SETTINGS, STRATEGIES, TrainConfig, resolve, resolve_strategy, settings_table


@pytest.mark.parametrize("model,l1_ratio,squared,given,expected", [
    ("logistic", 0.0, False, (), "lbfgs"),
    ("linear", 0.0, False, (), "lbfgs"),
    ("softmax", 0.0, False, (), "lbfgs"),
    ("svm", 0.0, True, (), "lbfgs"),
    ("svm", 0.0, False, (), "sync"),            # the hinge is not smooth
    ("logistic", 0.5, False, (), "sync"),       # nor is an L1 part
    ("linear", 1.0, False, (), "sync"),
    ("logistic", 0.0, False, ("alpha", "seed"), "lbfgs"),
    ("logistic", 0.0, False, ("lr",), "sync"),  # SGD settings ask for SGD
    ("softmax", 0.0, False, ("epochs",), "sync"),
    ("logistic", 0.0, False, ("sync_every",), "local"),  # which only local uses
    ("svm", 0.0, False, ("sync_every", "lr"), "local"),
    ("logistic", 0.0, False, ("max_iter",), "lbfgs"),
])
def test_auto_resolves_to_lbfgs_for_smooth_problems_only(model, l1_ratio, squared, given, expected):
    assert resolve_strategy(model, l1_ratio, squared, given) == expected
    settings = {name: getattr(DEFAULTS, name) for name in given}
    settings["l1_ratio"] = l1_ratio
    assert resolve("auto", model, squared, settings).strategy == expected


@pytest.mark.parametrize("strategy,settings,names", [
    ("lbfgs", {"lr": 0.1}, ["lr"]),
    ("lbfgs", {"batch_size": 8, "momentum": 0.5, "epochs": 2}, ["batch_size", "momentum", "epochs"]),
    ("lbfgs", {"warm_start_epochs": 1, "lr": 0.1, "epochs": 3}, ["epochs"]),  # the warm start uses lr
    ("sync", {"max_iter": 10}, ["max_iter"]),
    ("oneshot", {"tol": 1e-3, "warm_start_epochs": 2}, ["tol", "warm_start_epochs"]),
    ("sync", {"sync_every": 4}, ["sync_every"]),
    ("auto", {"lr": 0.1, "tol": 1e-3}, ["tol"]),
    ("auto", {"l1_ratio": 0.5, "max_iter": 9}, ["max_iter"]),
])
def test_settings_the_strategy_would_not_use_are_errors(strategy, settings, names):
    with pytest.raises(ArgumentError, match="not used by strategy") as info:
        resolve(strategy, "logistic", False, settings)
    message = str(info.value)
    assert all(name in message for name in names) and "not used by strategy" in message, message
    with pytest.raises(ArgumentError, match="--" + names[0].replace("_", "-")):
        resolve(strategy, "logistic", False, settings, spell=lambda n: "--" + n.replace("_", "-"))


def test_settings_that_apply_are_accepted():
    assert resolve("lbfgs", "logistic", False, {"warm_start_epochs": 1, "lr": 0.1, "tol": 1e-6}).lr == 0.1
    assert resolve("local", "logistic", False, {"sync_every": 3, "epochs": 2}).sync_every == 3
    assert resolve("sync", "svm", False, {"alpha": 1e-3, "seed": 4, "lr": 0.3}).strategy == "sync"
    with pytest.raises(ArgumentError, match="unknown setting"):
        resolve("sync", "logistic", False, {"learning_rate": 0.1})
    with pytest.raises(ArgumentError, match="unknown strategy"):
        resolve("newton", "logistic", False, {})


def test_the_cli_takes_its_defaults_from_train_config():
    args = build_parser().parse_args([])
    settings = resolve_settings(args)
    assert settings == {} and args.strategy == "lbfgs" and args.strategy_requested == "auto"
    for name in SETTINGS:
        assert getattr(args, name) == getattr(DEFAULTS, name), name
    sgd = build_parser().parse_args(["--strategy", "sync"])
    resolve_settings(sgd)
    assert (sgd.lr, sgd.batch_size, sgd.epochs) == (TrainConfig.lr, TrainConfig.batch_size, TrainConfig.epochs)
    given = build_parser().parse_args(["--lr", "0.3", "--nesterov", "--momentum", "0.5"])
    assert resolve_settings(given) == {"lr": 0.3, "nesterov": True, "momentum": 0.5} and given.strategy == "sync"


def _options(parser):
    """``{dest: action}`` of every option of ``parser``."""
    return {action.dest: action for action in parser._actions if action.option_strings}


def test_every_setting_of_the_table_is_one_option_with_its_type_choices_and_default():
    options, table = _options(build_parser()), settings_table()
    for name, setting in table.items():
        action = options[name]
        assert action.option_strings == [_flag(name)], name   # the name, or the shared vocabulary's
        assert action.default is None, name   # given or not: the strategy's errors need to tell
        if setting.type is bool:
            assert action.const is True and action.nargs == 0, name
        else:
            assert action.type is setting.type and tuple(action.choices or ()) == tuple(setting.choices or ()), name
        default = getattr(DEFAULTS, name)
        if setting.default_text is None:
            assert f"(default {default:g})" in action.help if isinstance(default, float) \
                else f"(default {default})" in action.help, (name, action.help)
        if setting.scope:
            assert action.help.startswith(setting.scope + ":"), (name, action.help)
    strategy = options["strategy"]
    assert strategy.default == DEFAULTS.strategy == "auto" and tuple(strategy.choices) == STRATEGIES
    # the options the command adds itself: the CLI-only ones, none a training setting
    cli_only = {"data", "format", "test", "test_fraction", "n_features", "label_column", "model", "classes",
                "no_intercept", "standardize", "squared_hinge", "collective_algorithm", "checkpoint_dir", "resume",
                "overwrite", "stop_after_updates", "out", "json", "progress", "parallel", "grid", "split", "explain",
                "help", "plot", "zero_based", "header", "timeout", "slow_ranks",
                "strategy"}
    assert set(options) == cli_only | set(table)


def test_the_checkpoint_directory_defaults_to_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("MPIML_CHECKPOINT_DIR", str(tmp_path))
    assert build_parser().parse_args([]).checkpoint_dir == str(tmp_path / "sgd")  # mf: .../mf
    monkeypatch.delenv("MPIML_CHECKPOINT_DIR")
    assert build_parser().parse_args([]).checkpoint_dir is None


@pytest.mark.parametrize("settings,needle", [
    ({"epochs": 0}, "epochs must be >= 1, got 0"),
    ({"lr": 0.0}, "lr must be > 0, got 0.0"),
    ({"tol": -1.0}, "tol must be > 0"),
    ({"momentum": 1.0}, "momentum must be < 1"),
    ({"l1_ratio": 1.5}, "l1_ratio must be <= 1"),
    ({"alpha": -0.1}, "alpha must be >= 0"),
    ({"optimizer": "lion"}, "unknown optimizer 'lion'; choose from sgd, adagrad, adam"),
    ({"schedule": "warp"}, "unknown schedule 'warp'"),
    ({"batch_size": 2.5}, "batch_size must be int, got 2.5"),
    ({"nesterov": True}, "nesterov needs a momentum > 0"),
    ({"optimizer": "adam", "momentum": 0.5}, "momentum/nesterov apply to the 'sgd' optimizer, not 'adam'"),
    ({"strategy": "lbfgs", "l1_ratio": 0.5}, "lbfgs needs a smooth objective"),
])
def test_validation_follows_the_table(settings, needle):
    with pytest.raises(ArgumentError, match=re.escape(needle)):
        TrainConfig(**{"strategy": "sync", **settings}).validate()


@pytest.mark.parametrize("argv,needle", [
    (["--strategy", "lbfgs", "--batch-size", "32"], "--batch-size"),
    (["--strategy", "sync", "--tol", "1e-3"], "--tol"),
    (["--strategy", "lbfgs", "--stop-after-updates", "5"], "--stop-after-updates"),
    (["--model", "svm", "--iters", "5"], "--iters"),
])
def test_cli_spells_the_flags_in_its_errors(argv, needle):
    with pytest.raises(ArgumentError, match=needle):
        resolve_settings(build_parser().parse_args(argv))


def _tiny():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 3))
    return X, (X[:, 0] > 0).astype(float)


def test_the_estimator_stores_its_parameters_and_validates_them_in_fit():
    from mpiml.sgd import LinearModel

    est = LinearModel("logistic", "lbfgs", lr=0.1, parallel="data", comm=MPI.COMM_SELF)
    assert est.get_params()["lr"] == 0.1 and est.strategy == "lbfgs" and est.standardize is None
    assert not hasattr(est, "config_")
    with pytest.raises(ArgumentError, match="lr not used by strategy lbfgs"):
        est.fit(*_tiny())
    with pytest.raises(ArgumentError, match="unknown setting 'learning_rate'"):
        LinearModel(learning_rate=0.1, comm=MPI.COMM_SELF).fit(*_tiny())
    with pytest.raises(ArgumentError, match="unknown parallel 'columns'"):
        LinearModel(parallel="columns", comm=MPI.COMM_SELF).fit(*_tiny())
    assert est.set_params(strategy="sync") is est and est.fit(*_tiny()).config_.strategy == "sync"


@pytest.mark.parametrize("args,kwargs,strategy,standardize", [
    ((), {}, "lbfgs", False),
    (("svm",), {}, "sync", True),
    ((), {"epochs": 2}, "sync", True),
    (("logistic", "sync"), {"standardize": False}, "sync", False),
])
def test_the_estimator_resolves_auto_and_standardizes_for_sgd_only(args, kwargs, strategy, standardize):
    from mpiml.sgd import LinearModel

    est = LinearModel(*args, comm=MPI.COMM_SELF, **kwargs)
    assert est.standardize == kwargs.get("standardize")   # stored as given
    est.fit(*_tiny())
    assert est.config_.strategy == strategy and est.standardize_ is standardize
    assert est.layout_["parallel"] == "data" and est.layout_["grid"] == "1x1"
