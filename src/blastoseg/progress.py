"""Progress from generator-style work (a plain generator that yields ``(done, total)`` and
returns its result), the pattern every long computation here follows so that a CLI can
print a bar, a napari worker can update its progress bar and Cancel can stop between steps."""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import TypeVar

from blastoseg.errors import BlastosegError

T = TypeVar("T")


class Cancelled(BlastosegError):
    """Work stopped because its ``cancel`` callback said so."""


def with_message(work: Generator[tuple[int, int], None, T], message: str
                 ) -> Generator[tuple[str, int, int], None, T]:
    """Relay ``work``'s ``(done, total)`` steps as ``(message, done, total)`` (what the napari
    jobs yield) and return its result: ``result = yield from with_message(work, msg)``."""
    while True:
        try:
            done, total = next(work)
        except StopIteration as stop:
            return stop.value
        yield message, done, total


def run_with_progress(work: Generator[tuple[int, int], None, T],
                      progress: Callable[[int, int], None] | None = None,
                      cancel: Callable[[], bool] | None = None) -> T:
    """Drive ``work`` to the end, reporting each ``(done, total)``; return its result.

    ``cancel()`` is asked before the first step and after each unfinished one; when it
    returns True the work is closed and :class:`Cancelled` is raised (nothing half-done is
    returned)."""
    if cancel is not None and cancel():
        work.close()
        raise Cancelled("cancelled before it started")
    while True:
        try:
            done, total = next(work)
        except StopIteration as stop:
            return stop.value
        if progress is not None:
            progress(done, total)
        if cancel is not None and done < total and cancel():
            work.close()
            raise Cancelled(f"cancelled after {done} of {total}")
