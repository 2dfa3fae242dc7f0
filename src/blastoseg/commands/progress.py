"""A progress callback for the terminal."""

from __future__ import annotations

import sys
from collections.abc import Callable


def progress_printer(label: str) -> Callable[[int, int], None]:
    """A progress callback that redraws one line on stderr (quiet when not a terminal)."""
    interactive = sys.stderr.isatty()

    def report(done: int, total: int) -> None:
        if interactive:
            width = 30
            filled = int(width * done / max(total, 1))
            bar = "#" * filled + "-" * (width - filled)
            end = "\n" if done >= total else ""
            print(f"\r{label} [{bar}] {done}/{total}", end=end, file=sys.stderr, flush=True)
        elif done >= total:
            print(f"{label}: {done}/{total} done", file=sys.stderr)

    return report
