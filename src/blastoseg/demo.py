"""``blastoseg demo``: the main job on a synthetic cleaving-embryo time-lapse.

It generates a time-lapse, writes it in the dataset format and as a TIFF stack, measures
every frame (count, blastomere sizes, size symmetry, overlap) and writes tables and an
overview. Until a segmentation model ships, the measurements come from the generator's
ground-truth masks, and the table says so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import tifffile

from blastoseg.io.dataset import Sample, write_dataset
from blastoseg.measure import EmbryoMeasurements, measure_stack, write_measurements_csv
from blastoseg.overlay import draw_outlines, montage
from blastoseg.synth import EmbryoConfig, SynthTimelapse, render_timelapse


@dataclass
class DemoResult:
    out_dir: Path
    timelapse: SynthTimelapse
    per_frame: list[EmbryoMeasurements]
    source: str
    outputs: dict[str, Path] = field(default_factory=dict)


def run_demo(
    out_dir: str | Path,
    n_frames: int = 24,
    seed: int = 7,
    progress: Callable[[int, int], None] | None = None,
) -> DemoResult:
    """Generate, measure and save a synthetic time-lapse; returns the per-frame measurements."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = EmbryoConfig()
    lapse = render_timelapse(n_frames, seed=seed, config=config)
    if progress:
        progress(1, 3)
    pixel = lapse.meta.get("pixel_size_um")
    samples = [
        Sample(
            image=lapse.images[t],
            instances=lapse.frames[t],
            file_name=f"images/frame_{t:04d}.png",
            video_id=1,
            frame_index=t,
            pixel_size_um=pixel,
        )
        for t in range(n_frames)
    ]
    outputs: dict[str, Path] = {}
    outputs["dataset"] = write_dataset(out / "dataset", samples, overwrite=True)
    stack_path = out / "timelapse.tif"
    # ImageJ hyperstack with the pixel size, so Fiji and napari show micrometres
    tifffile.imwrite(
        stack_path, lapse.images, imagej=True, metadata={"axes": "TYX", "unit": "um"},
        resolution=(1 / pixel, 1 / pixel) if pixel else None,
    )
    outputs["stack"] = stack_path
    if progress:
        progress(2, 3)
    per_frame, per_cell = measure_stack(lapse.frames, pixel_size_um=pixel)
    outputs["per_frame_csv"] = write_measurements_csv(per_frame, out / "per_frame.csv")
    outputs["per_cell_csv"] = write_measurements_csv(per_cell, out / "per_cell.csv")
    picks = np.unique(np.linspace(0, n_frames - 1, min(8, n_frames)).round().astype(int))
    tiles = [draw_outlines(lapse.images[t], lapse.frames[t], thickness=2) for t in picks]
    overview = out / "overview.png"
    iio.imwrite(overview, montage(tiles, columns=4))
    outputs["overview"] = overview
    if progress:
        progress(3, 3)
    return DemoResult(out, lapse, per_frame, source="synthetic ground truth", outputs=outputs)


def format_table(result: DemoResult) -> str:
    """A short per-frame table for the terminal."""
    hours = result.timelapse.meta.get("hours")
    cleavages = set(result.timelapse.cleavage_frames)
    unit = "um" if result.per_frame and result.per_frame[0].mean_diameter_um is not None else "px"
    lines = [
        f"per-frame measurements ({result.source}; a segmentation model replaces it in later versions)",
        f"{'frame':>5} {'hours':>6} {'cells':>5} {'mean diam ' + unit:>13} {'diam CV':>8} "
        f"{'overlap %':>9}  event",
    ]
    for m in result.per_frame:
        h = f"{hours[m.frame]:.1f}" if hours is not None else "-"
        d = m.mean_diameter_um if unit == "um" else m.mean_diameter_px
        event = "cleavage" if m.frame in cleavages else ""
        lines.append(
            f"{m.frame:>5} {h:>6} {m.cell_count:>5} {d:>13.1f} {m.diameter_cv:>8.3f} "
            f"{100 * m.overlap_fraction:>9.1f}  {event}"
        )
    return "\n".join(lines)
