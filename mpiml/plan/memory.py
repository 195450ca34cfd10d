"""Peak resident bytes of one rank of a job on a layout (pure functions).

The largest rank holds: the interpreter with mpiml, mpi4py, numpy, scipy and the
compiled kernels loaded (``baseline_bytes``, measured by the probe), its shard of the
data, the model or factors and the working buffers of its algorithm. Byte counts of the
arrays follow what the readers build (:mod:`mpiml.data`): CSR as float64 values, int32
column indices and row pointers; dense as float64 rows; per row a float64 label and the
int64 file index and line it came from.
"""

from __future__ import annotations

import math

from mpiml.plan.calibration import DEFAULT, Calibration
from mpiml.plan.spec import Job, Layout

WORD = 8
INDEX = 4      # CSR column indices (int32, as scipy makes them below 2**31 columns)
ROW_BYTES = 3 * WORD   # per row: the label and where it came from (file index, line), as the readers keep them
# Standardizing keeps a scaled copy of the training matrix; a dense one also passes through
# a temporary of the same size (measured: 2 copies dense, 1 sparse).
STANDARDIZE_COPIES = {True: 2.0, False: 1.0}
# Model and hybrid layouts deal the rows each rank read out to the column blocks
# (:func:`mpiml.data.columns.to_grid`): measured 2.5 copies of the read shard at the peak, and
# about 4 MiB for the row and column communicators.
REDISTRIBUTE_COPIES = 2.5
GRID_BYTES = 4 << 20
# mf bytes per rating at the peak (measured on mpiml mf, synthetic ratings): the input shard
# (raw ids, values, keys: 32 B), its index form, the user and item CSR rows and their sort
# orders, per rating of this rank; the redistribution to the owners (pickled copies) when
# there are several ranks; the gathered column indices of every rating (kept by the model).
MF_LOCAL_BYTES = 100
MF_EXCHANGE_BYTES = 60
MF_GLOBAL_BYTES = 16


def csr_bytes(rows: float, nnz: float, value_bytes: int = WORD) -> int:
    """Bytes of a scipy CSR matrix of ``rows`` rows and ``nnz`` stored values (int32 indices below 2**31
    values, else int64)."""
    index = INDEX if nnz < 2**31 else WORD
    return int(nnz * (value_bytes + index) + (rows + 1) * index)


def dense_bytes(rows: float, cols: float, value_bytes: int = WORD) -> int:
    """Bytes of a dense ``rows x cols`` array."""
    return int(rows * cols * value_bytes)


def sgd_shard_bytes(job: Job, layout: Layout) -> int:
    """The largest rank's training matrix and labels (rows split over replicas, columns over blocks)."""
    replicas, blocks = layout.replicas_blocks
    blocks = min(blocks, max(int(job.features), 1))
    rows = math.ceil(max(int(job.rows), 1) / replicas)
    cols = math.ceil(max(int(job.features), 1) / blocks)
    if job.dense:
        matrix = dense_bytes(rows, cols, job.dtype_bytes)
    else:
        nnz = job.nnz * (rows / max(int(job.rows), 1)) / blocks
        matrix = csr_bytes(rows, nnz, job.dtype_bytes)
    copies = 1.0 + (STANDARDIZE_COPIES[bool(job.dense)] if job.standardized else 0.0)
    extra = 0
    if blocks > 1:
        # the rows as read are dealt out to the column blocks: the read shard, the pieces in
        # flight and the grid's communicators live beside the block at the peak
        as_read = job.stored * WORD / layout.ranks if job.dense else \
            csr_bytes(job.rows / layout.ranks, job.nnz / layout.ranks, job.dtype_bytes)
        extra = int(REDISTRIBUTE_COPIES * copies * as_read) + GRID_BYTES
    return int(copies * matrix) + rows * ROW_BYTES + extra


def sgd_model_bytes(job: Job, layout: Layout) -> int:
    """The model block and the vectors the strategy keeps beside it, plus per-row work arrays."""
    from mpiml.parallel.cost import LBFGS_VECTORS

    replicas, blocks = layout.replicas_blocks
    block = (math.ceil(max(int(job.features), 1) / max(blocks, 1)) + 1) * job.outputs
    rows = math.ceil(max(int(job.rows), 1) / replicas)
    if job.algorithm == "lbfgs":
        # history and vectors of the block, and full-batch margins/residuals per row
        return int(block * LBFGS_VECTORS * WORD + 6 * rows * job.outputs * WORD)
    batch = int(job.batch_size) * (replicas if job.algorithm != "sync" else 1)
    return int(8 * block * WORD + 6 * min(batch, rows) * job.outputs * WORD)


def mf_bytes(job: Job, layout: Layout) -> dict:
    """The largest rank's mf arrays: ``ratings`` (its rows both ways) and ``factors`` (both sides in full)."""
    p = layout.ranks
    n = float(job.ratings) / p
    per_rating = MF_LOCAL_BYTES + (MF_EXCHANGE_BYTES if p > 1 else 0)
    factors = (job.users + job.items) * job.width * job.factor_itemsize
    if partitioned_factors(job, p, factors):
        # its blocks, a solved block, and at most every row its ratings reference (mpiml.mf.partitioned)
        rows = 2 * (job.users + job.items) / p + min(job.users + job.items, n)
        return {"ratings": int(n * per_rating), "factors": int(rows * job.width * job.factor_itemsize),
                "work": int(n * MF_GLOBAL_BYTES)}
    return {"ratings": int(n * per_rating), "factors": int(3 * factors), "work": int(job.ratings * MF_GLOBAL_BYTES)}


def partitioned_factors(job: Job, p: int, factor_bytes: float) -> bool:
    """Whether the mf job runs on partitioned factors (``auto`` judged by size alone: the routed rows
    are known only once the ratings are read)."""
    from mpiml.mf.partitioned import AUTO_PARTITIONS, choose

    setting = getattr(job, "factor_layout", "replicated")
    if setting == "auto" and not AUTO_PARTITIONS:
        return False
    return p > 1 and choose(setting, p, factor_bytes) == "partitioned"


def memory_per_rank(job: Job, layout: Layout, calibration: Calibration = DEFAULT) -> dict:
    """Peak bytes of the largest rank, by part: ``baseline``, ``data``, ``model``, ``work`` and ``total``."""
    if job.kind == "sgd":
        parts = {"baseline": int(calibration.baseline_bytes), "data": sgd_shard_bytes(job, layout),
                 "model": sgd_model_bytes(job, layout), "work": 0}
    else:
        m = mf_bytes(job, layout)
        parts = {"baseline": int(calibration.baseline_bytes), "data": m["ratings"], "model": m["factors"],
                 "work": m["work"]}
    parts["total"] = int(sum(parts.values()))
    return parts
