"""``--timeout SECONDS`` of the commands that train: the watchdog's limit on one collective call."""

from __future__ import annotations

import argparse
import os

from mpiml.runtime.watchdog import DEFAULT_COMMAND_TIMEOUT, EXIT_TIMEOUT, TIMEOUT_ENV


def seconds(text) -> float:
    """A ``--timeout`` value: seconds >= 0 (0: no timeout)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected seconds >= 0 (0: none), got {text!r}")
    return value


def add_argument(group) -> None:
    """``--timeout SECONDS`` (default: ``MPIML_TIMEOUT``, else 30 min)."""
    group.add_argument("--timeout", type=seconds, metavar="SECONDS",
                       default=os.environ.get(TIMEOUT_ENV, "").strip() or str(DEFAULT_COMMAND_TIMEOUT),
                       help="a collective not finished after this long prints every rank's stack and ends "
                            f"the job (exit status {EXIT_TIMEOUT}); 0: never (default: ${TIMEOUT_ENV}, "
                            f"else {DEFAULT_COMMAND_TIMEOUT:g})")
