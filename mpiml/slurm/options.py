"""Validation of ``#SBATCH`` option values before they are written into a job script.

Every check returns the value as it will be written (a string) or raises
:class:`~mpiml.errors.ArgumentError` naming the option. Quoting happens later,
in :mod:`mpiml.slurm.render`; the checks here reject what quoting cannot make safe
(control characters end a ``#SBATCH`` line, and sbatch's own parser drops backslashes)
and what Slurm would reject only after the job has waited in the queue.
"""

from __future__ import annotations

import re

from mpiml.errors import ArgumentError

COUNT_OPTIONS = ("nodes", "ntasks", "ntasks-per-node", "cpus-per-task")

_NAME = re.compile(r"[a-z][a-z0-9-]*\Z")
_TIME_DAYS = re.compile(r"(\d+)-(\d+)(?::(\d+)(?::(\d+))?)?\Z")
_TIME_CLOCK = re.compile(r"(\d+)(?::(\d+)(?::(\d+))?)?\Z")
_ARRAY = re.compile(r"\d+(-\d+(:\d+)?)?(,\d+(-\d+(:\d+)?)?)*(%\d+)?\Z")
_JOB_IDS = r"(:\d+(_\d+)?(\+\d+)?)+"
_DEPENDENCY = re.compile(
    rf"((after|afterany|afterok|afternotok|aftercorr){_JOB_IDS}|singleton)"
    rf"([,?]((after|afterany|afterok|afternotok|aftercorr){_JOB_IDS}|singleton))*\Z")
_SIGNAL = re.compile(r"(R?B?:)?(SIG)?[A-Z0-9]+(@\d+)?\Z")


def check_text(option: str, value) -> str:
    """Any value: a string without control characters or backslashes."""
    text = str(value)
    bad = [c for c in text if ord(c) < 32 or ord(c) == 127 or c == "\\"]
    if bad:
        raise ArgumentError(f"--{option}: {text!r} contains {bad[0]!r} (control characters and backslashes "
                            "are not allowed in #SBATCH values)")
    if not text:
        raise ArgumentError(f"--{option}: empty value")
    return text


def check_count(option: str, value) -> str:
    """A positive whole number (``--nodes``, ``--ntasks``, ...)."""
    text = str(value).strip()
    if not text.isdigit() or int(text) < 1:
        raise ArgumentError(f"--{option}: expected a positive whole number, got {value!r}")
    return str(int(text))


def time_seconds(value) -> int:
    """Seconds in a Slurm time limit; raises ArgumentError on a malformed one.

    Accepted (as in ``sbatch --time``): ``M``, ``M:S``, ``H:M:S``, ``D-H``, ``D-H:M``,
    ``D-H:M:S``.
    """
    text = str(value).strip()
    days = _TIME_DAYS.match(text)
    clock = _TIME_CLOCK.match(text)
    if days:
        d, h, m, s = (int(g) if g else 0 for g in days.groups())
        fields_ok = h < 24 and m < 60 and s < 60
    elif clock:
        parts = [int(g) for g in clock.groups() if g is not None]
        d = 0
        h, m, s = (0, parts[0], 0) if len(parts) == 1 else (0, *parts) if len(parts) == 2 else parts
        fields_ok = s < 60 and (len(parts) < 3 or m < 60)
    else:
        fields_ok = False
    if not fields_ok:
        raise ArgumentError(f"--time: {value!r} is not a Slurm time (M, M:S, H:M:S, D-H, D-H:M or D-H:M:S, "
                            "with minutes and seconds below 60 and hours below 24 after a day count)")
    total = ((d * 24 + h) * 60 + m) * 60 + s
    if total == 0:
        raise ArgumentError(f"--time: {value!r} is zero")
    return total


def check_time(option: str, value) -> str:
    time_seconds(value)
    return str(value).strip()


def _pattern_check(pattern, what):
    def check(option: str, value) -> str:
        text = check_text(option, value)
        if not pattern.match(text):
            raise ArgumentError(f"--{option}: {text!r} is not {what}")
        return text
    return check


CHECKS = {
    **{name: check_count for name in COUNT_OPTIONS},
    "time": check_time,
    "array": _pattern_check(_ARRAY, "an array range such as 0-9, 1,3,5 or 0-99%10"),
    "dependency": _pattern_check(_DEPENDENCY, "a dependency such as afterok:1234"),
    "signal": _pattern_check(_SIGNAL, "a signal such as B:USR1@120"),
}


def check_option(name: str, value) -> str | None:
    """Validate one option; ``None`` stands for a flag without a value (``--requeue``)."""
    if not _NAME.match(name):
        raise ArgumentError(f"{name!r} is not an sbatch long option name (lowercase letters, digits, '-')")
    if value is None:
        return None
    return CHECKS.get(name, check_text)(name, value)


def check_signal_before_limit(options: dict) -> None:
    """A ``--signal=...@secs`` warning must come after the job starts, i.e. secs < --time."""
    signal, limit = options.get("signal"), options.get("time")
    if signal and limit and "@" in signal and int(signal.rsplit("@", 1)[1]) >= time_seconds(limit):
        raise ArgumentError(f"--signal={signal}: the warning would come before the job starts "
                            f"(time limit {limit} is {time_seconds(limit)} s)")
