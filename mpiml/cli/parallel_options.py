"""The ``mpiml sgd`` options of data, model and hybrid parallelism, and the layout they choose.

:func:`add_arguments` adds ``--parallel``, ``--grid``, ``--split`` and ``--explain`` to a
parser; :func:`plan_layout` maps the parsed options onto :func:`mpiml.parallel.run.plan`
(which takes plain values) before training, printing the choice through
:func:`mpiml.cli.output.say` on rank 0, and returns the estimator's ``parallel``, ``grid``
and ``split`` parameters.
"""

from __future__ import annotations

import sys

from mpiml.parallel.run import PARALLEL, SPLIT_CHOICES


def add_arguments(parser) -> None:
    """The parallelism options of ``mpiml sgd``."""
    g = parser.add_argument_group("parallelism (every strategy trains under every layout)")
    g.add_argument("--parallel", choices=PARALLEL, default="data",
                   help="data: every rank holds the whole model (default); model: features or classes split "
                        "over all ranks; hybrid: rows over R and the model over C; auto: the layout the cost "
                        "model predicts fastest per sync update or lbfgs iteration (data parallelism for "
                        "local and oneshot)")
    g.add_argument("--grid", help="RxC with R*C = ranks (rows over R, model over C); default: chosen by cost")
    g.add_argument("--split", choices=SPLIT_CHOICES, default="auto",
                   help="what the grid columns split: features, or softmax classes (default: cheaper)")
    g.add_argument("--explain", action="store_true", help="print the cost estimate of every layout")


def plan_layout(args, comm, X, y) -> dict:
    """``{"parallel", "grid", "split"}`` for :class:`mpiml.sgd.LinearModel` (collective).

    Plans the layout now (rather than inside ``fit``) to print it before training: the
    grid chosen and, with ``--explain``, the cost table. ``args`` holds the resolved
    strategy and settings (:func:`mpiml.cli.sgd.resolve_settings`).
    """
    if args.parallel == "data" and not args.grid and not args.explain:
        return {"parallel": "data", "grid": None, "split": args.split}
    from mpiml.cli.output import say
    from mpiml.parallel.run import explain, plan

    softmax = args.model == "softmax"
    chosen, problem = plan(comm, X, strategy=args.strategy, batch=args.batch_size * args.accumulate,
                           parallel=args.parallel, grid=args.grid, split=args.split, k=None if softmax else 1,
                           y=y, n_classes=args.classes)
    # With --json, stdout carries exactly one JSON object: the layout goes to stderr.
    stream = sys.stderr if getattr(args, "json", False) else sys.stdout
    if args.explain:
        say(explain(problem, chosen, args.strategy), comm=comm, file=stream)
    if chosen.cols > 1:
        say(f"layout: {chosen.parallel} on a {chosen.grid} grid, {chosen.split} split over the columns", comm=comm,
            file=stream)
    return {"parallel": args.parallel, "grid": chosen.grid, "split": chosen.split}
