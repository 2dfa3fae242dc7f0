"""Image reading: single files, TIFF stacks, frame folders and their errors."""

from __future__ import annotations

import random

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from blastoseg.errors import ImageReadError
from blastoseg.io import SUPPORTED_EXTENSIONS, read_frame_folder, read_image, read_images
from blastoseg.io.frame_names import natural_key, parse_frame_name


def _frame(value, shape=(6, 8), dtype=np.uint8):
    # each frame distinct and identifiable by its top-left pixel
    arr = np.full(shape, value % 250, dtype=dtype)
    arr[0, 0] = value
    return arr


# --- file names ---------------------------------------------------------------------------

@pytest.mark.parametrize("stem, frame, focal", [
    ("embryo_F0_0001", 1, 0),
    ("frame_0007_F-15", 7, -15),
    ("D2020.01.02_S0123_I3_WELL4_RUN012_F15", 12, 15),
    ("frame12", 12, None),
    ("embryo_t5_F+30", 5, 30),
    ("Frame_3_FIELD2", 3, None),   # "F" inside words is not a focal token
    ("WELLF2_10", 10, None),
    ("img-F-45-033", 33, -45),
    ("no numbers", None, None),
])
def test_parse_frame_name(stem, frame, focal):
    parsed = parse_frame_name(stem)
    assert (parsed.frame, parsed.focal) == (frame, focal)


def test_natural_key():
    names = [f"frame_{i}.png" for i in (10, 2, 1, 12, 3)]
    assert sorted(names, key=natural_key) == [f"frame_{i}.png" for i in (1, 2, 3, 10, 12)]


# --- single files -------------------------------------------------------------------------

def test_read_single_files(tmp_path):
    g16 = (np.arange(48, dtype=np.uint16) * 1000).reshape(6, 8)
    iio.imwrite(tmp_path / "g16.png", g16)
    out = read_image(tmp_path / "g16.png")
    assert out.dtype == np.uint16 and np.array_equal(out, g16)

    f32 = np.random.default_rng(0).normal(size=(5, 7)).astype(np.float32)
    tifffile.imwrite(tmp_path / "f.tif", f32)
    assert np.array_equal(read_image(tmp_path / "f.tif"), f32)

    grey = _frame(9)
    rgba = np.dstack([grey, grey, grey, np.full_like(grey, 255)])
    iio.imwrite(tmp_path / "rgba.png", rgba)
    np.testing.assert_array_equal(read_image(tmp_path / "rgba.png"), grey)  # grey, no alpha
    iio.imwrite(tmp_path / "grey.bmp", np.dstack([grey] * 3))
    np.testing.assert_array_equal(read_image(tmp_path / "grey.bmp"), grey)

    colour = np.dstack([grey, grey + 1, grey + 2])
    iio.imwrite(tmp_path / "c.png", colour)
    assert read_image(tmp_path / "c.png").shape == (6, 8, 3)
    stack = read_images(tmp_path / "c.png")
    assert stack.axes == "YXC" and stack.files == [tmp_path / "c.png"]

    iio.imwrite(tmp_path / "j.jpg", np.dstack([grey] * 3))
    assert read_image(tmp_path / "j.jpg").shape == (6, 8)


def test_tiff_stacks_and_pixel_size(tmp_path):
    data = np.stack([_frame(i, dtype=np.uint16) for i in range(4)])
    tifffile.imwrite(tmp_path / "t.tif", data, photometric="minisblack")
    stack = read_images(tmp_path / "t.tif")
    assert stack.axes == "TYX" and np.array_equal(stack.data, data)
    assert stack.pixel_size_um is None
    with pytest.raises(ImageReadError, match="use read_images"):
        read_image(tmp_path / "t.tif")

    # ImageJ metadata says these pages are z-slices, calibrated in microns
    tifffile.imwrite(tmp_path / "z.tif", data, imagej=True, resolution=(1 / 0.5, 1 / 0.5),
                     metadata={"axes": "ZYX", "unit": "um"})
    z = read_images(tmp_path / "z.tif")
    assert z.axes == "ZYX" and np.array_equal(z.data, data)
    assert z.pixel_size_um == pytest.approx(0.5)

    tzyx = np.arange(2 * 3 * 6 * 8, dtype=np.uint8).reshape(2, 3, 6, 8)
    tifffile.imwrite(tmp_path / "tz.tif", tzyx, imagej=True, metadata={"axes": "TZYX"})
    hyper = read_images(tmp_path / "tz.tif")
    assert hyper.axes == "TZYX" and np.array_equal(hyper.data, tzyx)

    # plain TIFF resolution in pixels per centimetre: 0.25 µm pixels
    tifffile.imwrite(tmp_path / "cm.tif", data[0], resolution=(40000, 40000),
                     resolutionunit="CENTIMETER")
    assert read_images(tmp_path / "cm.tif").pixel_size_um == pytest.approx(0.25)
    # a default 72 dpi tag is not a microscope calibration
    tifffile.imwrite(tmp_path / "dpi.tif", data[0], resolution=(72, 72), resolutionunit="INCH")
    assert read_images(tmp_path / "dpi.tif").pixel_size_um is None


# --- frame folders ------------------------------------------------------------------------

def test_folder_natural_order_and_noise(tmp_path):
    numbers = list(range(1, 13))
    random.Random(1).shuffle(numbers)  # creation order must not matter
    for i in numbers:
        iio.imwrite(tmp_path / f"frame_{i}.png", _frame(i))
    (tmp_path / "notes.txt").write_text("ignore me")
    (tmp_path / "Thumbs.db").write_bytes(b"\x00\x01")
    (tmp_path / ".hidden.png").write_bytes(b"not an image")
    stack = read_images(tmp_path)
    assert stack.axes == "TYX" and stack.data.shape == (12, 6, 8)
    assert stack.frame_numbers == list(range(1, 13))
    assert [int(a[0, 0]) for a in stack.data] == list(range(1, 13))
    assert [p.name for p in stack.files] == [f"frame_{i}.png" for i in range(1, 13)]
    assert stack.focal_planes is None


def test_folder_focal_tokens(tmp_path):
    for t in (1, 2, 3):
        for f in (15, -15, 0):
            name = f"D2020.01.02_S0123_I3_WELL4_RUN{t:03d}_F{f}.JPG"
            # lossless check of the ordering needs PNG pixels; JPEG content is checked coarsely
            iio.imwrite(tmp_path / name, np.full((6, 8), 10 * t + f + 20, np.uint8),
                        extension=".jpg")
    stack = read_frame_folder(tmp_path)
    assert stack.axes == "TZYX" and stack.data.shape == (3, 3, 6, 8)
    assert stack.focal_planes == [-15, 0, 15] and stack.frame_numbers == [1, 2, 3]
    means = stack.data.mean(axis=(2, 3))
    expected = np.array([[10 * t + f + 20 for f in (-15, 0, 15)] for t in (1, 2, 3)])
    np.testing.assert_allclose(means, expected, atol=2)
    assert stack.files[1].name.endswith("RUN001_F0.JPG")


def test_folder_focal_subfolders_and_grey_rgb(tmp_path):
    for f in (-15, 0, 15):
        sub = tmp_path / f"F{f}"
        sub.mkdir()
        for t in range(1, 4):
            grey = _frame(t * 10 + f + 20)
            iio.imwrite(sub / f"embryo_{t:04d}.png", np.dstack([grey] * 3))
    (tmp_path / "thumbnails").mkdir()  # unrelated folder ignored
    stack = read_images(tmp_path)
    assert stack.axes == "TZYX" and stack.data.shape == (3, 3, 6, 8)
    assert stack.focal_planes == [-15, 0, 15]
    assert [[int(v) for v in row] for row in stack.data[:, :, 0, 0]] == [
        [t * 10 + f + 20 for f in (-15, 0, 15)] for t in (1, 2, 3)]


def test_folder_without_numbers_uses_natural_order(tmp_path):
    for name, v in (("b.png", 2), ("a.png", 1), ("c.tif", 3)):
        path = tmp_path / name
        if name.endswith(".tif"):
            tifffile.imwrite(path, _frame(v))
        else:
            iio.imwrite(path, _frame(v))
    stack = read_images(tmp_path)
    assert stack.frame_numbers is None
    assert [int(a[0, 0]) for a in stack.data] == [1, 2, 3]


def test_single_focal_plane_is_tyx(tmp_path):
    for t in (1, 2):
        iio.imwrite(tmp_path / f"embryo_F0_{t:04d}.png", _frame(t))
    stack = read_images(tmp_path)
    assert stack.axes == "TYX" and stack.focal_planes == [0]


# --- errors -------------------------------------------------------------------------------

def test_errors_on_files(tmp_path):
    with pytest.raises(ImageReadError, match="no such file"):
        read_images(tmp_path / "missing.tif")
    (tmp_path / "a.gif").write_bytes(b"GIF89a")
    with pytest.raises(ImageReadError, match=r"a\.gif.*unsupported.*\.tif") as info:
        read_image(tmp_path / "a.gif")
    assert all(ext in str(info.value) for ext in SUPPORTED_EXTENSIONS)

    iio.imwrite(tmp_path / "full.png", np.random.default_rng(0).integers(0, 255, (64, 64),
                                                                         dtype=np.uint8))
    raw = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ImageReadError, match="cut.png"):
        read_image(tmp_path / "cut.png")
    (tmp_path / "text.tif").write_text("this is not a tiff")
    with pytest.raises(ImageReadError, match="text.tif.*not a TIFF"):
        read_images(tmp_path / "text.tif")


def test_errors_on_folders(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("x")
    with pytest.raises(ImageReadError, match="empty: no images"):
        read_frame_folder(empty)

    sizes = tmp_path / "sizes"
    sizes.mkdir()
    iio.imwrite(sizes / "frame_1.png", _frame(1))
    iio.imwrite(sizes / "frame_2.png", _frame(2, shape=(6, 9)))
    with pytest.raises(ImageReadError, match=r"frame_2.png.*\(6, 9\).*frame_1.png.*\(6, 8\)"):
        read_frame_folder(sizes)

    missing = tmp_path / "missing"
    missing.mkdir()
    for t in (1, 2, 3):
        iio.imwrite(missing / f"frame_{t:04d}_F0.png", _frame(t))
        if t != 2:
            iio.imwrite(missing / f"frame_{t:04d}_F15.png", _frame(t))
    with pytest.raises(ImageReadError, match="frame 2 is missing at focal plane 15"):
        read_frame_folder(missing)

    dup = tmp_path / "dup"
    dup.mkdir()
    iio.imwrite(dup / "a_t1.png", _frame(1))
    iio.imwrite(dup / "b_t1.png", _frame(1))
    with pytest.raises(ImageReadError, match="frame 1 appears twice.*a_t1.png.*b_t1.png"):
        read_frame_folder(dup)

    with pytest.raises(ImageReadError, match="no such folder"):
        read_frame_folder(tmp_path / "nope")

    mixed = tmp_path / "mixed"
    mixed.mkdir()
    iio.imwrite(mixed / "frame_1_F0.png", _frame(1))
    iio.imwrite(mixed / "frame_2.png", _frame(2))
    with pytest.raises(ImageReadError, match="focal-plane token"):
        read_frame_folder(mixed)

    bad = tmp_path / "badframe"
    bad.mkdir()
    iio.imwrite(bad / "frame_1.png", _frame(1))
    (bad / "frame_2.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(ImageReadError, match="frame_2.png"):
        read_frame_folder(bad)


def test_zero_padded_f_counter_is_a_frame_not_a_focal_plane():
    from blastoseg.io.frame_names import frame_numbers, parse_frame_name

    assert frame_numbers(["a_F0001", "a_F0002"]) == [1, 2]
    assert parse_frame_name("embryo_F0001").focal is None
    assert parse_frame_name("embryo_F0001").frame == 1
    assert parse_frame_name("run_F-15_0003").focal == -15


def test_constant_numbers_in_names_are_not_frame_numbers(tmp_path):
    from blastoseg.io import read_frame_folder

    for t in (1, 2, 10):
        tifffile.imwrite(tmp_path / f"img_{t:03d}_well4.tif", np.full((8, 8), t, np.uint8))
    stack = read_frame_folder(tmp_path)
    assert stack.frame_numbers == [1, 2, 10]
    assert stack.data[:, 0, 0].tolist() == [1, 2, 10]
