"""The colours of cells in label layers: a palette in which neighbours stay distinct.

napari's default label colours are random: in a 16-cell embryo two cells could get
near-identical colours (labels 2 and 16 both light blue, 7 and 8 both grey) and some were
almost black on the dark side of an image (issue 18 item 8). Label values are a frame's cell
numbers (1, 2, ...) or track ids + 1, so the cells of one embryo take the first colours of
the palette: 16 saturated colours, each pair at least 31 CIELAB units apart (clearly
different), all mid-tones (L* 45 to 78), so an outline shows on a dark and on a bright image.
Values beyond 16 repeat the palette (napari's cyclic label colormap).
"""

from __future__ import annotations

__all__ = ["CELL_COLOURS", "cell_colormap"]

#: red, green, blue and orange (Trubetskoy's distinct colours), then each colour chosen
#: greedily for the largest smallest CIELAB distance to those before, among saturated
#: (chroma >= 45) mid-tones (45 <= L* <= 78)
CELL_COLOURS = (
    "#e6194b", "#3cb44b", "#4363d8", "#f58231", "#ff00ff", "#00bfff", "#ff80d5", "#8c8215",
    "#00d9b5", "#ff1500", "#884dff", "#00d900", "#d96c7e", "#ff0095", "#ca80ff", "#86b200",
)


def cell_colormap():
    """napari's cyclic label colormap over :data:`CELL_COLOURS` (label 0 transparent)."""
    import numpy as np
    from napari.utils.colormaps import CyclicLabelColormap
    from napari.utils.colormaps.standardize_color import transform_color

    colours = np.concatenate([[[0.0, 0.0, 0.0, 0.0]], transform_color(list(CELL_COLOURS))])
    return CyclicLabelColormap(colors=colours, name="blastoseg cells")
