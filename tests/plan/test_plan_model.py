"""The plan model (mpiml.plan): its pure functions against independent oracles.

Memory: the byte counts the model gives for a data shard against the ``nbytes`` of the
arrays the readers really build; compute: monotone in the sizes, linear where the model
says so, oversubscription as ranks x threads over cores; calibration: a round trip
through a tuning file; the probe's fit recovers known constants.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest

from mpiml.errors import ArgumentError
from mpiml.plan import Calibration, Cluster, Job, Layout, Prediction, load_calibration, predict
from mpiml.plan import calibration as calibration_module
from mpiml.plan import compute, memory

DENSE = Job("sgd", "sync", rows=20000, features=50, nnz=20000 * 50, dense=True, batch_size=256, epochs=3)
WIDE = Job("sgd", "lbfgs", rows=10000, features=2_000_000, nnz=10000 * 300, max_iter=50)
ALS = Job("mf", "als", users=50000, items=10000, ratings=2_000_000, factors=32, iterations=5)
JOBS = [DENSE, replace(DENSE, algorithm="local"), replace(DENSE, algorithm="oneshot"), WIDE,
        replace(DENSE, algorithm="lbfgs"), ALS, replace(ALS, algorithm="ials"), replace(ALS, algorithm="dsgd")]
CLUSTER = Cluster(nodes_max=64, cores_per_node=32, mem_per_node_bytes=256 << 30)


def test_spec_validates_and_derives():
    assert Layout(3, 4).ranks == 12 and Layout(3, 4).replicas_blocks == (12, 1)
    assert Layout(1, 4, parallel="model").replicas_blocks == (1, 4)
    assert Layout(2, 3, parallel="hybrid", grid=(2, 3)).replicas_blocks == (2, 3)
    assert Layout(1, 6, parallel="hybrid").replicas_blocks == (3, 2)   # most nearly square by default
    for bad in (dict(nodes=0, ranks_per_node=1), dict(nodes=1, ranks_per_node=2, parallel="pipeline"),
                dict(nodes=1, ranks_per_node=4, parallel="hybrid", grid=(3, 2)),
                dict(nodes=1, ranks_per_node=5, parallel="hybrid")):
        with pytest.raises(ValueError):
            Layout(**bad)
    with pytest.raises(ValueError):
        Job("sgd", "als")
    assert replace(ALS, algorithm="ials").factor_itemsize == 4 and ALS.width == 34
    assert DENSE.standardized and not WIDE.standardized


def test_oversubscription_is_ranks_times_threads_over_cores():
    two = Cluster(cores_per_node=2)
    cases = {(1, 1): 1.0, (2, 1): 1.0, (3, 1): 1.5, (4, 1): 2.0, (2, 2): 2.0, (1, 2): 1.0, (8, 1): 4.0}
    for (ranks, threads), factor in cases.items():
        assert compute.oversubscription(Layout(1, ranks, threads), two) == factor
    # a 2-core node running 4 ranks: compute takes twice as long as with 2 ranks on 4 cores
    job = ALS
    bare = Calibration(collective_overhead=0.0)
    over = compute.step_seconds(job, Layout(1, 4), two, bare)
    room = compute.step_seconds(job, Layout(1, 4), Cluster(cores_per_node=4), bare)
    # with a core per rank each collective call adds the measured overhead beyond the collectives' model
    paid = compute.step_seconds(job, Layout(1, 4), Cluster(cores_per_node=4), replace(bare, collective_overhead=1e-3))
    assert paid["comm"] == pytest.approx(room["comm"] + 1e-3 * room["collectives"])
    assert over["compute"] == pytest.approx(2.0 * room["compute"])
    assert over["comm"] > room["comm"]
    # each collective costs a measured step of its phase: what it adds beyond time-sharing is waiting
    light = compute.mf_step(job, Layout(1, 4))[4]
    assert 0 < light < over["collectives"]
    heavy = over["collectives"] - light
    step = compute.oversubscribed_step(room["compute"] / heavy, 2.0)
    assert over["comm"] == pytest.approx(2.0 * room["comm"] + heavy * step
                                         + light * compute.oversubscribed_step(0.0, 2.0) - over["compute"])
    # the oversubscribed steps were measured with the calls' whole cost: no overhead on top
    assert compute.step_seconds(job, Layout(1, 4), two, replace(bare, collective_overhead=1e-3)) == over


def test_oversubscribed_step_interpolates_the_measured_table():
    table = ((1.5, ((1e-4, 3e-4), (1e-3, 2e-3))), (2.0, ((1e-4, 5e-4), (1e-3, 3e-3))))
    c = Calibration(oversub_steps=table)
    step = compute.oversubscribed_step
    assert step(1e-4, 1.5, c) == pytest.approx(3e-4) and step(1e-3, 2.0, c) == pytest.approx(3e-3)
    assert step(5.5e-4, 1.5, c) == pytest.approx(1.15e-3)              # between phases: linear
    assert step(0.0, 1.5, c) == pytest.approx(3e-4 - 1e-4 * 17e-4 / 9e-4)   # the first segment extended
    assert step(1e-2, 2.0, c) == pytest.approx(3e-2)                   # beyond: proportional to the phase
    assert step(1e-3, 1.75, c) == pytest.approx(2.5e-3)                # between ratios: linear
    assert step(1e-3, 1.25, c) == pytest.approx((1e-3 + 2e-3) / 2)     # from the phase itself at ratio 1
    assert step(1e-3, 4.0, c) == pytest.approx(6e-3)                   # beyond: proportional to the ratio
    assert step(1e-3, 1.0, c) == 1e-3 and step(1e-3, 3.0, Calibration(oversub_steps=())) == pytest.approx(3e-3)
    # never faster than the phase
    assert all(step(p, r, c) >= p for p in (1e-6, 1e-4, 1e-3, 1e-1) for r in (1.1, 1.5, 2.0, 3.0))


def test_a_familys_probed_scale_and_excess_per_call_enter_its_steps():
    c = Calibration(job_excess=(("als", ((1.0, 1e-4), (2.0, 2e-3))), ("lbfgs-model", ((1.5, 3e-4),))),
                    job_scale=(("als", 1.5), ("lbfgs-model", 0.5)))
    excess = compute.job_excess
    assert excess("als", 1.0, c) == 1e-4 and excess("als", 1.5, c) == pytest.approx(1.05e-3)   # linear
    assert excess("als", 4.0, c) == pytest.approx(4e-3)             # beyond: proportional to the ratio
    assert excess("lbfgs-model", 1.0, c) == 3e-4                   # below the lowest: the lowest's
    assert excess("lbfgs-hybrid", 2.0, c) == pytest.approx(4e-4)    # a hybrid: the model-parallel one's
    assert excess("dsgd", 2.0, c) == 0.0 and excess(None, 2.0, c) == 0.0
    assert compute.job_scale("lbfgs-model", c) == 0.5 and compute.job_scale("dsgd", c) == 1.0
    assert compute.job_scale(None, c) == 1.0
    families = {(j.algorithm, layout.parallel): compute.family(j, layout) for j in JOBS
                for layout in (Layout(1, 1), Layout(1, 4, parallel="model"), Layout(1, 4, parallel="hybrid"))}
    assert families[("sync", "data")] == "sync-data" and families[("lbfgs", "model")] == "lbfgs-model"
    assert families[("lbfgs", "hybrid")] == "lbfgs-hybrid" and families[("als", "model")] == "als"
    assert families[("local", "data")] is None
    # the scale follows the rows (the probe that computes alike), whatever the layout
    assert compute.scale_family(WIDE) == "lbfgs-model" and compute.scale_family(DENSE) == "sync-data"
    assert compute.scale_family(replace(DENSE, algorithm="lbfgs")) == "lbfgs-data"
    assert compute.scale_family(ALS) == "als" and compute.scale_family(replace(DENSE, algorithm="local")) is None
    # the step: compute times the scale, each collective call plus the excess (an oversubscribed one too)
    for layout, cluster in ((Layout(1, 4), Cluster(cores_per_node=4)), (Layout(1, 4), Cluster(cores_per_node=2))):
        plain = compute.step_seconds(ALS, layout, cluster, Calibration())
        probed = compute.step_seconds(ALS, layout, cluster, replace(Calibration(), job_excess=c.job_excess,
                                                                      job_scale=c.job_scale))
        over = compute.oversubscription(layout, cluster)
        calls = plain["collectives"]
        if over == 1.0:
            assert probed["compute"] == pytest.approx(1.5 * plain["compute"])
            assert probed["comm"] == pytest.approx(plain["comm"] + calls * 1e-4)
        else:   # probed with more ranks than cores: time-sharing and the table's waits, then its own excess
            tabled = compute.step_seconds(ALS, layout, cluster, Calibration(job_scale=c.job_scale))
            assert tabled["comm"] > compute.step_seconds(ALS, layout, cluster, Calibration(
                job_scale=c.job_scale, oversub_steps=()))["comm"]
            assert probed["comm"] == pytest.approx(tabled["comm"] + calls * 2e-3)
            assert probed["compute"] == pytest.approx(1.5 * over * plain["compute"] / over)
            # probed only with a core per rank: the table's waits, and that excess (beyond: by the ratio)
            once = Calibration(job_excess=(("als", ((1.0, 1e-4),)),))
            assert compute.step_seconds(ALS, layout, cluster, once)["comm"] == pytest.approx(
                plain["comm"] + calls * 1e-4 * over)
    # never below nothing: a negative excess (the model over-prices the family) stops at the work
    cheap = Calibration(job_excess=(("als", ((1.0, -1.0),)),))
    assert compute.step_seconds(ALS, Layout(1, 4), Cluster(cores_per_node=4), cheap)["comm"] == 0.0


def test_lbfgs_passes_over_the_parameters_follow_the_filling_history():
    from mpiml.train.lbfgs_math import MEMORY

    share = compute.lbfgs_history_share
    full = 4 * MEMORY + 12
    assert share(1) == pytest.approx(12 / full) and share(10**6) == pytest.approx(1.0, abs=1e-4)
    n = 20   # iterations 1..20 hold 0, 1, ..., MEMORY, MEMORY, ... pairs
    assert share(n) == pytest.approx((4 * sum(min(i, MEMORY) for i in range(n)) / n + 12) / full)
    one = replace(WIDE, max_iter=1)
    a, b = (compute.sgd_step(job, Layout(1, 1), Calibration(lbfgs_param=1e-7))[0] for job in (one, WIDE))
    a0, b0 = (compute.sgd_step(job, Layout(1, 1), Calibration(lbfgs_param=0.0))[0] for job in (one, WIDE))
    assert (b - b0) / (a - a0) == pytest.approx(share(WIDE.max_iter) / share(1))
    assert b - b0 == pytest.approx(1e-7 * (WIDE.features + 1) * share(WIDE.max_iter))


@pytest.mark.parametrize("job", JOBS, ids=lambda j: f"{j.kind}-{j.algorithm}")
def test_time_and_memory_grow_with_the_problem(job):
    layout = Layout(2, 4)
    base = predict(job, layout, CLUSTER)
    # the sizes that must cost more time (others may cost the same: dsgd's time hardly depends on the users)
    if job.kind == "sgd":
        sizes = {"rows": True, "features": True, "nnz": not job.dense}   # dense: nnz is rows x features
    else:
        sizes = {"ratings": True, "users": job.algorithm != "dsgd", "items": True, "factors": True}
    for name, slower in sizes.items():
        bigger = replace(job, **{name: getattr(job, name) * 4})
        if job.dense:
            bigger = replace(bigger, nnz=bigger.rows * bigger.features)
        grown = predict(bigger, layout, CLUSTER)
        assert grown.seconds_per_step > base.seconds_per_step if slower \
            else grown.seconds_per_step >= base.seconds_per_step, name
        assert grown.memory_bytes_per_rank >= base.memory_bytes_per_rank, name
    assert base.seconds_total == pytest.approx(base.seconds_per_step * compute.steps(job))
    assert base.core_hours == pytest.approx(base.seconds_total * layout.ranks / 3600)
    assert 0 <= base.comm_seconds_per_step < base.seconds_per_step


def test_more_ranks_less_memory_and_compute_per_rank():
    for job in JOBS:
        one, many = (compute.step_seconds(job, Layout(1, p), CLUSTER) for p in (1, 16))
        assert many["compute"] < one["compute"], job
        assert one["comm"] == 0.0
        assert many["comm"] > 0.0 or job.algorithm == "oneshot"   # one average at the end, none per epoch
        small, big = (memory.memory_per_rank(job, Layout(1, p)) for p in (16, 1))
        assert small["data"] < big["data"]


def test_choices_change_sensibly_with_the_problem():
    # wide sparse: splitting the features beats replicating a 2M-parameter model on every rank
    data = predict(WIDE, Layout(8, 8), CLUSTER)
    model = predict(WIDE, Layout(8, 8, parallel="model"), CLUSTER)
    assert model.seconds_per_step < data.seconds_per_step
    assert model.memory_bytes_per_rank < data.memory_bytes_per_rank
    # small dense: an allreduce per update costs more than the little compute it splits
    small = replace(DENSE, rows=5000, features=10, nnz=5000 * 10)
    few = predict(small, Layout(1, 2), CLUSTER)
    many = predict(small, Layout(64, 32), CLUSTER)
    assert few.seconds_per_step < many.seconds_per_step and few.core_hours < many.core_hours


def write_svmlight(path, rng, rows, cols, per_row):
    with open(path, "w") as handle:
        for i in range(rows):
            index = np.sort(rng.choice(cols, per_row, replace=False)) + 1
            handle.write(("1" if i % 2 else "-1") + " " + " ".join(f"{c}:{rng.random():.3f}" for c in index) + "\n")


def shard_nbytes(shard) -> int:
    X = shard.X
    matrix = X.data.nbytes + X.indices.nbytes + X.indptr.nbytes if hasattr(X, "indptr") else X.nbytes
    return matrix + shard.y.nbytes + shard.row_file.nbytes + shard.row_line.nbytes


def test_shard_memory_is_what_the_readers_build(tmp_path):
    from mpi4py import MPI

    from mpiml.data import load_shard

    rng = np.random.default_rng(0)
    write_svmlight(tmp_path / "a.svm", rng, 400, 3000, 9)
    np.savetxt(tmp_path / "b.csv", rng.random((300, 7)).round(3), delimiter=",")
    sparse = load_shard(str(tmp_path / "a.svm"), MPI.COMM_SELF)
    dense = load_shard(str(tmp_path / "b.csv"), MPI.COMM_SELF)
    as_job = {"sparse": Job("sgd", "lbfgs", rows=400, features=sparse.X.shape[1], nnz=sparse.X.nnz),
              "dense": Job("sgd", "lbfgs", rows=300, features=6, nnz=300 * 6, dense=True)}
    for name, shard in (("sparse", sparse), ("dense", dense)):
        predicted = memory.sgd_shard_bytes(as_job[name], Layout(1, 1))
        assert predicted == shard_nbytes(shard), name
    # standardizing keeps a scaled copy (a dense one with a temporary as large)
    standardized = replace(as_job["dense"], standardize=True)
    assert memory.sgd_shard_bytes(standardized, Layout(1, 1)) == shard_nbytes(dense) + 2 * dense.X.nbytes
    # the model's peak adds the interpreter baseline and the strategy's vectors to the shard
    parts = memory.memory_per_rank(as_job["sparse"], Layout(1, 1), Calibration(baseline_bytes=100 << 20))
    assert parts["total"] == sum(v for k, v in parts.items() if k != "total")
    assert parts["baseline"] == 100 << 20 and parts["data"] == shard_nbytes(sparse)


def test_calibration_round_trip_through_a_tuning_file(tmp_path, monkeypatch):
    path = tmp_path / "tuning.json"
    document = {"format": "mpiml-tuning", "version": 1, "params": {"alpha": 3e-6, "beta": 2e-10}, "rules": {}}
    path.write_text(json.dumps(document))
    measured = replace(Calibration(), sparse_nnz=1.25e-8, als_row=7e-7, baseline_bytes=123 << 20,
                       oversub_steps=((1.5, ((1e-4, 4e-4), (1e-3, 2.5e-3))),),
                       job_excess=(("als", ((1.0, 1e-4), (2.0, 2e-3))), ("sync-data", ((1.0, -1e-5),))),
                       job_scale=(("als", 1.25), ("lbfgs-model", 0.8)))
    calibration_module.store(path, measured)
    kept = json.loads(path.read_text())
    assert kept["params"] == document["params"] and kept["rules"] == {}   # other sections untouched
    loaded = load_calibration(path)
    assert loaded.constants() == measured.constants()
    assert loaded.params.alpha == 3e-6 and loaded.params.beta == 2e-10 and loaded.source == str(path)
    # what the collectives read of the same file is not disturbed by the new section
    from mpiml.collectives.registry import ALGORITHMS
    from mpiml.collectives.tuning import load_tuning

    assert load_tuning(path, ALGORITHMS).params.alpha == 3e-6
    # no file: the defaults; $MPIML_TUNING when no path is given; no compute section: default constants
    monkeypatch.delenv("MPIML_TUNING", raising=False)
    assert load_calibration() == calibration_module.DEFAULT
    monkeypatch.setenv("MPIML_TUNING", str(path))
    assert load_calibration().sparse_nnz == 1.25e-8
    path.write_text(json.dumps(document))
    assert load_calibration(path).constants() == Calibration().constants()
    assert loaded.oversub_steps == measured.oversub_steps
    assert loaded.job_excess == measured.job_excess and loaded.job_scale == measured.job_scale
    assert Calibration().job_excess == () and Calibration().job_scale == ()   # an older file: the model alone
    # unknown constants (a newer file) are ignored, and so is an older file's oversub_sync; a bad file names itself
    path.write_text(json.dumps({**document, "compute": {"sparse_nnz": 2e-9, "from_the_future": 1.0,
                                                        "oversub_sync": 3e-3}}))
    assert load_calibration(path).sparse_nnz == 2e-9
    for text in ("{not json", json.dumps({**document, "compute": {"sparse_nnz": "fast"}}),
                 json.dumps({**document, "compute": {"oversub_steps": {"0.5": [[1e-4, 1e-3]]}}}),
                 json.dumps({**document, "compute": {"job_excess": {"als": {"0.5": 1e-3}}}}),
                 json.dumps({**document, "compute": {"job_scale": {"als": -1.0}}})):
        path.write_text(text)
        with pytest.raises(ArgumentError, match="tuning"):
            load_calibration(path)
    with pytest.raises(ArgumentError, match="cannot read"):
        load_calibration(tmp_path / "missing.json")


def test_predict_uses_the_tuning_files_parameters(tmp_path):
    path = tmp_path / "tuning.json"
    calibration_module.store(path, replace(Calibration(), update_overhead=1e-3))
    slow = predict(DENSE, Layout(1, 1), Cluster(tuning=str(path)))
    fast = predict(DENSE, Layout(1, 1), Cluster())
    updates = math.ceil(DENSE.rows / DENSE.batch_size)
    assert slow.seconds_per_step - fast.seconds_per_step == pytest.approx(
        updates * (1e-3 - Calibration().update_overhead))


def test_probe_fit_recovers_known_constants():
    from mpiml.plan.probe import _fit

    rng = np.random.default_rng(1)
    truth = np.array([2e-5, 3e-9, 7e-8])
    terms = rng.uniform(0.0, 1.0, (6, 3)) * np.array([10.0, 1e6, 1e4])
    found = _fit(terms, terms @ truth, np.ones(3))
    assert found == pytest.approx(truth, rel=1e-6)
    # a constant no probe exercises keeps its fallback
    terms[:, 2] = 0.0
    assert _fit(terms, terms @ truth, np.array([1.0, 1.0, 5.0]))[2] == 5.0


def test_a_64_node_table_is_cheap():
    # the candidate table mpiml plan prints: every nodes x ranks-per-node x layout of a 64-node cluster
    layouts = [Layout(n, r, parallel=kind) for n in range(1, 65) for r in (1, 2, 4, 8, 16, 32)
               for kind in ("data", "model") if n * r > 1 or kind == "data"]
    for job in (WIDE, ALS):
        table = [predict(job, layout, CLUSTER) for layout in layouts]
        assert all(isinstance(p, Prediction) and p.seconds_per_step > 0 for p in table)
        assert len(table) == len(layouts)


def test_peak_rss_is_reported():
    from mpiml.runtime.rss import peak_rss_bytes

    before = peak_rss_bytes()
    block = np.ones(16 << 20, dtype=np.uint8)   # 16 MiB touched
    assert peak_rss_bytes() >= before > 10 << 20 and block.sum() == 16 << 20


def test_tune_measures_the_compute_section_that_plan_reads(tmp_path):
    import sys

    from mpirun import run_mpi

    path = tmp_path / "tuning.json"
    result = run_mpi(1, [sys.executable, "-m", "mpiml", "tune", "--collective", "bcast", "--sizes", "8",
                         "--min-time", "0.001", "--max-iters", "3", "--repeats", "1", "--out", str(path)], timeout=240)
    assert not result.hung and result.returncode == 0, result.describe()
    calibration = load_calibration(path)
    assert calibration.source == str(path)
    # the probe measured this machine: plausible magnitudes, not the defaults copied
    assert calibration.constants() != Calibration().constants()
    assert 1e-11 < calibration.sparse_nnz < 1e-6 and 1e-7 < calibration.update_overhead < 1e-2
    assert 20 << 20 < calibration.baseline_bytes < 2 << 30
    assert predict(ALS, Layout(1, 1), Cluster(tuning=str(path))).seconds_per_step > 0
    # each job family's real step on one rank: its scale; no collective calls to price on one rank
    from mpiml.plan.probe import JOB_PROBES

    assert {name for name, _ in calibration.job_scale} == {name for name, _ in JOB_PROBES}
    assert all(0.05 < scale < 20 for _, scale in calibration.job_scale) and calibration.job_excess == ()
    # and the sparse allreduce's local constants (on one rank: no call's fixed cost to measure)
    import json

    sparse = json.loads(path.read_text())["params"]["sparse"]
    assert {"SPARSE_HELD", "SPARSE_MERGED", "SPARSE_SCATTERED", "SPARSE_ZERO"} <= set(sparse)
    assert all(1e-13 < value < 1e-5 for value in sparse.values())


def test_no_oversubscription_steps_with_a_core_per_rank():
    from mpi4py import MPI

    from mpiml.plan.probe import oversubscription_steps

    assert oversubscription_steps(MPI.COMM_SELF) is None
