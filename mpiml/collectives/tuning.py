"""Tuning files: the measured winner per collective, rank count and size range.

``mpiml tune`` writes one; ``algorithm="auto"`` reads it (see
:mod:`mpiml.collectives.select`). The format is JSON::

    {"format": "mpiml-tuning", "version": 1,
     "params": {"alpha": 1e-6, ...},                 # calibrated ModelParams (optional)
     "rules": {"allreduce": {"2": [{"min_bytes": 0, "algorithm": "native"},
                                   {"min_bytes": 24576, "algorithm": "recursive_doubling"}, ...]}},
     ...}                                           # anything else (measurements) is ignored here

Each rule list is sorted by ``min_bytes`` starting at 0; a rule holds from its
``min_bytes`` up to the next rule's. Only the rank counts listed have rules; other rank
counts fall back to the model with the file's ``params``.
"""

from __future__ import annotations

import bisect
import json
from dataclasses import dataclass, field

from mpiml.collectives.model import ModelParams
from mpiml.errors import ArgumentError

FORMAT = "mpiml-tuning"
VERSION = 1


@dataclass(frozen=True)
class Tuning:
    """A parsed tuning file: per (collective, p) the starts of size ranges and their winners."""

    rules: dict = field(default_factory=dict)   # (collective, p) -> (tuple of min_bytes, tuple of names)
    params: ModelParams | None = None
    source: str = ""

    def lookup(self, collective: str, nbytes: int, p: int) -> str | None:
        """The recorded winner for this size and rank count, or None where nothing was measured."""
        rule = self.rules.get((collective, p))
        if rule is None:
            return None
        starts, names = rule
        return names[max(bisect.bisect_right(starts, nbytes) - 1, 0)]


def parse_tuning(document: dict, algorithms: dict, source: str = "<tuning>") -> Tuning:
    """Validate a tuning document against the known ``algorithms`` (collective -> names)."""
    def bad(why):
        return ArgumentError(f"{source}: not a valid mpiml tuning file: {why}")

    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise bad(f"'format' must be {FORMAT!r}")
    if document.get("version") != VERSION:
        raise bad(f"unsupported version {document.get('version')!r} (this mpiml reads {VERSION})")
    params = None
    if document.get("params") is not None:
        try:
            params = ModelParams.from_dict(dict(document["params"]))
        except (TypeError, ValueError) as exc:
            raise bad(f"params: {exc}") from None
    rules = {}
    for collective, by_size in dict(document.get("rules") or {}).items():
        if collective not in algorithms:
            raise bad(f"unknown collective {collective!r}")
        for p_text, entries in dict(by_size).items():
            try:
                p = int(p_text)
                starts = [int(entry["min_bytes"]) for entry in entries]
                names = [str(entry["algorithm"]) for entry in entries]
            except (KeyError, TypeError, ValueError) as exc:
                raise bad(f"rules.{collective}.{p_text}: {exc!r}") from None
            if p < 1 or not starts or starts[0] != 0 or starts != sorted(set(starts)):
                raise bad(f"rules.{collective}.{p_text}: min_bytes must start at 0 and increase")
            unknown = [name for name in names if name not in algorithms[collective]]
            if unknown:
                raise bad(f"rules.{collective}.{p_text}: unknown algorithm(s) {unknown}")
            rules[(collective, p)] = (tuple(starts), tuple(names))
    return Tuning(rules, params, source)


def read_document(path) -> dict:
    """The JSON of a tuning file, unvalidated (an :class:`ArgumentError` names the file if it cannot be read)."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except OSError as exc:
        raise ArgumentError(f"cannot read tuning file {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ArgumentError(f"{path}: not a valid mpiml tuning file: {exc}") from None


def load_tuning(path, algorithms: dict) -> Tuning:
    """Read and validate a tuning file (an :class:`ArgumentError` names the file if it is bad)."""
    return parse_tuning(read_document(path), algorithms, str(path))


def rules_document(rules: dict) -> dict:
    """``{(collective, p): [(min_bytes, name), ...]}`` as the JSON ``rules`` object."""
    document: dict = {}
    for (collective, p), ranges in sorted(rules.items()):
        document.setdefault(collective, {})[str(p)] = [
            {"min_bytes": int(start), "algorithm": name} for start, name in ranges]
    return document


def check_environment(environ=None) -> Tuning | None:
    """The tuning file named by ``MPIML_TUNING`` (None when unset), read now, before any work.

    A missing or invalid file is an :class:`ArgumentError` naming the variable, marked
    collective: every rank of a job sees the same environment and reads the same file, so
    each raises it alike and the commands end with one ``mpiml: error:`` line, exit status 2,
    instead of a traceback on every rank at the first ``auto`` decision.
    """
    import os

    from mpiml.collectives.registry import ALGORITHMS

    path = (os.environ if environ is None else environ).get("MPIML_TUNING", "")
    if not path:
        return None
    try:
        return load_tuning(path, ALGORITHMS)
    except ArgumentError as exc:
        raise ArgumentError(f"MPIML_TUNING: {exc}", collective=True) from None
