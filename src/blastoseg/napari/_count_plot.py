"""The cell-count-over-time plot of the Measure widget (matplotlib in Qt)."""

from __future__ import annotations


class CountPlot:
    """A step plot of cells per frame with the displayed frame marked; lives in ``box``."""

    def __init__(self, box) -> None:
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.box = box
        self.figure = Figure(figsize=(3.2, 1.8), dpi=100, layout="constrained")
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(150)
        self.axes = self.figure.add_subplot(111)
        box.native.layout().addWidget(self.canvas)

    def draw(self, counts: dict[int, int], current: int) -> None:
        """``counts``: frame -> cell count; hidden for a single frame."""
        ax = self.axes
        ax.clear()
        frames = sorted(counts)
        self.box.visible = len(frames) > 1
        if len(frames) > 1:
            values = [counts[t] for t in frames]
            ax.step(frames, values, where="mid", color="tab:blue")
            ax.axvline(current, color="tab:orange", lw=1)
            ax.set_xlabel("frame")
            ax.set_ylabel("cells")
            ax.set_ylim(0, max(values + [1]) + 1)
            ax.yaxis.get_major_locator().set_params(integer=True)
            ax.grid(alpha=0.3)
        self.canvas.draw_idle()
