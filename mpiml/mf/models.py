"""The three trainers behind the shared estimator API: ALS, ImplicitALS, DSGD.

Each supplies ``_train(data, ex, P, Q, first, iters=None, track=True)``: the iterations,
given this rank's sparse rows and an :class:`~mpiml.mf.transport.Exchange` for all
communication; the local work runs inside ``ex.computing()`` so that compute, wait and
transfer are told apart.

Defaults were chosen on real data (``benchmarks/mf_movielens.py``: MovieLens-100K and the
first 487,650 ratings of MovieLens-1M, seeded 90/10 splits), so that they need no tuning:
one value of each serves both sets within 1% of the best tuned RMSE (explicit) and
well above the ``implicit`` library's defaults (nDCG@10). Test RMSE, 100K / 1M-half:
ALS defaults 0.903 / 0.862, DSGD defaults 0.900 / 0.858, best tuned mpiml 0.899 / 0.855,
Surprise ``SVD()`` 0.929 / 0.881. nDCG@10: implicit ALS defaults 0.345 / 0.317 against
0.238 / 0.273 for ``implicit.als.AlternatingLeastSquares()``. Biases lower ALS's RMSE by
about 1% there; ``reg="auto"`` found no better value on these sets at ~3x the time, so
it is offered, not the default.

The parameters of all three, their defaults and limits are declared in
:mod:`mpiml.mf.params`, which generates each class's keyword-only ``__init__`` and the
"Parameters" section of its docstring.
"""

from __future__ import annotations

import time

import numpy as np

from mpiml.errors import ArgumentError
from mpiml.mf import als, dsgd, ials, partitioned
from mpiml.mf.estimator import FactorModel, cost_model
from mpiml.mf.partition import pair_dots, row_costs
from mpiml.mf.registry import register
from mpiml.runtime import stragglers
from mpiml.runtime.seeding import rank_generator


@register
class ALS(FactorModel):
    """Explicit ALS-WR (Zhou et al. 2008) with global, user and item biases.

    ``reg="auto"`` chooses the regularization on a held-out slice (see
    :mod:`mpiml.mf.estimator`); ``cold_start`` as described there.
    """

    algorithm = "als"

    def _row_weights(self, counts, side):
        return row_costs(counts, len(self._layout.free(side)), "cholesky", model=cost_model("als"))

    def _train(self, data, ex, p, q, first, iters=None, track=True):
        ur, ir, mu, lay, reg = data["user_rows"], data["item_rows"], self.global_mean_, self._layout, self.reg_
        weighted, end = self._params.weighted, self._params.iters if iters is None else iters
        if self._partitioned:
            return partitioned.train_als(self, data, ex, p, q, first, end, track)
        for it in range(first, end):
            clock = self._clock(ex)
            # the other side's solved columns copied once per half-step, not once per overlapped chunk
            design = als.design_of(q, mu, lay, "users")
            p = self._solve_gathered(
                ex, lambda rows: als.half_step_or_nan(rows, p, q, mu, reg, lay, "users", weighted, design),
                ur, data["user_bounds"], "user", it, end)
            design = als.design_of(p, mu, lay, "items")
            q = self._solve_gathered(
                ex, lambda rows: als.half_step_or_nan(rows, q, p, mu, reg, lay, "items", weighted, design),
                ir, data["item_bounds"], "item", it, end)
            with ex.computing():
                err = ur.vals - als.predict_rows(ur, p, q, mu)
            self._after_iteration(data, ex, it, p, q, self._record(ex, data, err, ur, p, ir, q), clock, track)
        return p, q

    def _record(self, ex, data, err, user_rows, p, item_rows, q, sse=None) -> dict:
        """The objective and training RMSE of an iteration from every rating's residual ``err`` (or this
        rank's squared error ``sse``, not in reproducible mode) and the rows of both sides (``p`` / ``q``
        from ``user_rows.start`` / ``item_rows.start``); collective."""
        lay, reg, weighted = self._layout, self.reg_, self._params.weighted
        with ex.computing():
            if self._exact:
                pens = np.concatenate([als.penalty_terms(user_rows, p, lay, "users", weighted),
                                       als.penalty_terms(item_rows, q, lay, "items", weighted)])
            else:
                pen = (als.penalty(user_rows, p, reg, lay, "users", weighted)
                       + als.penalty(item_rows, q, reg, lay, "items", weighted))
        if self._exact:
            count = data["n"] + data["user_ids"].size + data["item_ids"].size
            sse, pen = self._sum_terms(ex, err * err, pens, count=count)
            pen *= reg
        else:
            sse, pen = ex.sum([err @ err if sse is None else sse, pen])
        return {"objective": float(sse + pen), "train_rmse": float(np.sqrt(sse / data["n"]))}


@register
class ImplicitALS(FactorModel):
    """Implicit-feedback ALS (Hu, Koren, Volinsky 2008).

    Ratings are read as interaction strengths: preference 1 where positive, confidence
    ``1 + alpha * |r|``; unobserved entries have preference 0 and confidence 1.
    ``solver`` is ``"cholesky"`` or ``"cg"`` (``cg_steps`` conjugate-gradient steps per
    row, warm-started). ``dtype`` is what the factors are stored and solved in
    (``"float32"``, like the ``implicit`` library, or ``"float64"``). Other parameters as
    in :class:`ALS` (``reg`` is not weighted, and is a number).
    """

    algorithm = "ials"
    implicit = True

    def _row_weights(self, counts, side):
        v = self._params
        return row_costs(counts, v.rank, v.solver, v.cg_steps, model=cost_model("ials_" + v.solver))

    def _initial_factors(self, data):
        p, q = super()._initial_factors(data)
        return p.astype(self._params.dtype), q.astype(self._params.dtype)

    def _train(self, data, ex, p, q, first, iters=None, track=True):
        ur, ir = data["user_rows"], data["item_rows"]
        p, q = p.astype(self._params.dtype, copy=False), q.astype(self._params.dtype, copy=False)
        end = self._params.iters if iters is None else iters
        if self._partitioned:
            return partitioned.train_ials(self, data, ex, p, q, first, end, track)
        for it in range(first, end):
            clock = self._clock(ex)
            p = self._solve_gathered(ex, self._solver(q, p), ur, data["user_bounds"], "user", it, end)
            q = self._solve_gathered(ex, self._solver(p, q), ir, data["item_bounds"], "item", it, end)
            with ex.computing():
                if self._exact:
                    observed = ials.observed_terms(ur, p, q, self._params.alpha)
                else:
                    observed = ials.observed_loss(ur, p, q, self._params.alpha)
            observed = (self._sum_terms(ex, observed, count=data["n"]) if self._exact else ex.sum([observed]))[0]
            with ex.computing():
                objective = ials.full_loss(observed, p.astype(np.float64), q.astype(np.float64), self.reg_)
            self._after_iteration(data, ex, it, p, q, {"objective": objective}, clock, track)
        return p, q

    def _solver(self, other, own):
        """``solve(rows)`` of a half-step (by chunks when overlapped): ``other.T @ other`` computed once."""
        gram = []

        def solve(rows):
            if not gram:
                gram.append(other.T @ other)
            return self._half(rows, other, own, gram[0])

        return solve

    def _half(self, rows, other, own, gram=None):
        try:
            v = self._params
            gram = other.T @ other if gram is None else gram
            out = ials.ials_rows(rows, other, gram, self.reg_, v.alpha, v.solver, v.cg_steps,
                                 own[rows.start:rows.stop])
        except np.linalg.LinAlgError:
            return np.full((rows.n_rows, other.shape[1]), np.nan, dtype=self._params.dtype)
        return out.astype(self._params.dtype, copy=False)

    def _fold_in_row(self, rows):
        q = self.item_factors_
        return ials.ials_rows(rows, q, q.T @ q, self.reg_, self._params.alpha, "cholesky")[0]


@register
class DSGD(FactorModel):
    """Distributed SGD over p x p blocks with item blocks rotated around the ring.

    Each rating visited updates its user's and item's rows (and, with ``biases``, their
    biases) by ``lr * (error * other - reg * own)``; predictions are
    ``mean + b_u + c_i + x . y``. ``lr`` is the initial step; ``step="decay"``
    (``lr / (1 + decay * epoch)``, the default) or ``"bold"`` (bold driver: x1.05 after an
    epoch that lowered the loss, x0.5 otherwise). Factors start ``N(0, init_std)``
    (biases at 0): on MovieLens 0.05 beat Surprise's 0.1 and ALS's ``rank**-0.5`` by
    0.1-0.5% RMSE. Other parameters as in :class:`ALS`; ``iters`` counts epochs.
    """

    algorithm = "dsgd"
    needs_item_rows = False

    def _initial_factors(self, data):
        rng = np.random.default_rng(np.random.SeedSequence([self._params.seed, 12]))
        lay, nu, ni = self._layout, data["user_ids"].size, data["item_ids"].size
        p, q = np.zeros((nu, lay.width)), np.zeros((ni, lay.width))
        p[:, :lay.rank] = rng.normal(0.0, self._params.init_std, size=(nu, lay.rank))
        q[:, :lay.rank] = rng.normal(0.0, self._params.init_std, size=(ni, lay.rank))
        if lay.biases:
            p[:, lay.fixed("users")] = 1.0
            q[:, lay.fixed("items")] = 1.0
        return p, q

    def _draw(self):
        return 12, self._params.init_std

    def _restore(self, arrays):
        self._rate = float(arrays["rate"])
        self._previous = float(arrays["previous"]) if np.isfinite(arrays["previous"]) else None

    def _checkpoint_state(self):
        return {"rate": np.array(self._rate),
                "previous": np.array(np.nan if self._previous is None else self._previous)}

    def _train(self, data, ex, p, q, first, iters=None, track=True):
        r, size, lay = ex.rank, ex.size, self._layout
        ub, ib, ur, mu = data["user_bounds"], data["item_bounds"], data["user_rows"], self.global_mean_
        if first == 0:
            self._rate, self._previous = self._params.lr, None
        part = self._partitioned  # p and q are this rank's blocks: it needs no other rows
        x = p.copy() if part else p[ub[r]:ub[r + 1]].copy()
        y = q.copy() if part else q[ib[r]:ib[r + 1]].copy()
        local_users = ur.row_ids() - ub[r]
        blocks = dsgd.split_by_item_block(local_users, ur.cols, ur.vals, ib)
        my_items = data["item_counts"][ib[r]:ib[r + 1]]
        fixed_x, fixed_y = (lay.fixed("users"), lay.fixed("items")) if lay.biases else (-1, -1)
        free_x, free_y = lay.free("users"), lay.free("items")
        slowdown = stragglers.Slowdown.for_rank()  # MPIML_SLOW_RANKS / --slow-ranks: an injected straggler
        for epoch in range(first, self._params.iters if iters is None else iters):
            clock = self._clock(ex)
            rng = rank_generator(self._params.seed, r, size, purpose=1000 + epoch)
            for s in range(size):
                with ex.computing():
                    start = time.perf_counter()
                    dsgd.sgd_block(blocks[(r + s) % size], x, y, mu, self._rate, self.reg_, rng, fixed_x, fixed_y)
                    slowdown.after(time.perf_counter() - start)
                incoming = (r + s + 1) % size
                y = ex.shift(y, int(ib[incoming + 1] - ib[incoming]))
            with ex.computing():
                xf, yf = x[:, free_x], y[:, free_y]
                pen = self.reg_ * (ur.counts() @ np.einsum("ij,ij->i", xf, xf)
                                   + my_items @ np.einsum("ij,ij->i", yf, yf))
            if part:  # the item blocks once more around the ring, instead of allgathering Q
                sse, y = partitioned.ring_sse(ex, blocks, x, y, mu, ib)
            else:
                q = ex.gather(y)
                with ex.computing():
                    err = ur.vals - mu - pair_dots(x, local_users, q, ur.cols)
                    sse = err @ err
            sse, pen = ex.sum([sse, pen])
            loss = float(sse + pen)
            record = {"objective": loss, "train_rmse": float(np.sqrt(sse / data["n"])), "step_size": self._rate}
            v = self._params
            self._rate = dsgd.next_rate(v.step, v.lr, self._rate, epoch, loss, self._previous, v.decay)
            self._previous = loss
            self._local_users = x
            self._after_iteration(data, ex, epoch, x if part else None, y if part else q, record, clock, track)
        return (x, y) if part else (ex.gather(x), ex.gather(y))


@register
class NOMAD(DSGD):
    """Asynchronous DSGD, NOMAD-style (Yun et al. 2014): no barrier between sub-epochs.

    Items are cut into ``blocks_per_rank`` blocks per rank that circulate among the ranks
    with nonblocking messages (``route``: to the least-loaded rank the block has not yet
    visited this epoch, or the next rank); each rank updates its users against whichever
    block it holds, so a slow rank holds up no one. An epoch ends once every block has
    visited every rank (ranks that finish early make up to ``extra_visits`` more passes
    meanwhile), or with ``epoch_end="work"`` once as many visits were made. Not
    deterministic at more than one rank (the order depends on message timing); see
    :mod:`mpiml.mf.nomad`. Other parameters as in :class:`DSGD`.
    """

    algorithm = "nomad"

    def _check_params(self) -> dict:
        values = super()._check_params()
        if values["factors"] == "partitioned":
            raise ArgumentError("nomad: factors='partitioned' is not available (its item blocks are not the "
                                "partitioned layout's); use factors='replicated'")
        self._params.factors = "replicated"  # auto: replicated, whatever partitioned.AUTO_PARTITIONS says
        return values

    def _train(self, data, ex, p, q, first, iters=None, track=True):
        from mpiml.mf import nomad

        return nomad.train(self, data, ex, p, q, first, iters, track)
