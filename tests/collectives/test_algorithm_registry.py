"""The algorithm registry: registration rules, and everything that reads it (serial)."""

from __future__ import annotations

import pytest

import mpiml
from mpiml import ArgumentError
from mpiml.collectives import model, registry, select
from mpiml.collectives.tuning import parse_tuning

TOY = "toy_exchange"


def free(n, p, rates):
    """A cost formula that makes the toy the model's pick everywhere."""
    return 0.0


def toy_run(transport, x, out, op, workspace):  # never called here: the tests are serial
    raise AssertionError("serial tests do not run collectives")


@pytest.fixture
def toy(monkeypatch):
    """The toy allreduce registered for one test, removed afterwards whatever happens."""
    monkeypatch.delenv("MPIML_TUNING", raising=False)
    select.set_tuning(None)
    registry.register("allreduce", TOY, toy_run, cost=free)
    yield registry.get("allreduce", TOY)
    if TOY in registry.ALGORITHMS["allreduce"]:
        registry.unregister("allreduce", TOY)
    select.set_tuning(None)


def test_built_in_algorithms_and_their_flags():
    assert mpiml.ALGORITHMS is registry.ALGORITHMS
    assert dict(registry.ALGORITHMS) == {
        "allreduce": ("native", "ring", "recursive_doubling", "rabenseifner", "tree",
                      "hierarchical", "hierarchical_slices", "shared_memory"),
        "reduce_scatter": ("native", "ring", "hierarchical"),
        "allgather": ("native", "ring", "hierarchical"),
        "bcast": ("native", "binomial", "pipeline", "hierarchical"),
        "reduce": ("native", "binomial"),
    }
    flagged = {(a.collective, a.name) for c in registry.COLLECTIVES for a in registry.algorithms(c)
               if a.commutative_only}
    assert flagged == {("allreduce", "ring"), ("allreduce", "rabenseifner"), ("reduce_scatter", "ring"),
                       ("allreduce", "hierarchical"), ("allreduce", "hierarchical_slices"),
                       ("allreduce", "shared_memory"), ("reduce_scatter", "hierarchical")}


def test_a_registered_algorithm_is_named_chosen_and_priced_until_removed(toy):
    assert registry.ALGORITHMS["allreduce"][-1] == TOY and toy.run is toy_run
    assert select.choose("allreduce", TOY, 1024, 4) == TOY
    assert model.algorithms("allreduce")[-1] == TOY
    params = model.ModelParams()
    assert model.predict(TOY, 1 << 20, 4, params) == pytest.approx(params.call_overhead)
    assert model.predict(TOY, 4000, 1, params) == pytest.approx(params.call_overhead + 4000 * params.copy)
    # auto's tables were dropped at registration: the free toy wins every size at p >= 2.
    assert {select.choose("allreduce", "auto", n, p) for n in (8, 1 << 20) for p in (2, 5, 1000)} == {TOY}
    assert select.choose("allreduce", "auto", 8, 2, commutative=False) == "native"
    registry.unregister("allreduce", TOY)
    assert TOY not in registry.ALGORITHMS["allreduce"]
    assert select.choose("allreduce", "auto", 8, 2) == "native"
    with pytest.raises(ArgumentError, match=f"unknown allreduce algorithm '{TOY}'"):
        select.choose("allreduce", TOY, 8, 2)
    with pytest.raises(ValueError, match=f"no model for allreduce algorithm '{TOY}'"):
        model.predict(TOY, 8, 2)


def test_the_perf_tools_see_a_registered_algorithm(toy):
    from mpiml.cli.bench import resolve_algorithms
    from mpiml.perf.extrapolate import crossover_points, predictions

    assert TOY in resolve_algorithms("allreduce", "all")
    assert resolve_algorithms("allreduce", f"{TOY},auto") == [TOY, "auto"]
    [record] = predictions("allreduce", [64], [1 << 20], model.DEFAULT_PARAMS)
    assert record["fastest"] == record["auto"] == TOY and TOY in record["predicted_seconds"]
    assert crossover_points("allreduce", 64, 1, 1 << 30, model.DEFAULT_PARAMS) == []  # the toy all the way


def test_a_tuning_file_may_name_a_registered_algorithm_only():
    document = {"format": "mpiml-tuning", "version": 1,
                "rules": {"allreduce": {"3": [{"min_bytes": 0, "algorithm": TOY}]}}}
    with pytest.raises(ArgumentError, match="unknown algorithm"):
        parse_tuning(document, registry.ALGORITHMS)
    registry.register("allreduce", TOY, toy_run, cost=free)
    try:
        tuning = parse_tuning(document, registry.ALGORITHMS)
        select.set_tuning(tuning)
        assert select.choose("allreduce", "auto", 8, 3) == TOY
    finally:
        registry.unregister("allreduce", TOY)
        select.set_tuning(None)
    # The file still names it, but auto never runs an algorithm that is gone.
    select.set_tuning(tuning)
    try:
        assert select.choose("allreduce", "auto", 8, 3) == "native"
    finally:
        select.set_tuning(None)


def test_commutative_only_and_supports_constraints():
    registry.register("allreduce", TOY, toy_run, cost=free, commutative_only=True, supports=lambda p: p % 2 == 0)
    try:
        with pytest.raises(ArgumentError, match="needs a commutative op; use one of .*'native'"):
            select.choose("allreduce", TOY, 8, 4, commutative=False)
        with pytest.raises(ArgumentError, match=f"'{TOY}' does not run at 3 ranks"):
            select.choose("allreduce", TOY, 8, 3)
        assert select.choose("allreduce", TOY, 8, 1) == TOY  # one rank: a local copy for everyone
        assert select.choose("allreduce", "auto", 1 << 20, 4) == TOY
        assert select.choose("allreduce", "auto", 1 << 20, 3) != TOY
        assert TOY not in select.candidates("allreduce", commutative=True, size=3)
        assert TOY in select.candidates("allreduce", commutative=True, size=4)
    finally:
        registry.unregister("allreduce", TOY)


def test_register_as_a_decorator_returns_the_function():
    @registry.register("reduce", TOY, cost=free)
    def run(transport, x, out, op, root, workspace):
        return out

    try:
        assert run.__name__ == "run" and registry.get("reduce", TOY).run is run
        assert registry.ALGORITHMS["reduce"] == ("native", "binomial", TOY)
    finally:
        assert registry.unregister("reduce", TOY).run is run


@pytest.mark.parametrize("collective, name, kwargs, message", [
    ("gossip", TOY, {}, "unknown collective 'gossip'"),
    ("allreduce", "auto", {}, "other than 'auto'"),
    ("allreduce", "a,b", {}, "non-empty words"),
    ("allreduce", "", {}, "non-empty words"),
    ("allreduce", "ring", {}, "'ring' is already registered"),
    ("allreduce", TOY, {"cost": 3.0}, "must be callables"),
    ("allreduce", TOY, {"supports": 2}, "must be callables"),
])
def test_bad_registrations_are_refused(collective, name, kwargs, message):
    with pytest.raises(ArgumentError, match=message):
        registry.register(collective, name, toy_run, **{"cost": free, **kwargs})
    assert TOY not in registry.ALGORITHMS["allreduce"]


def test_replace_and_unregister_errors():
    ring = registry.get("allreduce", "ring")
    registry.register("allreduce", "ring", ring.run, cost=free, commutative_only=True, replace=True)
    try:
        assert registry.get("allreduce", "ring").cost is free
        assert registry.ALGORITHMS["allreduce"][1] == "ring"  # replaced where it stood
    finally:
        registry.register("allreduce", "ring", ring.run, cost=ring.cost, commutative_only=True, replace=True)
    assert registry.get("allreduce", "ring") == ring
    with pytest.raises(ArgumentError, match=f"no allreduce algorithm '{TOY}' is registered"):
        registry.unregister("allreduce", TOY)
    with pytest.raises(ArgumentError, match=f"unknown bcast algorithm '{TOY}'; expected 'auto' or one of"):
        registry.get("bcast", TOY)


def test_modules_added_to_an_algorithm_package_are_imported_in_order(tmp_path, monkeypatch):
    from mpiml.collectives.algorithms import import_modules

    package = tmp_path / "extra_algorithms"
    package.mkdir()
    (package / "__init__.py").write_text("LOADED = []\n")
    for name in ("zeta", "alpha", "mid"):
        (package / f"{name}.py").write_text(f"from extra_algorithms import LOADED\nLOADED.append({name!r})\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import extra_algorithms

    import_modules("extra_algorithms", extra_algorithms.__path__, first=("mid",))
    assert extra_algorithms.LOADED == ["mid", "alpha", "zeta"]
