"""What every ``mpiml`` command line shares: one parser class, list types, rank-0 output.

Every subcommand builds its parser with :class:`Parser`, so that:

- a parse error raises :class:`UsageError` (the same on every rank, since every rank parses
  the same ``argv``) instead of printing usage and exiting on each rank; ``mpiml``'s
  entry point prints it as one ``mpiml: error:`` line on rank 0 and exits with status 2;
- a misspelled flag or choice gets "did you mean" suggestions (difflib);
- ``--help`` and ``--version`` print on rank 0 only;
- long options are never abbreviated (``--epoch`` is not taken for ``--epochs``);
- help shows each option's default.

The rank is read from the launcher's environment when MPI is not yet initialized, so
``--help`` stays fast and needs no MPI.
"""

from __future__ import annotations

import argparse
import difflib
import os
import sys
from pathlib import Path

from mpiml.errors import ArgumentError
from mpiml.runtime.progress import job_rank


class UsageError(ArgumentError):
    """A command line that cannot run; raised alike on every rank (collective by default)."""

    def __init__(self, message: str = "", *, collective: bool = True):
        super().__init__(message, collective=collective)


def on_root() -> bool:
    return job_rank() == 0


def report(exc: BaseException) -> int:
    """Print ``exc`` as the one ``mpiml: error:`` line (rank 0 only); the exit status, 2."""
    if on_root():
        print(f"mpiml: error: {exc}", file=sys.stderr, flush=True)
    return 2


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the epilog's layout and appends ``(default: X)`` to options whose help does not say it."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if (not action.option_strings or "default" in text or default in (None, False, argparse.SUPPRESS, [])
                or isinstance(action, (argparse._StoreConstAction, argparse._VersionAction))):
            return text
        return f"{text} (default: %(default)s)".lstrip()


def split_command(argv=None) -> tuple[list, list]:
    """``(options, command)``: the words before and after the first ``--`` (``argv`` default ``sys.argv[1:]``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv:
        return argv, []
    cut = argv.index("--")
    return argv[:cut], argv[cut + 1:]


def suggest(word: str, candidates) -> str:
    """``"; did you mean X?"`` for the candidates closest to ``word`` (dashes aside), or ``""``."""
    bare = {candidate.lstrip("-"): candidate for candidate in candidates}
    close = difflib.get_close_matches(word.lstrip("-"), list(bare), n=3, cutoff=0.6)
    return f"; did you mean {' or '.join(bare[c] for c in close)}?" if close else ""


class Parser(argparse.ArgumentParser):
    """The parser of every ``mpiml`` command (see the module docstring)."""

    def __init__(self, *args, allow_abbrev=False, formatter_class=HelpFormatter, **kwargs):
        super().__init__(*args, allow_abbrev=False, formatter_class=formatter_class, **kwargs)
        self.renamed: dict[str, str] = {}

    def rename(self, old: str, new: str) -> None:
        """Accept the 0.1 spelling ``old`` of option ``new`` for now, with a deprecation note (not in help)."""
        self.renamed[old] = new

    def parse_known_args(self, args=None, namespace=None):
        args = list(sys.argv[1:] if args is None else args)
        if self.renamed:
            args = self._respell(args)
        return super().parse_known_args(args, namespace)

    def _respell(self, args: list) -> list:
        out = []
        for i, word in enumerate(args):
            if word == "--":  # what follows is not ours (a job's command)
                return out + args[i:]
            flag, eq, value = word.partition("=")
            if flag in self.renamed:
                new = self.renamed[flag]
                if on_root():
                    print(f"mpiml: warning: {self.prog} {flag} is now {new}; the old spelling will go away",
                          file=sys.stderr, flush=True)
                word = new + eq + value
            out.append(word)
        return out

    def error(self, message):
        raise UsageError(f"{self.prog}: {message} (see `{self.prog} --help`)")

    def _print_message(self, message, file=None):
        if on_root():
            super()._print_message(message, file)

    def _check_value(self, action, value):
        if action.choices is not None and value not in action.choices:
            names = [str(choice) for choice in action.choices]
            raise argparse.ArgumentError(action, f"invalid choice {value!r} (choose from {', '.join(names)})"
                                         + suggest(str(value), names))

    def parse_args(self, args=None, namespace=None):
        namespace, extras = self.parse_known_args(args, namespace)
        if extras:
            chosen = _chosen(self, namespace)  # the subcommand whose options these were meant for
            known = [option for action in chosen._actions for option in action.option_strings]
            hints = "".join(suggest(word.split("=", 1)[0], known) for word in extras if word.startswith("-"))
            chosen.error(f"unrecognized arguments: {' '.join(extras)}{hints}")
        return namespace


def _chosen(parser, namespace):
    """The innermost subcommand parser that ``namespace`` chose (``parser`` itself if none)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            sub = action.choices.get(getattr(namespace, action.dest, None) or "")
            if sub is not None:
                return _chosen(sub, namespace)
    return parser


def comma_list(kind=str, *, minimum=None, maximum=None, choices=None, what=None):
    """An argparse type: a comma list of ``kind`` with no empty item (``2,,4`` is refused).

    ``minimum``/``maximum`` bound each number; ``choices`` lists the names allowed, and
    ``what`` names one of them in messages.
    """

    def parse(text: str) -> list:
        items = text.split(",")
        if any(not item.strip() for item in items):
            raise argparse.ArgumentTypeError(f"{text!r} has an empty item (give a comma list such as 2,4,8)")
        try:
            values = [kind(item.strip()) for item in items]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a comma list of {_kind_name(kind)}") from None
        for value in values:
            if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
                bounds = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
                raise argparse.ArgumentTypeError(f"{value} in {text!r} is not {bounds}")
            if choices is not None and value not in choices:
                raise argparse.ArgumentTypeError(f"unknown {what + ' ' if what else ''}{value!r} (choose from {', '.join(choices)})"
                                                 + suggest(str(value), choices))
        return list(dict.fromkeys(values))

    parse.__name__ = f"comma list of {_kind_name(kind)}"
    return parse


def sizes(text: str) -> list[int]:
    """An argparse type: byte sizes ``FROM:TO[:FACTOR]`` or a comma list, units K/M/G."""
    from mpiml.perf.sizes import parse_sizes

    if any(not part.strip() for part in str(text).split(",")):
        raise argparse.ArgumentTypeError(f"{text!r} has an empty item")
    try:
        return parse_sizes(text)
    except ArgumentError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _kind_name(kind) -> str:
    return {int: "integers", float: "numbers", str: "names"}.get(kind, getattr(kind, "__name__", "values"))


def count(text: str) -> int:
    """A whole number, also written as ``1e7``; an argparse type."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not value.is_integer():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number")
    return int(value)


def check_writable(path, flag: str) -> None:
    """Raise :class:`UsageError` unless ``path`` can be written (:func:`mpiml.cli.outputs.check_output`)."""
    from mpiml.cli.outputs import check_output

    check_output(path, flag)


def option_spellings(parser) -> set[str]:
    """Every option string of ``parser`` and its subcommands (for documentation checks)."""
    found = set()
    for action in parser._actions:
        found.update(action.option_strings)
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found |= option_spellings(sub)
    return found

