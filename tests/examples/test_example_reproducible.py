"""examples/reproducible.py: the reproducible model and sum are the same bits at every rank count,
and agree with a serial numpy SGD and with math.fsum."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from examples_helpers import run_example, serial_logistic_sgd_objective

from mpiml.data import synthetic

# As in the example.
ROWS, FEATURES, EPOCHS, BATCH, LR, ALPHA, SEED = 4000, 30, 3, 64, 0.5, 1e-4, 0
MODEL = re.compile(r"^(ordinary|reproducible) +loss (\S+) +weights sha256 (\w+)$", re.M)
SUM = re.compile(r"^sum +usual (\S+) +reproducible (\S+)$", re.M)


def serial_sgd_objective():
    """Minibatch SGD in one process over the same global batches, then the training objective."""
    kind, options = synthetic.parse_spec(f"classification,n={ROWS},d={FEATURES},seed=5")
    X, y = synthetic.generate(kind, options, 0, ROWS)
    return serial_logistic_sgd_objective(X, y, EPOCHS, BATCH, LR, ALPHA, SEED)


def the_values():
    rng = np.random.default_rng(7)
    return rng.standard_normal(3000) * 10.0 ** rng.uniform(-6, 6, size=3000)


def test_reproducible_lines_are_the_same_bits_at_1_2_and_3_ranks():
    runs = {}
    for ranks in (1, 2, 3):
        out = run_example("reproducible.py", ranks).stdout
        models = {mode: (float(loss), digest) for mode, loss, digest in MODEL.findall(out)}
        (usual, exact), = SUM.findall(out)
        runs[ranks] = models, float(usual), float(exact)
    expected_loss = serial_sgd_objective()
    values = the_values()
    fsum = math.fsum(values)
    bound = values.size * 2.0 ** -64 * np.abs(values).max() + math.ulp(fsum)
    for ranks, (models, usual, exact) in runs.items():
        assert set(models) == {"ordinary", "reproducible"}
        for mode, (loss, _) in models.items():
            assert loss == pytest.approx(expected_loss, rel=1e-9), (ranks, mode)
        assert models["reproducible"][1] == runs[1][0]["reproducible"][1], ranks  # the same bits
        assert exact == runs[1][2] and abs(exact - fsum) <= bound, ranks
        assert usual == pytest.approx(fsum, rel=1e-12)
    assert expected_loss < 0.35  # and the model learned something
