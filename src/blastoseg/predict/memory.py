"""Will it fit? The free memory of the machine and a clear refusal of work that needs more.

A prediction whose arrays cannot fit must be refused with what it needs and what to try,
before the work where the need is known from the input's size, and as soon as it is known
otherwise (e.g. the masks of cells not found yet) - never by dying in a 260 GiB allocation
after minutes of work (issue 18, item 15).
"""

from __future__ import annotations

import os

from blastoseg.errors import MemoryLimitError

__all__ = ["available_memory", "check_fits", "format_bytes"]


def available_memory() -> int | None:
    """Bytes the machine can still hand out without swapping (psutil's ``available``, else
    Linux ``MemAvailable``); None when unknown (then nothing is refused)."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:  # noqa: BLE001 - psutil missing or unsupported here
        pass
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def format_bytes(n: float) -> str:
    """``1.5 GiB``-style size."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover - unreachable


def check_fits(need: int, what: str, hint: str) -> None:
    """Raise :class:`~blastoseg.errors.MemoryLimitError` when ``need`` bytes exceed the free
    memory: "<what> needs <need> but only <free> is free; <hint>"."""
    free = available_memory()
    if free is not None and need > free:
        raise MemoryLimitError(f"{what} needs {format_bytes(need)} but only "
                               f"{format_bytes(free)} of memory is free; {hint}")
