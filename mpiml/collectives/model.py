"""Alpha-beta-gamma cost model of every collective algorithm in mpiml (pure functions).

Each algorithm registers its own cost formula with it (:mod:`mpiml.collectives.registry`);
:func:`predict` prices any registered algorithm through that formula, so a new algorithm
is priced, compared and picked by ``auto`` as soon as it is registered. The textbook
formulas the built-in algorithms use are below.

The model of Hockney, as used by Thakur, Rabenseifner & Gropp (2005) and Chan et al.
(2007): sending one message of ``m`` bytes costs ``alpha + m * beta``; reducing ``m``
bytes costs ``m * gamma``. On top of it, two costs that decide the small-message end for
Python-driven algorithms:

``step_overhead``
    the Python time of one communication step of a hand-written algorithm (an mpi4py
    call, slicing, a ufunc call): 2-4 us, much larger than the library's own ``alpha``.
``call_overhead``
    the fixed Python time of one ``mpiml`` call (argument checks, dispatch), paid by every
    algorithm, ``native`` included.

Notation below: ``n`` bytes, ``p`` ranks, ``q`` the largest power of two <= p,
``L = log2 q``, ``c(p) = ceil(log2 p)``, ``a = alpha + step_overhead``.

Assumptions (where the model is known to be wrong):

* Flat algorithms see one uniform link: every pair of ranks has the same ``alpha`` and
  ``beta`` (between nodes when the job spans nodes); a ring across 1,000 nodes is priced
  at the inter-node rate for all of its steps, which is right for the ring but
  pessimistic for tree algorithms that could keep early steps inside a node. The
  node-aware algorithms (``hierarchical``, ``hierarchical_slices``, ``shared_memory``)
  are priced on a node layout by :mod:`mpiml.collectives.model_nodes`, with
  ``intra_alpha`` and ``intra_beta`` inside a node and ``alpha`` and ``beta`` between.
* No contention: a rank sends and receives at once at full rate, and concurrent pairs
  do not slow each other. On a node whose ranks share memory bandwidth (all ranks of
  a 2-core machine), large-message rates degrade when more ranks than cores run.
* ``native`` is priced as one Python step (the mpi4py call) plus the better of the
  textbook algorithms the MPI library picks from (recursive doubling or Rabenseifner
  for allreduce, etc.) at ``alpha`` per step, plus a copy of the input for
  out-of-place calls, a page-fault cost per byte from ``fault_bytes`` up (MPICH and
  Open MPI fault in a fresh temporary buffer per call), plus a measured extra cost per byte per collective
  (``native_extra``: internal copies the textbook formula lacks). The library's real
  thresholds differ; the model does not follow them exactly.
* The pipelined broadcast with segment ``s`` bytes takes ``p - 2 + ceil(n / s)`` steps
  of one segment each.
* Noise, OS jitter, synchronisation skew and cache effects (a message that fits in
  cache moves faster than ``beta``) are not modelled.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass, field, replace

from mpiml.collectives import registry

FAULT_BYTES = 32 << 20  # glibc's largest dynamic mmap threshold: temporaries above it are fresh pages


@dataclass(frozen=True)
class ModelParams:
    """Machine parameters, in seconds and seconds per byte.

    The defaults were fitted by ``mpiml tune`` on a 2-core VM with the pip MPICH wheel
    (shared memory, p = 2, rounded); ``mpiml tune`` measures them for a real machine.
    """

    alpha: float = 1.1e-6            # library latency per message
    beta: float = 1.2e-10            # per byte sent (about 8 GB/s through shared memory)
    gamma: float = 0.6e-10           # per byte reduced, numpy ufunc with out=
    copy: float = 0.3e-10            # per byte copied locally (np.copyto)
    step_overhead: float = 1.5e-6    # Python time of one step of a hand-written algorithm
    call_overhead: float = 2.5e-6    # Python time of one mpiml call
    native_fault: float = 3.0e-10    # per byte, native allreduce/reduce temporaries from fault_bytes up
    fault_bytes: int = FAULT_BYTES
    segment_bytes: int = 1 << 20     # pipeline broadcast segment
    gamma_by_dtype: dict = field(default_factory=lambda: {"float16": 1.6e-9})  # dtype name -> gamma
    # Per collective, what the MPI library spends per byte beyond the textbook algorithm
    # (internal copies, temporaries), fitted by ``mpiml tune`` from messages of 1 MiB and up.
    native_extra: dict = field(default_factory=lambda: {"allreduce": 1.2e-10, "reduce": 1.2e-9,
                                                        "allgather": 3.4e-10})
    # Per collective, the same extra per message size: ``[[bytes, seconds per byte], ...]`` fitted by ``mpiml tune``
    # from every measured size (the library's cost per byte is not flat: caches, protocol switches); where a
    # collective has it, it replaces ``native_extra`` (see :func:`native_extra_at`).
    native_extra_by_size: dict = field(default_factory=dict)
    # Inside a node, where the job spans several (``mpiml tune`` measures both links); None: ``alpha``/``beta``.
    intra_alpha: float | None = None
    intra_beta: float | None = None
    # The sparse allreduce's constants measured on this machine (``mpiml.collectives.sparse.calibrate()``),
    # by name (``SPARSE_FIXED``, ...); the ones absent keep this module's defaults.
    sparse: dict = field(default_factory=dict)
    # ``copy`` and ``gamma`` by message size: ``{"copy" or a dtype name: [[bytes, seconds per byte], ...]}``
    # measured by ``mpiml tune`` (:func:`mpiml.perf.calibrate.rates_by_size`): a vector that fits the caches
    # is copied and added several times faster than one streamed from memory (``copy``/``gamma`` are
    # memory rates). Where a rate has points, :func:`at_size` replaces it by its value at the message size.
    # ``"beta"``/``"intra_beta"`` points are the links' per-byte times by message size (one-way ping-pong).
    rates_by_size: dict = field(default_factory=dict)

    def gamma_for(self, dtype) -> float:
        return float(self.gamma_by_dtype.get(str(dtype), self.gamma)) if dtype is not None else self.gamma

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "ModelParams":
        """Parameters from a dict (unknown keys refused, missing ones default)."""
        known = set(cls.__dataclass_fields__)
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown model parameters {sorted(unknown)}")
        return replace(cls(), **values)


DEFAULT_PARAMS = ModelParams()


def by_size(points, nbytes: float) -> float:
    """``[[bytes, value], ...]`` (sizes ascending) at ``nbytes``: linear in log2(bytes) between two
    points, the end values beyond them."""
    if nbytes <= points[0][0]:
        return float(points[0][1])
    for (lo, a), (hi, b) in zip(points, points[1:]):
        if nbytes <= hi:
            w = math.log2(nbytes / lo) / math.log2(hi / lo)
            return float(a + w * (b - a))
    return float(points[-1][1])


# The library may beat the textbook formula priced on the ping-pong link (a shared-memory broadcast that
# copies once, in cache: measured at p=2, 1 MiB, 0.05 ms where the formula on that pass's ping-pong said
# 0.53 ms): its fitted extra is then negative, and at the measured sizes the price is what was measured.
# Between and beyond them a price never falls below this share of the formula's, so it stays positive.
NATIVE_FLOOR = 0.05


def with_native_extra(seconds: float, params: ModelParams, collective: str, nbytes: float) -> float:
    """``seconds`` (the textbook price of the library's ``collective`` on ``nbytes``) plus its fitted extra."""
    return max(seconds + nbytes * native_extra_at(params, collective, nbytes), NATIVE_FLOOR * seconds)


def native_extra_at(params: ModelParams, collective: str, nbytes: float) -> float:
    """The library's extra seconds per byte for ``collective`` at ``nbytes``: ``native_extra_by_size``
    interpolated linearly in log2(bytes) (the end values beyond its sizes), else ``native_extra``."""
    points = params.native_extra_by_size.get(collective)
    if not points:
        return float(params.native_extra.get(collective, 0.0))
    return by_size(points, nbytes)


LINK_RATES = ("beta", "intra_beta")   # rates_by_size's per-byte link times (the others: copy, gamma by dtype)


def at_size(params: ModelParams, nbytes: float) -> ModelParams:
    """``params`` with ``copy``, ``gamma``, ``gamma_by_dtype`` and the links' ``beta``/``intra_beta`` at a
    message of ``nbytes`` (from ``rates_by_size`` where it has points; ``params`` itself where it has none)."""
    table = params.rates_by_size
    if not table or nbytes <= 0:
        return params
    changes = {name: by_size(table[name], nbytes) for name in ("copy", *LINK_RATES) if table.get(name)}
    gammas = {name: by_size(points, nbytes) for name, points in table.items()
              if name != "copy" and name not in LINK_RATES and points}
    if gammas:
        changes["gamma_by_dtype"] = {**params.gamma_by_dtype, **gammas}
        if "float32" in gammas:
            changes["gamma"] = gammas["float32"]
    return replace(params, **changes) if changes else params


def allreduce_bytes(nbytes: int, p: int) -> int:
    """Bytes a rank sends in a bandwidth-optimal allreduce of ``nbytes`` over ``p`` ranks: ``2 (p-1)/p`` of them."""
    return int(2 * (p - 1) / p * nbytes) if p > 1 else 0


def log2_floor(p: int) -> int:
    return int(p).bit_length() - 1


def log2_ceil(p: int) -> int:
    return (int(p) - 1).bit_length()


@dataclass(frozen=True)
class Rates:
    """What a registered cost formula ``cost(n, p, rates)`` combines, for one call.

    Attributes
    ----------
    alpha : float
        The library's latency per message (what ``native``'s internal steps pay).
    step : float
        ``alpha + step_overhead``: one step of a hand-written (Python-driven) algorithm.
    beta : float
        Seconds per byte sent.
    gamma : float
        Seconds per byte reduced, for the call's dtype; 0 for collectives that do not reduce.
    copy : float
        Seconds per byte copied locally.
    in_place : bool
        The call reduces in place (``out=x``).
    params : ModelParams
        Everything else (``segment_bytes``, ``native_extra``, ...).
    """

    alpha: float
    step: float
    beta: float
    gamma: float
    copy: float
    in_place: bool
    params: ModelParams


# --- textbook formulas: n bytes, p ranks, a per step, b per byte sent, g per byte reduced ------

def fold(n, p, a, b, g):
    """Non-power-of-two pre/post step of recursive doubling and Rabenseifner."""
    if p == 1 << log2_floor(p):
        return 0.0
    return (a + n * b + n * g) + (a + n * b)


def allreduce_ring(n, p, a, b, g):
    return 2 * (p - 1) * a + 2 * (p - 1) / p * n * b + (p - 1) / p * n * g


def allreduce_doubling(n, p, a, b, g):
    return fold(n, p, a, b, g) + log2_floor(p) * (a + n * b + n * g)


def allreduce_rabenseifner(n, p, a, b, g):
    q = 1 << log2_floor(p)
    return fold(n, p, a, b, g) + 2 * log2_floor(p) * a + 2 * (q - 1) / q * n * b + (q - 1) / q * n * g


def allreduce_tree(n, p, a, b, g):
    steps = log2_ceil(p)
    return steps * (a + n * b + n * g) + steps * (a + n * b)


def allreduce_library(n, p, a, b, g):
    """What an MPI library picks from: recursive doubling or Rabenseifner."""
    return min(allreduce_doubling(n, p, a, b, g), allreduce_rabenseifner(n, p, a, b, g))


def reduce_scatter_ring(n, p, a, b, g):
    """``n``: the whole input vector."""
    return (p - 1) * a + (p - 1) / p * n * (b + g)


def reduce_scatter_library(n, p, a, b, g):
    halving = math.inf
    if p == 1 << log2_floor(p):
        halving = log2_floor(p) * a + (p - 1) / p * n * (b + g)
    return min(halving, reduce_scatter_ring(n, p, a, b, g))


def allgather_ring(n, p, a, b, g):
    """``n``: the whole output vector."""
    return (p - 1) * a + (p - 1) / p * n * b


def allgather_library(n, p, a, b, g):
    doubling = math.inf
    if p == 1 << log2_floor(p):
        doubling = log2_floor(p) * a + (p - 1) / p * n * b
    return min(doubling, allgather_ring(n, p, a, b, g))


def bcast_binomial(n, p, a, b, g):
    return log2_ceil(p) * (a + n * b)


def bcast_scatter_allgather(n, p, a, b, g):
    return log2_ceil(p) * a + (p - 1) / p * n * b + allgather_ring(n, p, a, b, g)


def bcast_library(n, p, a, b, g):
    return min(bcast_binomial(n, p, a, b, g), bcast_scatter_allgather(n, p, a, b, g))


def bcast_pipeline(n, p, a, b, segment_bytes):
    """``p - 2 + ceil(n / s)`` steps of one segment of ``s`` bytes each."""
    segment = min(n, float(segment_bytes)) or 1.0
    return (p - 2 + math.ceil(n / segment)) * (a + segment * b)


def reduce_binomial(n, p, a, b, g):
    return log2_ceil(p) * (a + n * (b + g))


def reduce_library(n, p, a, b, g):
    reduce_scatter_gather = reduce_scatter_library(n, p, a, b, g) + log2_ceil(p) * a + (p - 1) / p * n * b
    return min(reduce_binomial(n, p, a, b, g), reduce_scatter_gather)


REDUCING = ("allreduce", "reduce_scatter", "reduce")


def algorithms(collective: str) -> tuple[str, ...]:
    """The algorithms the model prices for ``collective``: every registered one."""
    return registry.ALGORITHMS[collective]


def predict(algorithm: str, nbytes: int, p: int, params: ModelParams | None = None, *,
            collective: str = "allreduce", dtype=None, in_place: bool = False) -> float:
    """Predicted seconds of one ``mpiml`` call of ``algorithm`` on ``nbytes`` at ``p`` ranks.

    ``nbytes`` is the whole vector (for allgather the whole output), as ``mpiml bench``
    counts it. ``dtype`` picks a measured ``gamma`` where one exists. The algorithm's
    registered cost formula gives the time beyond ``call_overhead``; one rank is a local
    copy for every algorithm.
    """
    params = at_size(params or DEFAULT_PARAMS, nbytes)
    n, p = float(nbytes), int(p)
    if p < 1 or nbytes < 0:
        raise ValueError(f"need p >= 1 and nbytes >= 0, got p={p}, nbytes={nbytes}")
    entry = registry.table(collective).get(algorithm) if collective in registry.COLLECTIVES else None
    if entry is None:
        raise ValueError(f"no model for {collective} algorithm {algorithm!r}")
    if p == 1:
        return params.call_overhead + (0.0 if in_place or collective == "bcast" else n * params.copy)
    gamma = params.gamma_for(dtype) if collective in REDUCING else 0.0
    rates = Rates(params.alpha, params.alpha + params.step_overhead, params.beta, gamma, params.copy,
                  bool(in_place), params)
    return params.call_overhead + entry.cost(n, p, rates)


def lower_bound(collective: str, nbytes: int, p: int, params: ModelParams | None = None, dtype=None) -> float:
    """Seconds no algorithm can beat on this machine (Chan et al. 2007), Python costs excluded.

    allreduce: ``c(p) alpha + 2 (p-1)/p n beta + (p-1)/p n gamma``; reduce_scatter:
    ``c(p) alpha + (p-1)/p n (beta + gamma)``; allgather: ``c(p) alpha + (p-1)/p n beta``;
    bcast: ``c(p) alpha + n beta``; reduce: ``c(p) alpha + n beta + (p-1)/p n gamma``. Nothing (0) for
    one rank or no bytes: an algorithm may then send no message at all, as the pipelined bcast does.
    """
    params = at_size(params or DEFAULT_PARAMS, nbytes)
    if p == 1 or nbytes <= 0:
        return 0.0
    n, a, b = float(nbytes), params.alpha, params.beta
    g = params.gamma_for(dtype)
    share = (p - 1) / p * n
    latency = log2_ceil(p) * a
    return latency + {
        "allreduce": 2 * share * b + share * g,
        "reduce_scatter": share * (b + g),
        "allgather": share * b,
        "bcast": n * b,
        "reduce": n * b + share * g,
    }[collective]


def best(collective: str, nbytes: int, p: int, params: ModelParams | None = None, *,
         candidates=None, dtype=None) -> str:
    """The algorithm the model predicts fastest (ties go to the earlier candidate)."""
    names = candidates or algorithms(collective)
    return fastest({name: predict(name, nbytes, p, params, collective=collective, dtype=dtype) for name in names})


TIE = 1e-9   # predictions this close (relative) are equal: rounding must not flip a pick between sizes


def fastest(times: dict) -> str:
    """The name with the smallest time in ``times``; among times within :data:`TIE` of it, the first
    (parameters can price two algorithms alike, e.g. ``copy = gamma / 2``, and then rounding decided)."""
    best = min(times.values())
    return next(name for name, t in times.items() if t <= best * (1 + TIE))


def crossovers(winner, low: int, high: int) -> list[tuple[int, str, str]]:
    """Sizes in ``[low, high]`` where ``winner(nbytes)`` changes: ``(bytes, before, after)``.

    Scans powers of two from ``low``, then bisects each change down to one byte, again from
    there until the winner is the next power of two's (a winner that changes and changes back
    between neighbouring powers of two may be missed; every power of two is right).
    """
    grid, size = [], max(1, int(low))
    while size <= high:
        grid.append(size)
        size *= 2
    points = []
    for lo, end in zip(grid, grid[1:]):
        w_lo, w_end = winner(lo), winner(end)
        while w_lo != w_end:
            hi = end
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if winner(mid) == w_lo:
                    lo = mid
                else:
                    hi = mid
            lo, before, w_lo = hi, w_lo, winner(hi)
            points.append((hi, before, w_lo))
    return points



# --- sparse allreduce (mpiml.collectives.sparse): the same alpha, beta and copy ----------------
# ``C[i, j]``: nonzeros rank i holds in rank j's index range (``n_i``: row i's sum); ``M[j]``: nonzeros
# of range j after the reduction; ``w`` bytes per nonzero on the wire (index + value), ``v`` per value.
# Every path starts with the heads (counts) sent point to point to every other rank. Then, at ``alpha``
# per message and ``beta`` per byte, plus the local work priced per element by the constants below:
#
# * ``allgather`` (SparCML's split allgather): every rank's indices and values sent to every other rank
#   in the same message as its head (one round), then on every rank a merge of the p sorted pieces in rank order
#   (COO result: two-way merges one after the other, each reading the union so far and the next piece)
#   or, for a dense result, a memset of the output (memory-bound: ``SPARSE_ZERO`` per byte) and one
#   add per gathered nonzero;
# * ``reduce_scatter``: a record alltoallv to the range owners, their merge, then each owner sends its
#   range to the other p - 1 ranks (records or a dense block);
# * ``dense``: densify and ``mpiml.allreduce``.
#
# ``mpiml.collectives.sparse.calibrate(comm)`` measures these constants on a machine, **cold**: before
# every timed repetition each rank copies a dense gradient of the vector's size, allreduces it and copies
# it again (8 MB each for 2^20 doubles), as a data-parallel training step does between two exchanges, so
# a call starts with its code, its buffers and the MPI library's state out of the caches; ``SPARSE_FIXED`` is the whole call's median (p = 2 or the
# communicator's size) less the other terms. Its result goes into ``ModelParams.sparse`` (same names),
# e.g. ``replace(params, sparse=calibrate(comm))``, which the functions below read. The defaults are the
# 2-core VM's per-element kernel times (AMD EPYC, pip MPICH over UCX shared memory, 1M-element float64
# vectors, ~7,000 nonzeros per rank, in cache) and a fixed part summed from the call's steps timed one by
# one: a warm call's cost; cold calls cost more (the calibration says how much on a given machine).
SPARSE_FIXED = 4.0e-5      # the call's work beside the per-element and per-message terms (Python steps, the
                           # library's request handling); calibrate(): the whole call's median less the rest
SPARSE_HELD = 2.0e-9       # per nonzero a rank holds: validation, order check, routing and packing
SPARSE_MERGED = 1.8e-9     # per element a compiled two-way merge step reads (union so far + next piece)
SPARSE_SCATTERED = 1.4e-9  # per gathered nonzero added into the dense result (compiled)
SPARSE_ZERO = 5.0e-11      # per byte of the dense result's memset, the output not in cache (other buffers were
                           # written since): 8 MB took 426 us with both ranks of the 2-core VM writing at once,
                           # against 144 us in cache
SPARSE_GATHERED = 3.0e-9   # reduce-scatter: per gathered record unpacked and scattered (numpy)
SPARSE_ROUND = 3.0e-5      # reduce-scatter: the numpy work of its two message rounds (packing, headers)
SPARSE_DENSE = 0.0         # a dense result's work beyond the memset and adds priced above (the 8 MB result out
                           # of cache while it is scattered into); calibrate(): that call's median less the rest
SPARSE_NAMES = ("SPARSE_FIXED", "SPARSE_HELD", "SPARSE_MERGED", "SPARSE_SCATTERED", "SPARSE_ZERO", "SPARSE_GATHERED",
                "SPARSE_ROUND", "SPARSE_DENSE")


@dataclass(frozen=True)
class SparseConstants:
    """The sparse allreduce's constants in force (seconds, per element or per byte where named so)."""

    fixed: float
    held: float
    merged: float
    scattered: float
    zero: float
    gathered: float
    round: float
    dense: float


_CONSTANTS: dict = {}


def sparse_constants(params=None) -> SparseConstants:
    """The constants of ``params`` (:func:`sparse_params`): its ``sparse`` measurements over the defaults."""
    prm = sparse_params(params)
    hit = _CONSTANTS.get(id(prm))
    if hit is not None and hit[0] is prm:
        return hit[1]
    unknown = set(prm.sparse) - set(SPARSE_NAMES)
    if unknown:
        raise ValueError(f"unknown sparse model constants {sorted(unknown)}; known: {', '.join(SPARSE_NAMES)}")
    values = {name: float(prm.sparse.get(name, globals()[name])) for name in SPARSE_NAMES}
    constants = SparseConstants(*(values[name] for name in SPARSE_NAMES))
    if len(_CONSTANTS) > 64:
        _CONSTANTS.clear()
    _CONSTANTS[id(prm)] = (prm, constants)
    return constants


def sparse_params(params=None) -> ModelParams:
    """``params``, else the tuning file's in force (``MPIML_TUNING``), else the defaults."""
    if params is not None:
        return params
    from mpiml.collectives.select import current_tuning

    tuning = current_tuning()
    return tuning.params if tuning is not None and tuning.params is not None else DEFAULT_PARAMS


def _gather(nbytes, p, prm):
    """One library allgather of ``nbytes`` in all, called from Python."""
    return prm.step_overhead + allgather_library(nbytes, p, prm.alpha, prm.beta, 0.0)


def sparse_range_dense(count, width, value_bytes, index_bytes, params=None) -> bool:
    """Whether a reduced range of ``width`` elements holding ``count`` nonzeros travels as a dense block
    (``auto``'s second switch, taken per range by its owner): its bytes and unpacking cost less."""
    prm = sparse_params(params)
    dense = width * value_bytes * (prm.beta + prm.copy)
    records = count * ((value_bytes + index_bytes) * prm.beta + sparse_constants(prm).gathered)
    return dense < records


@functools.lru_cache(maxsize=32)
def _widths(size: int, p: int) -> tuple:
    """The ``p`` ranges' widths as floats (cached: priced on every call)."""
    from mpiml.collectives.layout import balanced_counts

    return tuple(float(x) for x in balanced_counts(int(size), p))


def _ranges_allgather(M, size, p, w, v, dense_out, prm, switch=True):
    """Every owner sends its range to the other ``p - 1`` ranks (records or, where ``switch`` and
    cheaper, a dense block: :func:`sparse_range_dense`); ``(seconds, whether a range went dense)``."""
    k = sparse_constants(prm)
    per_dense, per_record = v * (prm.beta + prm.copy), w * prm.beta + k.gathered
    unpack_record = k.gathered * (1 if dense_out else 2)
    sizes, unpack, dense_count = [], 0.0, 0
    for m, width in zip(M, _widths(int(size), p)):   # plain floats: p is small, numpy calls cost more
        m = float(m)
        if switch and width * per_dense < m * per_record:
            sizes.append(width * v + 8)
            unpack += width * v * prm.copy
            dense_count += 1
        else:
            sizes.append(m * w + 8)
            unpack += m * unpack_record
    transfer = max((p - 1) * max(sizes), sum(sizes) - min(sizes)) * prm.beta
    fill = size * v * k.zero if dense_out and dense_count < p else 0.0
    return (p - 1) * (2 * prm.step_overhead + prm.alpha) + transfer + unpack + fill, dense_count > 0


_DENSE_START: dict = {}


def _dense_start(size, v, p, prm) -> float:
    """Densify and ``mpiml.allreduce``'s ``auto`` choice, in place (cached: asked on every call)."""
    key = (id(prm), int(size), v, p)
    hit = _DENSE_START.get(key)
    if hit is not None and hit[0] is prm:
        return hit[1]
    from mpiml.collectives.select import choose

    name = choose("allreduce", "auto", int(size * v), p)
    seconds = size * v * prm.copy + predict(name, int(size * v), p, prm, in_place=True) - prm.call_overhead
    if len(_DENSE_START) > 64:
        _DENSE_START.clear()
    _DENSE_START[key] = (prm, seconds)
    return seconds


def _allgather_seconds(held, merged, size, w, v, dense_out, prm) -> float:
    """The split allgather with ``held[r]`` nonzeros on rank ``r`` (``merged``: the union's size, or None
    for its upper bound): the bytes of every rank's indices and values, which travel in its head's message
    (one per pair, priced in :func:`sparse_agree_seconds`), then the merge or the memset and adds."""
    p = len(held)
    total = sum(held)
    moved = max(max(held) * (p - 1), total - min(held)) * w   # the busiest rank's sends or receives
    k = sparse_constants(prm)
    seconds = moved * prm.beta   # the messages themselves are the heads' (:func:`sparse_agree_seconds`)
    if dense_out:
        return seconds + size * v * k.zero + k.scattered * total + k.dense
    touched, prefix = held[0], held[0]
    for n in held[1:]:   # each two-way merge reads the union so far and the next piece
        touched += (prefix if merged is None else min(prefix, merged)) + n
        prefix += n
    return seconds + k.merged * touched


def _reduce_scatter_seconds(rows, cols, own, M, size, w, v, dense_out, prm, switch) -> tuple[float, bool]:
    """The record alltoallv, the owners' merges, the ranges to every rank; ``(seconds, a range went dense)``.
    ``rows``/``cols``/``own``: ``C``'s row and column sums and diagonal, as lists."""
    p = len(rows)
    moved = max(max(r - o for r, o in zip(rows, own)), max(c - o for c, o in zip(cols, own))) * w
    k = sparse_constants(prm)
    seconds = (k.round + prm.step_overhead + (p - 1) * prm.alpha + moved * prm.beta
               + k.merged * max(cols) * (p + 1) / 2)
    gather, any_dense = _ranges_allgather(M, size, p, w, v, dense_out, prm, switch)
    return seconds + gather, any_dense


def sparse_upper_union(C, size):
    """An upper bound of the merged counts: per range, the nonzeros sent to it, at most its width."""
    import numpy as np

    C = np.asarray(C)
    return np.minimum(C.sum(axis=0), _widths(int(size), C.shape[0]))


def _summary(C):
    """``C``'s row sums, column sums and diagonal as float lists (what the pricing reads); a tuple of
    the three is taken as it is (no ``p x p`` matrix at 100,000 ranks)."""
    if isinstance(C, tuple):
        return C
    import numpy as np

    C = np.asarray(C, dtype=np.float64)
    return C.sum(axis=1).tolist(), C.sum(axis=0).tolist(), C.diagonal().tolist()


def sparse_path_seconds(C, size, value_bytes=8, index_bytes=4, params=None, *, M=None, algorithm="auto",
                        dense_out=True) -> dict:
    """Predicted seconds of each way one sparse allreduce with input counts ``C`` (``p x p``, or its
    ``(row sums, column sums, diagonal)``) could go, beyond the heads they share: ``allgather``,
    ``reduce_scatter`` (with its dense ranges where ``algorithm`` is ``auto``) and ``dense``. ``M``: the
    merged counts per range; None prices the most the inputs allow (what a call knows when it decides)."""
    prm = sparse_params(params)
    rows, cols, own = _summary(C)
    p = len(rows)
    w, v = value_bytes + index_bytes, value_bytes
    widths = _widths(int(size), p)
    upper = [min(c, width) for c, width in zip(cols, widths)] if M is None else [float(m) for m in M]
    merged = None if M is None else sum(upper)
    rs, any_dense = _reduce_scatter_seconds(rows, cols, own, upper, size, w, v, dense_out, prm, algorithm == "auto")
    return {"allgather": _allgather_seconds(rows, merged, size, w, v, dense_out, prm),
            "reduce_scatter": rs, "reduce_scatter_dense_ranges": any_dense,
            "dense": _dense_start(size, v, p, prm)}


def sparse_agree_seconds(C, params=None) -> float:
    """The call's fixed work, the per-nonzero checks on the busiest rank, and the heads (counts) sent
    point to point to every other rank."""
    prm = sparse_params(params)
    rows = _summary(C)[0]
    k = sparse_constants(prm)
    return prm.call_overhead + k.fixed + (len(rows) - 1) * (prm.alpha + prm.step_overhead) + k.held * max(rows)


def _reduce_scatter_floor(p, received, size, v, dense_out, prm) -> float:
    """Less than the reduce-scatter can take: its fixed work, messages, the busiest owner's merge
    (``received`` nonzeros) and the dense result's fill (every element written once, as a zero or in a
    dense block)."""
    k = sparse_constants(prm)
    return (k.round + prm.step_overhead + (p - 1) * (2 * prm.alpha + 2 * prm.step_overhead)
            + k.merged * received * (p + 1) / 2 + (size * v * min(prm.copy, k.zero) if dense_out else 0.0))


def sparse_choice(C, size, value_bytes, index_bytes, *, algorithm="auto", dense_out=True, params=None) -> str:
    """How a call goes: ``allgather``, ``reduce_scatter`` or ``dense`` (the same on every rank: from the
    agreed counts). ``sparse`` picks the cheaper sparse way, ``auto`` also weighs the dense allreduce."""
    if algorithm in ("dense", "allgather", "reduce_scatter"):
        return algorithm
    prm = sparse_params(params)
    summary = _summary(C)
    rows, cols = summary[0], summary[1]
    p = len(rows)
    w, v = value_bytes + index_bytes, value_bytes
    # asked on every call: the split allgather and the dense switch are cheap to price, the reduce-scatter
    # (per range) only where its floor leaves it a chance
    gather = _allgather_seconds(rows, None, size, w, v, dense_out, prm)
    dense = _dense_start(size, v, p, prm) if algorithm == "auto" else math.inf
    best_name, best_seconds = ("allgather", gather) if gather <= dense else ("dense", dense)
    if _reduce_scatter_floor(p, max(cols), size, v, dense_out, prm) < best_seconds:
        costs = sparse_path_seconds(summary, size, value_bytes, index_bytes, prm, algorithm=algorithm,
                                    dense_out=dense_out)
        if costs["reduce_scatter"] < best_seconds:
            return "reduce_scatter"
    return best_name


def sparse_eager(counts, size, value_bytes, index_bytes, *, algorithm="auto", dense_out=True, params=None) -> bool:
    """Whether a rank holding ``counts`` nonzeros per range sends them with its head (the split
    allgather in one round): :func:`sparse_choice` would pick the allgather if every rank held as many.
    A guess from this rank alone: a wrong one costs bytes (sent but not used) or a round, never bits."""
    if algorithm in ("allgather", "dense", "reduce_scatter"):
        return algorithm == "allgather"
    counts = [float(c) for c in counts]
    p, n = len(counts), sum(counts)
    return sparse_choice(([n] * p, [p * c for c in counts], counts), size, value_bytes, index_bytes,
                         algorithm=algorithm, dense_out=dense_out, params=params) == "allgather"


def sparse_start_dense(C, size, value_bytes, index_bytes, params=None, dense_out=True) -> bool:
    """``auto``'s switch to a dense allreduce: predicted cheaper than either sparse way."""
    return sparse_choice(C, size, value_bytes, index_bytes, dense_out=dense_out, params=params) == "dense"


def predict_sparse_counts(C, M, size, params=None, *, value_bytes=8, index_bytes=4, algorithm="auto",
                          dense_out=True) -> tuple[float, str]:
    """``(seconds, path)`` of one sparse allreduce call with input counts ``C`` (``p x p``, or its
    ``(row sums, column sums, diagonal)``) and merged counts ``M``.

    ``path`` is what the call does (:data:`mpiml.collectives.sparse.STATS`'s names:
    ``sparse_allgather``; ``sparse`` for the reduce-scatter, ``sparse+dense_allgather`` where a
    range travels dense; ``dense``); ``algorithm`` as the call's; ``dense_out``: the result is
    written dense (else returned as indices and values). Every rank is taken as eager where the
    split allgather is chosen (one round).
    """
    prm = sparse_params(params)
    p = len(M)
    if p == 1:
        k = sparse_constants(prm)
        return prm.call_overhead + k.fixed + k.held * float(sum(M)), "local"
    summary = _summary(C)
    how = sparse_choice(summary, size, value_bytes, index_bytes, algorithm=algorithm, dense_out=dense_out,
                        params=prm)
    costs = sparse_path_seconds(summary, size, value_bytes, index_bytes, prm, M=M, algorithm=algorithm,
                                dense_out=dense_out)
    start = sparse_agree_seconds(summary, prm)
    if how == "dense":
        return start + costs["dense"], "dense"
    if how == "allgather":
        return start + costs["allgather"], "sparse_allgather"
    return start + costs["reduce_scatter"], "sparse+dense_allgather" if costs["reduce_scatter_dense_ranges"] else "sparse"


def predict_sparse(size, density, p, params=None, *, value_bytes=8, index_bytes=4, algorithm="auto",
                   dense_out=True) -> tuple[float, str]:
    """``(seconds, path)`` of a sparse allreduce of ``size`` elements at ``p`` ranks, each rank holding
    ``density * size`` nonzeros at independent uniformly random places (so the merged vector holds
    ``size (1 - (1 - density)^p)``); see :func:`predict_sparse_counts`."""
    p = int(p)
    width = _widths(int(size), p)
    own = [density * x for x in width]
    summary = ([density * float(size)] * p, [p * x for x in own], own)
    M = [x * (1.0 - (1.0 - density) ** p) for x in width]
    return predict_sparse_counts(summary, M, size, params, value_bytes=value_bytes, index_bytes=index_bytes,
                                 algorithm=algorithm, dense_out=dense_out)
