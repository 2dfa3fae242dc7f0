"""Issue 18 item 10: a folder of unrelated pictures (one crop per embryo) opened as one
time-lapse, or failed with "all frames must have the same size". Such a folder is now
recognised and opened (napari) or segmented (CLI) one picture at a time."""

from __future__ import annotations

import functools

import imageio.v3 as iio
import numpy as np
import pytest
from skimage.transform import resize

from blastoseg.io.image_folders import folder_layout, read_separate_images


@functools.lru_cache(maxsize=8)
def _rendered(seed: int) -> np.ndarray:
    from blastoseg.synth import render_embryo

    return render_embryo(2 + seed % 3, seed=seed).image


def _embryo(seed: int, side: int = 256) -> np.ndarray:
    img = _rendered(seed)
    return (resize(img.astype(float), (side, side), anti_aliasing=True)).astype(np.uint8)


@pytest.fixture(scope="module")
def crops(tmp_path_factory):
    """Four crops of different embryos, two sizes, numbered like a plain export."""
    folder = tmp_path_factory.mktemp("crops")
    for i, side in enumerate((256, 256, 200, 256)):
        iio.imwrite(folder / f"embryo_{i + 1:03d}.png", _embryo(i, side))
    return folder


def test_separate_pictures_and_time_lapses_are_told_apart(crops, tmp_path):
    layout = folder_layout(crops)
    assert layout.separate and "2 different sizes" in layout.reason
    assert [p.name for p in layout.files] == [f"embryo_{i:03d}.png" for i in (1, 2, 3, 4)]
    assert [s.data.shape for s in read_separate_images(layout)] == [
        (256, 256), (256, 256), (200, 200), (256, 256)]

    same = tmp_path / "same_size"
    same.mkdir()
    for i in range(4):
        iio.imwrite(same / f"crop{i}.png", _embryo(i))
    layout = folder_layout(same)
    assert layout.separate and "unlike each other" in layout.reason

    from blastoseg.synth import render_timelapse

    lapse = tmp_path / "lapse"
    lapse.mkdir()
    for i, frame in enumerate(render_timelapse(5, seed=3).images):
        iio.imwrite(lapse / f"embryo_{i:03d}.png", frame)
    assert not folder_layout(lapse).separate  # same numbering, but consecutive frames alike

    tokens = tmp_path / "tokens"
    tokens.mkdir()
    for i in range(3):  # an incubator's names say time-lapse, whatever the pictures show
        iio.imwrite(tokens / f"W4_RUN{i:03d}.png", _embryo(i))
    assert not folder_layout(tokens).separate
    flat = tmp_path / "flat"
    flat.mkdir()
    for i in range(3):
        iio.imwrite(flat / f"img_{i}.png", np.full((32, 32), 10 * i, np.uint8))
    assert not folder_layout(flat).separate  # featureless frames are alike, not unrelated


def test_napari_opens_them_as_separate_layers(crops):
    from blastoseg.napari._reader import napari_get_reader

    layers = napari_get_reader(str(crops))(str(crops))
    assert [kw["name"] for _, kw, kind in layers] == [f"embryo_{i:03d}" for i in (1, 2, 3, 4)]
    assert [d.shape for d, _, _ in layers] == [(256, 256), (256, 256), (200, 200), (256, 256)]


def test_the_cli_segments_each_picture(crops, tmp_path, capsys):
    from blastoseg.cli import main
    from blastoseg.io import read_dataset

    out = tmp_path / "out"
    assert main(["segment", "amodal", str(crops), "--out", str(out), "--device", "cpu"]) == 0
    said = capsys.readouterr()
    assert "4 separate images" in said.out and "skipped" not in said.err
    ds = read_dataset(out / "dataset")
    assert len(ds) == 4
    assert [(e["height"], e["width"]) for e in ds.images] == [
        (256, 256), (256, 256), (200, 200), (256, 256)]
    assert all(e.get("video_id") is None for e in ds.images)  # not a time-lapse
