"""examples/parallelism.py: the three layouts reach the serial numpy SGD's loss, and send the bytes
the layout table says (ring allreduce: each rank sends 2 (q-1)/q of a q-rank sum's message)."""

from __future__ import annotations

import re

import pytest
from examples_helpers import run_example, serial_logistic_sgd_objective

from mpiml.data import synthetic

# As in the example.
ROWS, FEATURES, NONZEROS = 3000, 5000, 20
EPOCHS, BATCH, LR, ALPHA, SEED = 3, 100, 5.0, 1e-4, 0
LINE = re.compile(r"^(data|model|hybrid) +grid (\d+)x(\d+) +sent/update +(\d+) B .* final loss (\S+)$", re.M)


def serial_sgd_objective():
    """Minibatch SGD on the whole data set in one process, over the global batches of every layout."""
    kind, options = synthetic.parse_spec(f"classification,n={ROWS},d={FEATURES},density={NONZEROS / FEATURES},"
                                         f"seed=2")
    X, y = synthetic.generate(kind, options, 0, ROWS)
    return serial_logistic_sgd_objective(X, y, EPOCHS, BATCH, LR, ALPHA, SEED)


def ring_bytes(words, q):
    """Bytes one rank sends, on average, in a ring allreduce of ``words`` float64 over ``q`` ranks."""
    return 2 * (q - 1) / q * 8 * words if q > 1 else 0.0


@pytest.fixture(scope="module")
def expected_loss():
    return serial_sgd_objective()


@pytest.mark.parametrize("ranks", [2, 3, 4])
def test_layouts_agree_with_serial_sgd_and_send_what_the_layout_table_says(ranks, expected_loss):
    out = run_example("parallelism.py", ranks).stdout
    found = {kind: (int(r), int(c), float(sent), float(loss)) for kind, r, c, sent, loss in LINE.findall(out)}
    hybrid = ranks == 4
    assert sorted(found) == sorted(["data", "model"] + (["hybrid"] if hybrid else [])), out
    if not hybrid:
        assert re.search(rf"^hybrid +skipped: no hybrid layout for {ranks} ranks", out, re.M), out
    for kind, (rows, cols, sent, loss) in found.items():
        assert loss == pytest.approx(expected_loss, rel=1e-9), kind
        # payloads per update: the column group sums the weight block (+ intercept), the row
        # group the partial margins of its rows of the batch; a few words more ride along
        # (the loss, the stop vote, the compute-time slots): within 1 %
        block = ring_bytes(FEATURES / cols + 1, rows)
        margins = ring_bytes(BATCH / rows, cols)
        assert sent == pytest.approx(block + margins, rel=0.01), (kind, out)
        assert rows * cols == ranks
    assert (found["data"][:2], found["model"][:2]) == ((ranks, 1), (1, ranks))
    assert found["model"][2] < found["data"][2] / 20  # why model parallelism, on wide sparse data
    assert expected_loss < 0.4                        # and the model learned something
