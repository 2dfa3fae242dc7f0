"""What the docs/make_*_screenshots.py scripts share: a throw-away blastoseg home (widget
settings land there, not in the user's), a napari window of a fixed size, waiting for a
worker while Qt keeps drawing, closing napari's pop-ups and writing a window's picture to
docs/images/. The scripts run as ``python docs/make_..._screenshots.py``, so this module is
importable beside them."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

#: where the pictures go (the docs refer to them there)
OUT = Path(__file__).parent / "images"


def throwaway_home(prefix: str) -> Path:
    """A new temporary folder; BLASTOSEG_HOME points into it (``<tmp>/home``) so that the
    widgets' saved settings of the user do not change the pictures. Bundled models stay
    available. Call before blastoseg reads the variable."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    os.environ["BLASTOSEG_HOME"] = str(tmp / "home")
    return tmp


def settle(n: int = 20, pause: float = 0.05) -> None:
    """Let Qt lay out and draw (matplotlib docks included) for ``n`` rounds."""
    from qtpy.QtWidgets import QApplication

    for _ in range(n):
        QApplication.processEvents()
        time.sleep(pause)


def wait(until, timeout: float, what: str) -> None:
    """Keep Qt going until ``until()`` is true; exit naming ``what`` after ``timeout`` s."""
    from qtpy.QtWidgets import QApplication

    end = time.time() + timeout
    while not until() and time.time() < end:
        QApplication.processEvents()
        time.sleep(0.05)
    if not until():
        raise SystemExit(f"timed out waiting for {what}")


def close_toasts() -> None:
    """Close napari's notification pop-ups (they cover the canvas)."""
    from napari._qt.dialogs.qt_notification import NapariQtNotification
    from qtpy.QtWidgets import QApplication

    for w in QApplication.allWidgets():
        if isinstance(w, NapariQtNotification):
            w.close()


def open_viewer(width: int = 1400, height: int = 1000):
    """A shown napari viewer whose window is ``width`` x ``height`` px."""
    import napari

    viewer = napari.Viewer(show=True)
    viewer.window.resize(width, height)
    return viewer


def save_shot(viewer, name: str) -> Path:
    """Write the whole window (docks included) to docs/images/``name``."""
    OUT.mkdir(exist_ok=True)
    path = OUT / name
    img = viewer.screenshot(path=str(path), canvas_only=False, flash=False)
    print("wrote", path, img.shape)
    return path
