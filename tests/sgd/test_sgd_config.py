"""Strategy resolution, settings a strategy would not use, and the one source of defaults (no MPI)."""

from __future__ import annotations

import pytest

from mpiml.cli.sgd import build_parser, resolve_settings
from mpiml.runtime.errors import ArgumentError
from mpiml.sgd.config import DEFAULTS, SETTINGS, TrainConfig, resolve, resolve_strategy


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
    with pytest.raises(ArgumentError) as info:
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


@pytest.mark.parametrize("argv,needle", [
    (["--strategy", "lbfgs", "--batch-size", "32"], "--batch-size"),
    (["--strategy", "sync", "--tol", "1e-3"], "--tol"),
    (["--strategy", "lbfgs", "--stop-after-updates", "5"], "--stop-after-updates"),
    (["--model", "svm", "--max-iter", "5"], "--max-iter"),
])
def test_cli_spells_the_flags_in_its_errors(argv, needle):
    with pytest.raises(ArgumentError, match=needle):
        resolve_settings(build_parser().parse_args(argv))


def test_estimator_resolves_auto_and_standardizes_for_sgd_only():
    from mpiml.sgd import LinearModel

    assert LinearModel().config.strategy == "lbfgs" and not LinearModel().standardize
    assert LinearModel("svm").config.strategy == "sync" and LinearModel("svm").standardize
    assert LinearModel(epochs=2).config.strategy == "sync"
    assert not LinearModel("logistic", "sync", standardize=False).standardize
    with pytest.raises(ArgumentError, match="lr"):
        LinearModel("logistic", "lbfgs", lr=0.1)
