"""SE-U-Net head targets from amodal masks, and nucleus masks read alongside a dataset."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from scipy import ndimage as ndi

from blastoseg.errors import BlastosegError, DatasetFormatError, InvalidImageError
from blastoseg.instances import FrameInstances
from blastoseg.io import Sample, read_dataset, write_dataset
from blastoseg.io.nuclei import load_nuclei, nuclei_path
from blastoseg.targets import HEADS, head_targets


def _disc(shape, cy, cx, r):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r ** 2


@pytest.fixture
def two_discs():
    shape = (64, 64)
    masks = np.stack([_disc(shape, 32, 22, 14), _disc(shape, 32, 42, 14)])
    return FrameInstances(masks=masks)


def test_heads_order_is_fixed():
    assert HEADS == ("cytoplasm", "nuclei", "border", "background", "overlap")


def test_two_overlapping_discs(two_discs):
    m0, m1 = two_discs.masks
    nuclei = _disc((64, 64), 32, 20, 4) | _disc((64, 64), 32, 44, 4)
    t = head_targets(two_discs, nuclei)
    assert list(t) == list(HEADS)
    for v in t.values():
        assert v.dtype == np.float32 and v.shape == (64, 64)
        assert set(np.unique(v)) <= {0.0, 1.0}
    # overlap: exactly the lens where both discs are, and its area is the pixel count of it
    lens = m0 & m1
    assert 0 < lens.sum() < m0.sum()
    np.testing.assert_array_equal(t["overlap"], lens)
    assert t["overlap"].sum() == lens.sum()
    # cytoplasm = union, background its complement, nuclei the given mask
    np.testing.assert_array_equal(t["cytoplasm"], m0 | m1)
    np.testing.assert_array_equal(t["background"], ~(m0 | m1))
    np.testing.assert_array_equal(t["nuclei"], nuclei)


def test_border_band_inside_the_overlap(two_discs):
    m0, m1 = two_discs.masks
    border = head_targets(two_discs, border_width=2)["border"].astype(bool)
    # disc 1's outline runs through disc 0: it is in the border target there
    outline1 = m1 & ~ndi.binary_erosion(m1)
    inside = outline1 & m0
    assert inside.sum() > 5
    assert border[inside].all()
    # the band is ~2 px wide: on the centre row of disc 0 (x from 8 to 36) the left edge
    # pixels 8, 9 are border, 12 and the centre are not; the row inside the lens shows the
    # band of disc 1 starting at its left edge x = 28
    row = border[32]
    assert row[8] and row[9] and not row[12] and not row[22]
    assert row[28] and row[29] and not row[31]
    assert not border[~(m0 | m1)].any()  # only inside cells
    # wider band, more pixels
    wider = head_targets(two_discs, border_width=4, heads=("border",))["border"]
    assert wider.sum() > border.sum()


def test_nuclei_absent_and_subsets(two_discs):
    t = head_targets(two_discs, None, heads=("overlap", "nuclei", "cytoplasm"))
    assert list(t) == ["overlap", "cytoplasm"]  # no nucleus mask: no nuclei target
    with pytest.raises(BlastosegError, match="unknown head"):
        head_targets(two_discs, heads=("cytoplasm", "membrane"))
    with pytest.raises(InvalidImageError, match="same size"):
        head_targets(two_discs, np.zeros((10, 10), bool))


def test_mask_stack_empty_and_image_edge():
    empty = head_targets(np.zeros((0, 16, 16), bool))
    assert empty["cytoplasm"].sum() == 0 and empty["background"].all()
    assert empty["border"].sum() == 0 and empty["overlap"].sum() == 0
    # a cell cut by the image edge: no border band along the edge
    m = np.zeros((1, 20, 20), bool)
    m[0, :, :10] = True
    border = head_targets(m, heads=("border",))["border"]
    assert border[:, 8:10].all()  # along its real outline (x = 9)
    assert not border[:, 0].any()  # not along the image edge
    with pytest.raises(InvalidImageError):
        head_targets(np.zeros((16, 16), bool))


# --- nucleus masks of a dataset -------------------------------------------------------------

def _sample(name, extra=None):
    masks = np.zeros((1, 24, 32), bool)
    masks[0, 4:20, 6:26] = True
    image = np.full((24, 32), 50, np.uint8)
    return Sample(image=image, instances=FrameInstances(masks=masks), file_name=name,
                  extra=extra or {})


def test_load_nuclei_key_sibling_and_none(tmp_path):
    root = tmp_path / "data"
    write_dataset(root, [
        _sample("images/a.png", {"nuclei_file": "masks/a_nuc.png"}),
        _sample("images/b.tif"),
        _sample("images/c.png"),
    ])
    import imageio.v3 as iio

    (root / "masks").mkdir()
    nuc_a = np.zeros((24, 32), np.uint16)
    nuc_a[8:12, 10:14] = 3  # labels: > 0 is nucleus
    iio.imwrite(root / "masks" / "a_nuc.png", nuc_a)
    nuc_b = np.zeros((24, 32), np.uint8)
    nuc_b[5:9, 20:24] = 255
    tifffile.imwrite(root / "images" / "b_nuclei.tif", nuc_b)
    ds = read_dataset(root)
    a, b, c = (load_nuclei(ds, i) for i in range(3))
    assert a.dtype == bool and a.shape == (24, 32)
    np.testing.assert_array_equal(a, nuc_a > 0)
    np.testing.assert_array_equal(b, nuc_b > 0)
    assert c is None and nuclei_path(ds, 2) is None
    assert nuclei_path(ds, 1).name == "b_nuclei.tif"


def test_load_nuclei_errors(tmp_path):
    root = tmp_path / "data"
    write_dataset(root, [
        _sample("images/a.png", {"nuclei_file": "masks/missing.png"}),
        _sample("images/b.png"),
        _sample("images/c.png"),
    ])
    tifffile.imwrite(root / "images" / "b_nuclei.tif", np.zeros((10, 10), np.uint8))
    (root / "images" / "c_nuclei.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    ds = read_dataset(root)
    with pytest.raises(DatasetFormatError, match="does not exist"):
        load_nuclei(ds, 0)
    with pytest.raises(DatasetFormatError, match="must match the image"):
        load_nuclei(ds, 1)
    with pytest.raises(DatasetFormatError, match="cannot be read"):
        load_nuclei(ds, 2)


def test_load_nuclei_fills_contours(tmp_path):
    root = tmp_path / "data"
    write_dataset(root, [_sample("images/a.png")])
    ring = _disc((24, 32), 12, 16, 6) & ~_disc((24, 32), 12, 16, 5)
    tifffile.imwrite(root / "images" / "a_nuclei.tif", ring.astype(np.uint8) * 128)
    ds = read_dataset(root)
    assert load_nuclei(ds, 0).sum() == ring.sum()
    filled = load_nuclei(ds, 0, fill_holes=True)
    assert filled[12, 16] and filled.sum() > ring.sum()
