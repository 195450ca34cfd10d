"""Tuning files: parsing, and "auto" following them (serial)."""

from __future__ import annotations

import json

import pytest

from mpiml.collectives import select
from mpiml.collectives.model import ModelParams
from mpiml.collectives.tuning import load_tuning, parse_tuning, rules_document
from mpiml.errors import ArgumentError


def document(rules, params=None):
    return {"format": "mpiml-tuning", "version": 1, "rules": rules, **({"params": params} if params else {})}


@pytest.fixture(autouse=True)
def no_tuning(monkeypatch):
    monkeypatch.delenv("MPIML_TUNING", raising=False)
    select.set_tuning(None)
    yield
    select.set_tuning(None)


def test_lookup_follows_the_ranges():
    tuning = parse_tuning(document({"allreduce": {"3": [
        {"min_bytes": 0, "algorithm": "tree"}, {"min_bytes": 1000, "algorithm": "ring"}]}}), select.ALGORITHMS)
    assert [tuning.lookup("allreduce", n, 3) for n in (0, 999, 1000, 10**9)] == ["tree", "tree", "ring", "ring"]
    assert tuning.lookup("allreduce", 5000, 4) is None
    assert tuning.lookup("bcast", 5000, 3) is None


@pytest.mark.parametrize("bad, why", [
    ({"format": "other", "version": 1}, "format"),
    ({"format": "mpiml-tuning", "version": 9}, "version"),
    (document({"allreduce": {"2": [{"min_bytes": 0, "algorithm": "warp"}]}}), "unknown algorithm"),
    (document({"allreduce": {"2": [{"min_bytes": 5, "algorithm": "ring"}]}}), "start at 0"),
    (document({"allreduce": {"2": [{"min_bytes": 0, "algorithm": "ring"}, {"min_bytes": 0, "algorithm": "tree"}]}}),
     "increase"),
    (document({"allreduce": {"two": [{"min_bytes": 0, "algorithm": "ring"}]}}), "rules.allreduce.two"),
    (document({"gossip": {}}), "unknown collective"),
    (document({}, params={"alpha": 1e-6, "warp": 3}), "unknown model parameters"),
])
def test_bad_documents_are_refused_with_the_reason(bad, why):
    with pytest.raises(ArgumentError, match=why):
        parse_tuning(bad, select.ALGORITHMS, "t.json")


def test_unreadable_files_are_argument_errors(tmp_path):
    with pytest.raises(ArgumentError, match="cannot read"):
        load_tuning(tmp_path / "missing.json", select.ALGORITHMS)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ArgumentError, match="bad.json"):
        load_tuning(tmp_path / "bad.json", select.ALGORITHMS)


def test_rules_document_round_trips():
    rules = {("allreduce", 2): [(0, "native"), (4096, "recursive_doubling")], ("bcast", 3): [(0, "binomial")]}
    tuning = parse_tuning(document(rules_document(rules)), select.ALGORITHMS)
    assert tuning.rules == {key: (tuple(s for s, _ in v), tuple(n for _, n in v)) for key, v in rules.items()}


def write(tmp_path, rules, params=None):
    path = tmp_path / "tuning.json"
    path.write_text(json.dumps(document(rules, params)))
    return path


def test_auto_uses_a_tuning_file_given_by_path(tmp_path):
    # A choice no default rule would make: the tree for every size at 3 ranks.
    path = write(tmp_path, {"allreduce": {"3": [{"min_bytes": 0, "algorithm": "tree"}]}})
    assert select.choose("allreduce", "auto", 64 << 20, 3) != "tree"
    select.set_tuning(path)
    assert all(select.choose("allreduce", "auto", n, 3) == "tree" for n in (8, 4096, 64 << 20))
    # Other rank counts are not in the file: they fall back to the model.
    assert select.choose("allreduce", "auto", 64 << 20, 4) == select.model_winner("allreduce", 64 << 20, 4)
    select.set_tuning(None)
    assert select.choose("allreduce", "auto", 64 << 20, 3) != "tree"


def test_auto_uses_the_environment_variable(tmp_path, monkeypatch):
    path = write(tmp_path, {"bcast": {"2": [{"min_bytes": 0, "algorithm": "pipeline"}]}})
    monkeypatch.setenv("MPIML_TUNING", str(path))
    select.set_tuning(None)
    assert select.current_tuning().source == str(path)
    assert select.choose("bcast", "auto", 8, 2) == "pipeline"


def test_rules_never_give_an_order_dependent_algorithm_to_a_non_commutative_op(tmp_path):
    select.set_tuning(write(tmp_path, {"allreduce": {"2": [{"min_bytes": 0, "algorithm": "ring"}]}}))
    assert select.choose("allreduce", "auto", 1 << 20, 2, commutative=True) == "ring"
    assert select.choose("allreduce", "auto", 1 << 20, 2, commutative=False) == "native"


def test_calibrated_params_drive_other_rank_counts(tmp_path):
    # A machine with huge per-step Python cost: the model must keep native everywhere.
    slow_python = ModelParams(step_overhead=1.0).to_dict()
    select.set_tuning(write(tmp_path, {}, params=slow_python))
    assert {select.choose("allreduce", "auto", n, 16) for n in (8, 1 << 20, 1 << 30)} == {"native"}


def test_default_rule_small_messages_native_large_bandwidth_optimal():
    for p in (2, 3, 4, 5, 8, 64, 1000):
        assert select.choose("allreduce", "auto", 8, p) == "native"
        assert select.choose("allreduce", "auto", 256 << 20, p) in ("ring", "rabenseifner")


def test_measured_rules_pick_the_fastest_and_keep_native_within_the_margin():
    from mpiml.perf.tune import measured_rules

    def rec(nbytes, name, seconds):
        return {"collective": "allreduce", "ranks": 2, "bytes": nbytes, "algorithm": name,
                "time_median_seconds": seconds}

    records = [rec(8, "native", 1.0), rec(8, "ring", 0.99),          # 1% faster: noise, native stays
               rec(64, "native", 1.0), rec(64, "ring", 0.5),          # clearly faster
               rec(1024, "native", 1.0), rec(1024, "ring", 0.6), rec(1024, "tree", 0.4)]
    assert measured_rules(records) == {("allreduce", 2): [(0, "native"), (23, "ring"), (257, "tree")]}
