"""npe2 sample data: a synthetic 4-cell embryo and a synthetic cleaving-embryo time-lapse.

Both are rendered on the fly by the package's own generator (nothing is downloaded) and are
deterministic, so tutorials and screenshots always show the same embryo.
"""

from __future__ import annotations

from functools import lru_cache

from blastoseg.synth import render_embryo, render_timelapse

SAMPLE_SEED = 4
TIMELAPSE_FRAMES = 32


def _image_kwargs(name: str, meta: dict) -> dict:
    metadata = {"blastoseg": {"synthetic": True, **{k: v for k, v in meta.items() if k != "hours"}}}
    if meta.get("pixel_size_um") is not None:
        metadata["pixel_size_um"] = meta["pixel_size_um"]
    return {"name": name, "metadata": metadata}


@lru_cache(maxsize=1)
def _embryo():
    return render_embryo(4, seed=SAMPLE_SEED)


@lru_cache(maxsize=1)
def _timelapse():
    return render_timelapse(TIMELAPSE_FRAMES, seed=SAMPLE_SEED)


def sample_embryo() -> list[tuple]:
    """A synthetic 4-cell embryo frame (500 x 500, relief contrast)."""
    frame = _embryo()
    return [(frame.image, _image_kwargs("synthetic 4-cell embryo", frame.meta), "image")]


def sample_timelapse() -> list[tuple]:
    """A synthetic time-lapse of one embryo cleaving from 1 to 8 cells."""
    lapse = _timelapse()
    kwargs = _image_kwargs("synthetic embryo time-lapse", lapse.meta)
    kwargs["metadata"]["blastoseg"]["hours"] = list(lapse.meta["hours"])  # the timeline's times
    return [(lapse.images, kwargs, "image")]
