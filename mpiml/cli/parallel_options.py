"""The ``mpiml sgd`` options of data, model and hybrid parallelism, and their glue to :mod:`mpiml.parallel.run`.

:func:`add_arguments` adds ``--parallel``, ``--grid``, ``--split`` and ``--explain`` to a
parser; :func:`fit_function` maps the parsed options onto
:func:`mpiml.parallel.run.fit_function` (which takes plain values), printing through
:func:`mpiml.cli.output.say` on rank 0.
"""

from __future__ import annotations

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


def fit_function(est, args, comm, X, y):
    """``est.fit``, or a fit on the grid the options ask for (collective; see :mod:`mpiml.parallel.run`)."""
    from mpiml.cli.output import say
    from mpiml.parallel.run import fit_function as layout_fit

    return layout_fit(est, comm, X, y, parallel=args.parallel, grid=args.grid, split=args.split,
                      explain=args.explain, say=lambda text: say(text, comm=comm))
