"""The header every benchmark results file carries: command, versions, machine, load, time.

Shared by every script in ``benchmarks/`` (import it as ``from _env import environment``
after putting this folder on ``sys.path``, which running a script here does).
"""
from __future__ import annotations

import os
import platform
import time
from importlib import metadata

__all__ = ["environment", "RESULTS"]

#: where results go by default: ``benchmarks/results`` next to these scripts
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "absent"


def environment(command: str) -> str:
    """Markdown lines: the exact command, package versions, CPU, cores, load, UTC time."""
    versions = ", ".join(f"{p} {_version(p)}" for p in
                         ("autorec", "torch", "numpy", "scipy", "pandas", "implicit"))
    try:
        load = "load %.2f %.2f %.2f" % os.getloadavg()
    except OSError:
        load = "load unknown"
    return (f"Command: `{command}`\n\nPython {platform.python_version()}, {versions}; "
            f"{_cpu()}, {os.cpu_count()} cores, {load}; "
            f"run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.\n")
