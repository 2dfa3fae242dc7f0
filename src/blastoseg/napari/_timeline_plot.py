"""The count-and-stage plot of the "Count and timeline" widget (matplotlib in Qt): count
estimates per frame (dots), the decoded stage (a step line), the division events (dashed
lines labelled t2 ... t8) and the displayed frame; a click jumps to the clicked frame."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np


class TimelinePlot:
    """Lives in ``box`` (a magicgui Container); ``on_frame(frame)`` is called on a click."""

    def __init__(self, box, on_frame: Callable[[int], None]) -> None:
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.box = box
        self.on_frame = on_frame
        self.figure = Figure(figsize=(3.6, 2.4), dpi=100, layout="constrained")
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(200)
        self.axes = self.figure.add_subplot(111)
        self.frames = np.zeros(0)
        self._current = None
        box.native.layout().addWidget(self.canvas)
        self.canvas.mpl_connect("button_press_event", self._clicked)

    def draw(self, frames: np.ndarray, estimates: np.ndarray, stages: np.ndarray | None,
             event_frames: Mapping[str, int | None], current: int,
             xlabel: str = "frame") -> None:
        """Plot one run (``stages`` None: a single frame, no stage line)."""
        ax = self.axes
        ax.clear()
        self.frames = np.asarray(frames)
        ax.plot(frames, estimates, "o", ms=3, color="tab:blue", alpha=0.6, label="count")
        if stages is not None:
            ax.step(frames, stages, where="post", color="tab:red", lw=1.5, label="stage")
        top = max(float(np.max(estimates, initial=1)), float(np.max(stages, initial=1))
                  if stages is not None else 1.0)
        for name, f in event_frames.items():
            if f is None:
                continue
            ax.axvline(f, color="0.4", lw=0.8, ls="--")
            ax.text(f, top + 0.6, name, rotation=90, fontsize=7, ha="right", va="top")
        self._current = ax.axvline(current, color="tab:orange", lw=1)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("cells")
        ax.set_ylim(0, top + 1)
        ax.yaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=7, frameon=False)
        self.box.visible = True
        self.canvas.draw_idle()

    def mark(self, current: int) -> None:
        """Move the displayed-frame line."""
        if self._current is not None:
            self._current.set_xdata([current, current])
            self.canvas.draw_idle()

    def _clicked(self, event) -> None:
        if event.inaxes is not self.axes or event.xdata is None or not len(self.frames):
            return
        self.on_frame(int(self.frames[np.argmin(np.abs(self.frames - event.xdata))]))
