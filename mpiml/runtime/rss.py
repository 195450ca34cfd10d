"""Peak resident memory of this process (what ``--json`` reports as ``peak_rss_bytes``)."""

from __future__ import annotations

import sys


def peak_rss_bytes() -> int:
    """The largest resident set this process has had, in bytes (0 where the OS does not say)."""
    try:
        import resource
    except ImportError:  # not on POSIX
        return 0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)   # macOS counts bytes, Linux KiB
