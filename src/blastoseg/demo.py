"""``blastoseg demo``: the main job on a synthetic cleaving-embryo time-lapse.

It generates a time-lapse with known ground truth, segments every frame with the amodal
model (bundled ``amodal-default`` unless another is named), measures each frame (count,
blastomere sizes, size symmetry, overlap), writes the results (an editable dataset folder,
a TIFF stack, CSV tables, an overview with outlines) and prints a per-frame table with the
true cell count beside the predicted one. If no amodal model is available, it measures the
generator's ground truth instead and says so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import tifffile

from blastoseg.errors import BlastosegError
from blastoseg.instances import FrameInstances
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
    predicted: list[FrameInstances] | None = None
    outputs: dict[str, Path] = field(default_factory=dict)


def _segment(images: np.ndarray, model: str, progress) -> tuple[list[FrameInstances], str] | None:
    from blastoseg.weights import get_model

    try:
        get_model(model)
    except BlastosegError:
        return None
    from blastoseg.predict.base import load_predictor

    predictor = load_predictor(model, "auto", kind="amodal")
    frames = predictor.predict(images, progress=progress)
    return frames, f"model {predictor.entry.name} on {predictor.device_name}"


def run_demo(
    out_dir: str | Path,
    n_frames: int = 24,
    seed: int = 7,
    model: str = "amodal-default",
    progress: Callable[[int, int], None] | None = None,
) -> DemoResult:
    """Generate, segment, measure and save a synthetic time-lapse."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lapse = render_timelapse(n_frames, seed=seed, config=EmbryoConfig())
    pixel = lapse.meta.get("pixel_size_um")
    total = n_frames + 2

    def seg_progress(done: int, _total: int) -> None:
        if progress:
            progress(1 + done, total)

    if progress:
        progress(1, total)
    segmented = _segment(lapse.images, model, seg_progress)
    frames, source = segmented if segmented else (lapse.frames, "synthetic ground truth; "
                                                  f"no model {model!r} installed")
    outputs: dict[str, Path] = {}
    samples = [
        Sample(image=lapse.images[t], instances=frames[t], file_name=f"images/frame_{t:04d}.png",
               video_id=1, frame_index=t, pixel_size_um=pixel)
        for t in range(n_frames)
    ]
    outputs["dataset"] = write_dataset(out / "dataset", samples, overwrite=True)
    if segmented:
        outputs["ground_truth"] = _write_truth(out / "ground_truth", lapse, pixel)
    stack_path = out / "timelapse.tif"
    # ImageJ hyperstack with the pixel size, so Fiji and napari show micrometres
    tifffile.imwrite(stack_path, lapse.images, imagej=True, metadata={"axes": "TYX", "unit": "um"},
                     resolution=(1 / pixel, 1 / pixel) if pixel else None)
    outputs["stack"] = stack_path
    per_frame, per_cell = measure_stack(frames, pixel_size_um=pixel)
    outputs["per_frame_csv"] = write_measurements_csv(per_frame, out / "per_frame.csv")
    if per_cell:
        outputs["per_cell_csv"] = write_measurements_csv(per_cell, out / "per_cell.csv")
    picks = np.unique(np.linspace(0, n_frames - 1, min(8, n_frames)).round().astype(int))
    tiles = [draw_outlines(lapse.images[t], frames[t], thickness=2) for t in picks]
    overview = out / "overview.png"
    iio.imwrite(overview, montage(tiles, columns=4))
    outputs["overview"] = overview
    if progress:
        progress(total, total)
    return DemoResult(out, lapse, per_frame, source=source,
                      predicted=frames if segmented else None, outputs=outputs)


def _write_truth(folder: Path, lapse: SynthTimelapse, pixel: float | None) -> Path:
    """The generator's ground truth as its own dataset (images written again, so the folder
    is self-contained and `blastoseg eval amodal --data` works on it)."""
    samples = [Sample(image=lapse.images[t], instances=lapse.frames[t],
                      file_name=f"images/frame_{t:04d}.png", video_id=1, frame_index=t,
                      pixel_size_um=pixel) for t in range(len(lapse.frames))]
    return write_dataset(folder, samples, overwrite=True)


def format_table(result: DemoResult) -> str:
    """A short per-frame table for the terminal."""
    hours = result.timelapse.meta.get("hours")
    cleavages = set(result.timelapse.cleavage_frames)
    truth = [f.count for f in result.timelapse.frames]
    unit = "um" if result.per_frame and result.per_frame[0].mean_diameter_um is not None else "px"
    lines = [
        f"per-frame measurements ({result.source})",
        f"{'frame':>5} {'hours':>6} {'cells':>5} {'true':>5} {'mean diam ' + unit:>13} "
        f"{'diam CV':>8} {'overlap %':>9}  event",
    ]
    for m in result.per_frame:
        h = f"{hours[m.frame]:.1f}" if hours is not None else "-"
        d = m.mean_diameter_um if unit == "um" else m.mean_diameter_px
        event = "cleavage" if m.frame in cleavages else ""
        lines.append(
            f"{m.frame:>5} {h:>6} {m.cell_count:>5} {truth[m.frame]:>5} {d:>13.1f} "
            f"{m.diameter_cv:>8.3f} {100 * m.overlap_fraction:>9.1f}  {event}"
        )
    if result.predicted is not None:
        exact = np.mean([p == t for p, t in zip([m.cell_count for m in result.per_frame], truth,
                                                strict=True)])
        lines.append(f"exact cell count in {100 * exact:.0f} % of frames")
    return "\n".join(lines)
