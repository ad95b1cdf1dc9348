"""What every benchmark measures besides wall time: this process's CPU seconds and its peak
resident memory, with a way to start a new peak window so building the inputs does not count;
the machine's load around a run (other work on the cores skews every figure); and the plain
table the results are printed in.

Imported as ``from measure import ...``: benchmarks run as scripts, with this folder on the path.
"""

from __future__ import annotations

import contextlib
import gc
import os
import resource
import sys
from collections.abc import Sequence
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


def load_average() -> str:
    """The 1- and 5-minute load averages beside the core count, printed before and after a run."""
    one, five, _ = os.getloadavg()
    return f"{one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} CPUs"


def print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Columns padded to their widest cell: the first left-aligned, the figures right-aligned."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            f"{cell:<{w}}" if i == 0 else f"{cell:>{w}}"
            for i, (cell, w) in enumerate(zip(cells, widths, strict=True))
        )

    print(line(header))
    print("-" * len(line(header)))
    for row in rows:
        print(line(row))
