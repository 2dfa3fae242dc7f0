"""blastoseg.io.lazy_stack: a frame folder or multi-page TIFF opened frame by frame gives the
same stack as read_images (order, planes, frame numbers, pixel size, skipped frames, errors),
its checks come before any frame is run, and it reads nothing it is not asked for."""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from blastoseg.errors import ImageReadError
from blastoseg.io import read_images
from blastoseg.io.frames import as_frames
from blastoseg.io.lazy_stack import LazyFrames, open_images


def _same(path, **kw):
    eager, lazy = read_images(path, **kw), open_images(path, **kw)
    assert isinstance(lazy.data, LazyFrames)
    assert lazy.axes == eager.axes and lazy.data.shape == eager.data.shape
    assert lazy.data.dtype == eager.data.dtype
    assert np.array_equal(np.asarray(lazy.data), eager.data)
    for key in ("files", "frame_numbers", "focal_planes", "pixel_size_um", "skipped"):
        assert getattr(lazy, key) == getattr(eager, key), key
    return eager, lazy


def test_a_folder_with_focal_planes_mixed_depths_and_a_bad_frame(tmp_path):
    rng = np.random.default_rng(0)
    for z in (-15, 0, 15):
        (tmp_path / f"F{z}").mkdir()
        for t in (3, 1, 2, 10):  # frame order by number, not by name
            dtype = np.uint16 if t == 2 else np.uint8  # promoted losslessly, as eagerly
            iio.imwrite(tmp_path / f"F{z}" / f"RUN{t}.png",
                        rng.integers(0, 200, (12, 16)).astype(dtype))
    eager, lazy = _same(tmp_path)
    assert lazy.axes == "TZYX" and lazy.frame_numbers == [1, 2, 3, 10]
    assert np.array_equal(lazy.data[:, 2][3], eager.data[3, 2])  # plane view, one frame
    assert np.array_equal(lazy.data[1:3], eager.data[1:3])
    (tmp_path / "F0" / "RUN3.png").write_bytes(b"not a png")
    with pytest.raises(ImageReadError, match="RUN3.png"):
        open_images(tmp_path)
    eager, lazy = _same(tmp_path, skip_unreadable=True)
    assert lazy.frame_numbers == [1, 2, 10] and lazy.skipped[0][0].name == "RUN3.png"


def test_unequal_frame_sizes_are_refused_when_opened(tmp_path):
    for t, side in enumerate((16, 16, 20)):
        iio.imwrite(tmp_path / f"frame_{t}.png", np.zeros((side, side), np.uint8))
    with pytest.raises(ImageReadError) as eager:
        read_images(tmp_path)
    with pytest.raises(ImageReadError) as lazy:
        open_images(tmp_path)
    assert str(lazy.value) == str(eager.value) and "same size" in str(lazy.value)
    stack = open_images(tmp_path, skip_unreadable=True)  # what the CLI does: named, left out
    assert len(stack.data) == 2 and stack.skipped[0][0].name == "frame_2.png"


@pytest.mark.parametrize("kind", ["imagej", "plain", "zlib"])
def test_multi_page_tiffs(tmp_path, kind):
    data = np.random.default_rng(1).integers(0, 60000, (7, 3, 10, 12)).astype(np.uint16)
    path = tmp_path / "s.tif"
    if kind == "imagej":
        tifffile.imwrite(path, data, imagej=True, resolution=(1 / 0.5, 1 / 0.5),
                         metadata={"axes": "TZYX", "unit": "um"})
        _, lazy = _same(path)
        assert lazy.axes == "TZYX" and lazy.pixel_size_um == pytest.approx(0.5)
        assert np.array_equal(lazy.data[:, 1][6], data[6, 1])
    else:
        tifffile.imwrite(path, data[:, 0], compression="zlib" if kind == "zlib" else None)
        _, lazy = _same(path)
        assert lazy.axes == "TYX"


def test_what_stays_eager(tmp_path):
    tifffile.imwrite(tmp_path / "one.tif", np.zeros((16, 16), np.uint8))
    tifffile.imwrite(tmp_path / "rgb.tif",
                     np.random.default_rng(2).integers(0, 255, (3, 16, 16, 3), np.uint8))
    iio.imwrite(tmp_path / "one.png", np.zeros((16, 16), np.uint8))
    for name in ("one.tif", "rgb.tif", "one.png"):
        stack = open_images(tmp_path / name)
        assert isinstance(stack.data, np.ndarray), name
        assert np.array_equal(stack.data, read_images(tmp_path / name).data)
    with pytest.raises(ImageReadError, match="no such file"):
        open_images(tmp_path / "missing.tif")


def test_reads_only_what_is_asked_and_checks_without_reading():
    reads = []

    def read(t):
        reads.append(t)
        return np.full((9, 9), t, np.uint16)

    stack = LazyFrames(1000, (9, 9), np.uint16, read)
    frames, is_stack = as_frames(stack)  # the checks every predictor makes: no frame read
    assert frames is stack and is_stack and reads == []
    assert int(stack[-1][0, 0]) == 999 and stack[10:13][:, 0, 0].tolist() == [10, 11, 12]
    assert reads == [999, 10, 11, 12]
    with pytest.raises(IndexError):
        stack[1000]
    with pytest.raises(TypeError, match="lazy stack"):
        stack[[1, 2]]
    small = LazyFrames(3, (4, 4), np.uint16, read)
    with pytest.raises(Exception, match="at least 8 pixels"):
        as_frames(small)
    changed = LazyFrames(2, (8, 8), np.uint16, read)  # the file now holds another size
    with pytest.raises(ImageReadError, match="changed on disk"):
        changed[0]
