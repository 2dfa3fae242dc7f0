"""Per-thread capture of stdout and stderr, for the verbs a batch worker runs.

The verbs print (model, progress, files written). A dask worker may run several embryos at
once in threads of one process, and ``contextlib.redirect_stdout`` swaps the stream of the
whole process, so two embryos would swap each other's. Instead the process's streams are
replaced once by a router that sends each thread's writes to that thread's log, and the
writes of other threads to the original stream.
"""

from __future__ import annotations

import io
import sys
import threading
from contextlib import contextmanager

__all__ = ["captured_output"]

_local = threading.local()
_install_lock = threading.Lock()


class _ThreadRouter(io.TextIOBase):
    def __init__(self, original) -> None:
        self.original = original

    def _target(self):
        return getattr(_local, "buffer", None) or self.original

    def write(self, text: str) -> int:
        return self._target().write(text)

    def flush(self) -> None:
        self._target().flush()

    def isatty(self) -> bool:  # progress bars redraw only on terminals
        return False if getattr(_local, "buffer", None) else self.original.isatty()


def _install() -> None:
    with _install_lock:
        for name in ("stdout", "stderr"):
            stream = getattr(sys, name)
            if not isinstance(stream, _ThreadRouter):
                setattr(sys, name, _ThreadRouter(stream))


@contextmanager
def captured_output():
    """``with captured_output() as log: ...``: what this thread prints goes to ``log`` (a
    StringIO), both stdout and stderr."""
    _install()
    log = io.StringIO()
    previous = getattr(_local, "buffer", None)
    _local.buffer = log
    try:
        yield log
    finally:
        _local.buffer = previous
