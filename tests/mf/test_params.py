"""The parameter table of the factorization models, and the command-line options made from it."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from mpiml.cli.mf import build_parser, check, epilog, given, make_model
from mpiml.errors import ArgumentError
from mpiml.mf import MODELS, params

RATINGS = ["--ratings", "synthetic:users=20,items=10,ratings=100"]
# A value of each kind that the option of such a parameter accepts.
GOOD = {"int": "3", "float": "0.5", "reg": "0.5", "grid": "0.1,0.2", "path": "ckpt"}


def option_argv(param):
    """The option of ``param`` with a valid value."""
    if param.kind == "bool":
        return [param.option]
    return [param.option, param.choices[0] if param.choices else GOOD[param.kind]]


def parse(*argv):
    args = build_parser().parse_args([*RATINGS, *argv])
    check(args)
    return args


def test_validate_normalizes_and_fills_defaults():
    values = params.validate("als", {"rank": np.int64(4), "reg": 1, "reg_grid": (0.3, 0.1, 0.3)})
    assert values["rank"] == 4 and type(values["rank"]) is int
    assert values["reg"] == 1.0 and type(values["reg"]) is float
    assert values["reg_grid"] == [0.1, 0.3] and values["iters"] == 10 and values["auto_iters"] is None
    assert list(values) == [p.name for p in params.of("als")]
    for bad in (1.0, True, "3"):
        with pytest.raises(ArgumentError, match=re.escape(f"als: iters must be an integer >= 0, got {bad!r}")):
            params.validate("als", {"iters": bad})
    for bad in (float("inf"), True, None):
        with pytest.raises(ArgumentError, match="dsgd: lr must be a number > 0, got"):
            params.validate("dsgd", {"lr": bad})
    with pytest.raises(ArgumentError, match=re.escape("unknown algorithm 'svd'; expected one of ['als', 'ials', "
                                                      "'dsgd', 'nomad']")):
        params.of("svd")


def test_the_table_is_consistent():
    for param in params.PARAMS:
        assert param.kind in params.KINDS and set(param.algorithms) <= set(params.ALGORITHMS), param
        assert (param.kind == "choice") == bool(param.choices), param
        if param.only_with is not None:
            other = params.BY_NAME[param.only_with[0]]
            assert set(param.algorithms) <= set(other.algorithms), param
        for algorithm in param.algorithms:  # every default passes its own check, and is plain JSON
            default = param.default_for(algorithm)
            if param.kind != "callable":
                assert param.check(default, algorithm) == default and json.loads(json.dumps(default)) == default
    assert params.AUTO == tuple(MODELS[a].algorithm for a in params.REG_GRIDS)
    assert MODELS["als"].REG_GRID == params.REG_GRIDS["als"] and MODELS["ials"].REG_GRID == ()


@pytest.mark.parametrize("algorithm", params.ALGORITHMS)
def test_the_command_line_builds_the_model_with_the_models_own_defaults(algorithm):
    args = parse("--algorithm", algorithm)
    assert given(args) == {}
    model = make_model(args, None)
    assert type(model) is MODELS[algorithm] and model.get_params() == MODELS[algorithm]().get_params()
    assert model.get_params() == params.defaults(algorithm)


def test_every_model_flag_reaches_the_model():
    assert {p.name for p in params.PARAMS if not p.flag} == {"callback"}
    expected = {"int": 3, "float": 0.5, "reg": 0.5, "bool": True}
    for algorithm in params.ALGORITHMS:
        plain = [p for p in params.of(algorithm) if p.flag and (p.kind in expected or p.choices)]
        argv = [arg for p in plain if p.name != "resume" and p.only_with is None for arg in option_argv(p)]
        model = make_model(parse("--algorithm", algorithm, *argv), None)
        for p in plain:
            if p.name != "resume" and p.only_with is None:
                assert getattr(model, p.name) == (p.choices[0] if p.choices else expected[p.kind]), p.name


def cases(pairs):
    return [pytest.param(p, a, id=f"{p.name}-{a}") for p, a in pairs]


@pytest.mark.parametrize("param, algorithm", cases((p, a) for p in params.PARAMS if p.flag for a in params.ALGORITHMS
                                                    if a not in p.algorithms))
def test_a_flag_of_another_algorithm_is_refused(param, algorithm):
    message = f"--algorithm {algorithm} does not take {param.option} ({'/'.join(param.algorithms)} only)"
    with pytest.raises(ArgumentError, match=re.escape(message)):
        parse("--algorithm", algorithm, *option_argv(param))


@pytest.mark.parametrize("param, algorithm", cases((p, a) for p in params.PARAMS if p.only_with for a in p.algorithms))
def test_a_flag_that_needs_another_setting_is_refused_without_it(param, algorithm):
    other = params.BY_NAME[param.only_with[0]]
    elsewhere = {"solver": "cholesky", "step": "bold", "reg": "0.5"}[other.name]
    message = f"{param.option} applies to {other.option} {param.only_with[1]} only"
    with pytest.raises(ArgumentError, match=re.escape(message)):
        parse("--algorithm", algorithm, other.option, elsewhere, *option_argv(param))
    parse("--algorithm", algorithm, other.option, str(param.only_with[1]), *option_argv(param))  # fine with it


def test_values_out_of_range_are_refused_with_the_option_named():
    with pytest.raises(ArgumentError, match=re.escape("--rank must be an integer >= 1, got 0")):
        parse("--rank", "0")
    with pytest.raises(ArgumentError, match=re.escape("--auto-fraction must be a number > 0 and < 1, got 1.5")):
        parse("--reg", "auto", "--auto-fraction", "1.5")
    with pytest.raises(ArgumentError, match=re.escape("--reg auto is for als and dsgd; give ials a number")):
        parse("--algorithm", "ials", "--reg", "auto")
    with pytest.raises(ArgumentError, match=re.escape("argument --reg-grid: '0.1,x' is not a comma list of numbers")):
        parse("--reg", "auto", "--reg-grid", "0.1,x")


def test_checkpoint_dir_defaults_to_the_environment(monkeypatch):
    monkeypatch.setenv("MPIML_CHECKPOINT_DIR", "/tmp/from-env")
    assert given(parse("--resume")) == {"checkpoint_dir": "/tmp/from-env/mf", "resume": True}  # sgd: .../sgd
    assert given(parse("--checkpoint-dir", "here"))["checkpoint_dir"] == "here"
    monkeypatch.delenv("MPIML_CHECKPOINT_DIR")
    with pytest.raises(ArgumentError, match="--resume needs --checkpoint-dir"):
        parse("--resume")


def test_help_shows_the_defaults_of_the_table():
    text = epilog()
    lines = {line.split()[0]: line for line in text.splitlines() if line.startswith("  ") and line.split()
             and line.split()[0] in params.ALGORITHMS}
    for algorithm in params.ALGORITHMS:
        for p in params.of(algorithm):
            if isinstance(p.default, dict):
                assert f"{p.option} {p.default_for(algorithm):g}" in " ".join(lines[algorithm].split()), (algorithm, p)
    assert "--confidence, --solver, --cg-steps, --dtype (ials)" in " ".join(text.split())
    helps = build_parser().format_help()
    assert "factor dimension (default: als 50, ials 100, dsgd 50, nomad 50)" in " ".join(helps.split())


def test_a_parameter_is_in_effect_only_with_its_setting():
    cg_steps, reg_grid, alpha = (params.BY_NAME[n] for n in ("cg_steps", "reg_grid", "alpha"))
    assert params.in_effect(cg_steps, {}, "ials") and not params.in_effect(cg_steps, {"solver": "cholesky"}, "ials")
    assert params.in_effect(reg_grid, {"reg": "auto"}, "als") and not params.in_effect(reg_grid, {}, "als")
    assert not params.in_effect(alpha, {}, "als") and params.in_effect(alpha, {}, "ials")
