"""What every benchmark measures besides wall time: this process's CPU seconds and its peak
resident memory, with a way to start a new peak window so building the inputs does not count.

Imported as ``from measure import ...``: benchmarks run as scripts, with this folder on the path.
"""

from __future__ import annotations

import contextlib
import gc
import resource
import sys
from pathlib import Path


def cpu_s() -> float:
    """CPU seconds this process has used (user + system); wall time far above it means other
    processes had the cores."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def reset_peak_rss() -> None:
    """Start a new peak-RSS window (Linux: ``5 > /proc/self/clear_refs``)."""
    gc.collect()
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def peak_rss_mib() -> float:
    """Peak resident memory since the last :func:`reset_peak_rss` (or since the start)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024
