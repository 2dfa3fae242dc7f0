"""Progress from generator-style work (a plain generator that yields ``(done, total)`` and
returns its result), the pattern every long computation here follows so that a CLI can
print a bar, a napari worker can update its progress bar and Cancel can stop between steps."""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import TypeVar

T = TypeVar("T")


def run_with_progress(work: Generator[tuple[int, int], None, T],
                      progress: Callable[[int, int], None] | None = None) -> T:
    """Drive ``work`` to the end, reporting each ``(done, total)``; return its result."""
    while True:
        try:
            done, total = next(work)
        except StopIteration as stop:
            return stop.value
        if progress is not None:
            progress(done, total)
