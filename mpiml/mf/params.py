"""The parameters of the factorization models, declared once.

:data:`PARAMS` is a table of :class:`Param` fields (name, kind, default, allowed values,
help, the algorithms that take it). Everything else is generated from it, so a default or
a limit is written in one place and cannot disagree between the Python API and the
command line:

- the estimators' keyword-only ``__init__``, which stores the values unchanged (as
  scikit-learn's estimators do), ``get_params`` / ``set_params``, and the "Parameters"
  section of their docstrings (:mod:`mpiml.mf.estimator`);
- their validation at the start of ``fit`` (:func:`validate`);
- the options of ``mpiml mf``, their help and its table of defaults, and the errors for a
  flag of another algorithm (the ``mpiml mf`` command).

The defaults were chosen on real data (see :mod:`mpiml.mf.models`). Pure: no MPI.
"""

from __future__ import annotations

import inspect
import math
import numbers
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from mpiml.errors import ArgumentError
from mpiml.mf.dsgd import STEPS
from mpiml.mf.ials import SOLVERS
from mpiml.mf.nomad import ENDS, ROUTES
from mpiml.mf.partitioned import LAYOUTS
from mpiml.mf.transport import EXCHANGES

ALGORITHMS = ("als", "ials", "dsgd", "nomad")
COLD_START = ("drop", "nan", "mean")
DTYPES = ("float32", "float64")
# The candidates of reg="auto", for the algorithms that offer it: the explicit models (the
# choice is by held-out RMSE, which implicit feedback has not).
REG_GRIDS = {"als": (0.03, 0.05, 0.07, 0.1, 0.14), "dsgd": (0.025, 0.035, 0.05, 0.07, 0.1)}
AUTO = tuple(REG_GRIDS)

KINDS = ("int", "float", "bool", "choice", "reg", "grid", "path", "callable")


@dataclass(frozen=True)
class Param:
    """One parameter of the factorization models.

    Parameters
    ----------
    name : str
        The keyword of the estimators; the command-line option is ``--name`` with dashes.
    kind : str
        One of :data:`KINDS`: ``"reg"`` is a number or ``"auto"`` (for :data:`AUTO`),
        ``"grid"`` a non-empty list of numbers.
    default : object or Mapping
        One value, or a mapping algorithm -> value.
    help : str
        One line, for the docstrings and ``mpiml mf --help``.
    algorithms : tuple of str
        The algorithms that take it.
    choices : tuple
        The allowed values of a ``"choice"``.
    low, high : float, optional
        Bounds of a number (or of each number of a ``"grid"``); ``low_open`` / ``high_open``
        exclude the bound itself.
    optional : bool
        None is allowed (its meaning is in ``help``).
    model : bool
        Describes the model (saved with it and reported in ``params``); False for how a
        run is carried out (checkpoints, callback).
    flag : bool
        An option of ``mpiml mf``.
    only_with : tuple, optional
        ``(other, value)``: the option means something only when parameter ``other`` has
        ``value``; ``mpiml mf`` refuses it otherwise.
    cli : str, optional
        The command-line option when it is not ``--name`` (the shared flag vocabulary).
    """

    name: str
    kind: str
    default: Any
    help: str
    algorithms: tuple = ALGORITHMS
    choices: tuple = ()
    low: float | None = None
    low_open: bool = False
    high: float | None = None
    high_open: bool = False
    optional: bool = False
    model: bool = True
    flag: bool = True
    only_with: tuple | None = None
    cli: str | None = None

    def default_for(self, algorithm: str):
        """The default of ``algorithm``."""
        return self.default[algorithm] if isinstance(self.default, Mapping) else self.default

    @property
    def option(self) -> str:
        """The command-line option, ``--cg-steps`` for ``cg_steps``."""
        return self.cli or "--" + self.name.replace("_", "-")

    def allowed(self, algorithm: str) -> str:
        """What a value must be, in words (``"an integer >= 1"``)."""
        text = {"int": "an integer", "float": "a number", "bool": "True or False", "reg": "a number",
                "grid": "a non-empty list of numbers", "path": "a path", "callable": "a callable",
                "choice": f"one of {list(self.choices)}"}[self.kind]
        bounds = []
        if self.low is not None:
            bounds.append(f"{'>' if self.low_open else '>='} {self.low:g}")
        if self.high is not None:
            bounds.append(f"{'<' if self.high_open else '<='} {self.high:g}")
        if bounds:
            text += " " + " and ".join(bounds)
        if self.kind == "reg" and algorithm in AUTO:
            text += ' or "auto"'
        return "None or " + text if self.optional else text

    def check(self, value, algorithm: str, label: str | None = None):
        """``value`` normalized (ints as ``int``, a grid sorted); raises :class:`ArgumentError`."""
        if value is None and self.optional:
            return None
        normal = _normalize(self, value, algorithm)
        if normal is _BAD:
            where = label if label is not None else f"{algorithm}: {self.name}"
            raise ArgumentError(f"{where} must be {self.allowed(algorithm)}, got {value!r}")
        return normal


_BAD = object()


def _number(value, integral: bool):
    if isinstance(value, (bool, np.bool_)):
        return _BAD
    if integral:
        return int(value) if isinstance(value, numbers.Integral) else _BAD
    if isinstance(value, numbers.Real) and math.isfinite(value):
        return float(value)
    return _BAD


def _within(param: Param, number) -> bool:
    if param.low is not None and (number < param.low or (param.low_open and number == param.low)):
        return False
    return param.high is None or (number < param.high or (not param.high_open and number == param.high))


def _normalize(param: Param, value, algorithm: str):
    kind = param.kind
    if kind == "bool":
        return bool(value) if isinstance(value, (bool, np.bool_)) else _BAD
    if kind == "choice":
        return value if isinstance(value, str) and value in param.choices else _BAD
    if kind == "path":
        return value if isinstance(value, (str, os.PathLike)) else _BAD
    if kind == "callable":
        return value if callable(value) else _BAD
    if kind == "reg" and isinstance(value, str):
        return "auto" if value == "auto" and algorithm in AUTO else _BAD
    if kind == "grid":
        if isinstance(value, (str, bytes, Mapping)) or not np.iterable(value):
            return _BAD
        numbers_ = [_number(v, False) for v in value]
        if not numbers_ or any(v is _BAD or not _within(param, v) for v in numbers_):
            return _BAD
        return sorted(set(numbers_))
    number = _number(value, kind == "int")
    return number if number is not _BAD and _within(param, number) else _BAD


PARAMS = (
    Param("rank", "int", {"als": 50, "ials": 100, "dsgd": 50}, "factor dimension", low=1),
    Param("reg", "reg", {"als": 0.08, "ials": 30.0, "dsgd": 0.05},
          "regularization lambda (als: times each row's rating count when weighted); auto (als, dsgd): chosen "
          "on a held-out slice of the training ratings", low=0),
    Param("iters", "int", {"als": 10, "ials": 15, "dsgd": 20},
          "iterations (each a user and an item half-step; dsgd: epochs)", low=0),
    Param("biases", "bool", True, "learn user and item biases beside the global mean", algorithms=("als", "dsgd")),
    Param("weighted", "bool", True, "multiply reg by each row's rating count (ALS-WR)", algorithms=("als",)),
    Param("alpha", "float", 0.5, "confidence 1 + alpha * |rating|", algorithms=("ials",), low=0, cli="--confidence"),
    Param("solver", "choice", "cg", "row solver: cg (conjugate gradient, warm-started) or cholesky (exact)",
          algorithms=("ials",), choices=SOLVERS),
    Param("cg_steps", "int", 3, "conjugate-gradient steps per row", algorithms=("ials",), low=1,
          only_with=("solver", "cg")),
    Param("dtype", "choice", "float32", "precision the factors are stored and solved in", algorithms=("ials",),
          choices=DTYPES),
    Param("lr", "float", 0.02, "initial step size", algorithms=("dsgd",), low=0, low_open=True),
    Param("step", "choice", "decay", "step-size rule: decay (lr / (1 + decay * epoch)) or bold (bold driver: "
          "x1.05 after an epoch that lowered the loss, x0.5 otherwise)", algorithms=("dsgd",), choices=STEPS),
    Param("decay", "float", 0.1, "decay rate of the decay step rule", algorithms=("dsgd",), low=0,
          only_with=("step", "decay")),
    Param("init_std", "float", 0.05, "initial factors are drawn from N(0, init_std)", algorithms=("dsgd",), low=0),
    Param("reg_grid", "grid", None, "the candidates of reg auto (None: the algorithm's grid)", algorithms=AUTO,
          low=0, optional=True, only_with=("reg", "auto")),
    Param("auto_fraction", "float", 0.1, "share of the training ratings reg auto holds out", algorithms=AUTO,
          low=0, low_open=True, high=1, high_open=True, only_with=("reg", "auto")),
    Param("auto_iters", "int", None, "iterations of each warm-started reg auto fit after the first (None: "
          "iters // 3, at least 1)", algorithms=AUTO, low=1, optional=True, only_with=("reg", "auto")),
    Param("seed", "int", 0, "initialization and shuffling seed", low=0),
    Param("exchange", "choice", "auto", "allgather algorithm that shares the solved factors", choices=EXCHANGES,
          cli="--collective-algorithm"),
    Param("overlap", "int", 0, "solve each half-step in this many chunks, exchanging each solved chunk while the "
          "next is solved (0 or 1: no overlap; the factors are the same either way)", algorithms=("als", "ials"),
          low=0, model=False),
    Param("factors", "choice", "auto", "where the factors live: replicated (full P and Q on every rank, solved "
          "sides allgathered), partitioned (each rank its user and item blocks, only the rows its ratings reference "
          "exchanged) or auto (partitioned for large factors that route fewer rows; see mpiml.mf.partitioned)",
          choices=LAYOUTS, model=False),
    Param("cold_start", "choice", "drop", "users or items unseen in training: drop (predict NaN, left out of "
          "evaluate), nan (NaN everywhere) or mean (the global mean)", choices=COLD_START),
    Param("checkpoint_dir", "path", None, "write checkpoints here (None: none); with it, SIGUSR1/SIGTERM "
          "checkpoint and stop with Preempted", optional=True, model=False),
    Param("checkpoint_every", "int", 1, "checkpoint every this many iterations (0: only on a stop signal)",
          low=0, model=False),
    Param("resume", "bool", False, "start from the latest checkpoint in checkpoint_dir, if any (at any number "
          "of ranks)", model=False),
    Param("overwrite", "bool", False, "start afresh in a checkpoint_dir that holds a checkpoint, replacing it "
          "(without it or resume, such a directory is an error)", model=False),
    Param("reproducible", "bool", False, "exact sums across ranks, so that ALS and iALS give the same factors and "
          "metrics at any number of ranks (also MPIML_REPRODUCIBLE=1); DSGD's algorithm depends on it",
          model=False),
    Param("callback", "callable", None, "called on every rank after each iteration with a dict (iteration, "
          "objective, train_rmse, seconds, compute_seconds, comm_seconds, wait_seconds)", optional=True,
          model=False, flag=False),
)
# NOMAD (mpiml.mf.nomad) takes DSGD's parameters, with DSGD's defaults (reg auto aside), and its own.
PARAMS = tuple(replace(p, algorithms=tuple(dict.fromkeys(p.algorithms + ("nomad",))),
                       default={**p.default, "nomad": p.default["dsgd"]} if isinstance(p.default, Mapping)
                       else p.default)
               if "dsgd" in p.algorithms and p.only_with != ("reg", "auto") else p for p in PARAMS) + (
    Param("blocks_per_rank", "int", 4, "item blocks per rank that circulate (more: finer load balance, more "
          "messages)", algorithms=("nomad",), low=1),
    Param("route", "choice", "least_loaded", "where a block goes next: least_loaded (the shortest queue among "
          "the ranks it has not visited this epoch) or cyclic (the next rank)", algorithms=("nomad",),
          choices=ROUTES),
    Param("extra_visits", "int", 1, "visits of a block to a rank beyond its first in an epoch, made while waiting "
          "for the epoch to end (0: exactly one, as in DSGD)", algorithms=("nomad",), low=0),
    Param("epoch_end", "choice", "coverage", "an epoch ends once every block has visited every rank (coverage) or "
          "once the ranks made as many visits as that takes (work: a slow rank does not hold it up, and its "
          "users get fewer updates)", algorithms=("nomad",), choices=ENDS),
)
BY_NAME = {param.name: param for param in PARAMS}


def of(algorithm: str) -> tuple[Param, ...]:
    """The parameters ``algorithm`` takes, in table order."""
    if algorithm not in ALGORITHMS:
        raise ArgumentError(f"unknown algorithm {algorithm!r}; expected one of {list(ALGORITHMS)}")
    return tuple(param for param in PARAMS if algorithm in param.algorithms)


def defaults(algorithm: str) -> dict:
    """``{name: default}`` of every parameter of ``algorithm``."""
    return {param.name: param.default_for(algorithm) for param in of(algorithm)}


def validate(algorithm: str, values: Mapping, labels: Mapping | None = None) -> dict:
    """Every parameter of ``algorithm`` checked and normalized, from ``values`` (defaults fill the gaps).

    ``labels`` name the parameters in messages (the command line passes its options);
    raises :class:`ArgumentError` at the first bad value.
    """
    out = {}
    for param in of(algorithm):
        value = values.get(param.name, param.default_for(algorithm))
        out[param.name] = param.check(value, algorithm, None if labels is None else labels.get(param.name))
    return out


def in_effect(param: Param, values: Mapping, algorithm: str) -> bool:
    """Whether ``param`` matters given the other ``values`` (defaults fill the gaps): see ``only_with``."""
    if algorithm not in param.algorithms:
        return False
    if param.only_with is None:
        return True
    other, needed = param.only_with
    return values.get(other, BY_NAME[other].default_for(algorithm)) == needed


def default_text(param: Param) -> str:
    """The default(s) in words: ``"0"``, or ``"als 50, ials 100, dsgd 50"``."""
    if isinstance(param.default, Mapping):
        return ", ".join(f"{a} {param.default[a]:g}" if isinstance(param.default[a], (int, float))
                         else f"{a} {param.default[a]}" for a in ALGORITHMS if a in param.algorithms)
    return str(param.default)


def docstring(algorithm: str) -> str:
    """The numpydoc "Parameters" section of ``algorithm``'s estimator."""
    types = {"int": "int", "float": "float", "bool": "bool", "reg": 'float or "auto"', "grid": "list of float",
             "path": "str or path", "callable": "callable", "choice": "str"}
    lines = ["Parameters", "----------"]
    for param in of(algorithm):
        kind = types[param.kind] if param.kind != "reg" or algorithm in AUTO else "float"
        if param.optional:
            kind += " or None"
        lines.append(f"{param.name} : {kind}, default {param.default_for(algorithm)!r}")
        lines.append(f"    {param.help[0].upper()}{param.help[1:]}; {param.allowed(algorithm)}.")
    return "\n".join(lines)


def signature(algorithm: str) -> inspect.Signature:
    """The keyword-only signature of ``algorithm``'s ``__init__``."""
    keyword = inspect.Parameter.KEYWORD_ONLY
    return inspect.Signature([inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)] +
                             [inspect.Parameter(p.name, keyword, default=p.default_for(algorithm))
                              for p in of(algorithm)])
