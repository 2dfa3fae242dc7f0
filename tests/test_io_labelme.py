"""LabelMe import: shapes rasterised into amodal instances, written in the dataset format."""

from __future__ import annotations

import base64
import json

import imageio.v3 as iio
import numpy as np
import pytest

from blastoseg.errors import DatasetFormatError
from blastoseg.io import import_labelme, read_dataset
from blastoseg.io.labelme import shape_to_mask

H, W = 20, 30


def _image():
    return (np.arange(H * W) % 251).astype(np.uint8).reshape(H, W)


def _write(path, shapes, *, image_path=None, image_data=None, **extra):
    doc = {"version": "5.4.1", "flags": {}, "shapes": shapes, "imagePath": image_path,
           "imageData": image_data, "imageHeight": H, "imageWidth": W, **extra}
    path.write_text(json.dumps(doc))
    return path


def _shape(label, points, shape_type="polygon", group_id=None):
    return {"label": label, "points": points, "shape_type": shape_type, "group_id": group_id,
            "flags": {}}


@pytest.fixture
def folder(tmp_path):
    src = tmp_path / "labelme"
    src.mkdir()
    img = _image()
    iio.imwrite(src / "a.png", img)
    _write(src / "a.json", [
        _shape("cell", [[2, 3], [8, 3], [8, 7], [2, 7]]),  # polygon on integer corners
        _shape("cell", [[10, 1], [14, 5]], "rectangle"),
        _shape("fragment", [[20, 10], [23, 10]], "circle"),  # centre + circumference point
        _shape("cell", [[1, 12], [4, 12], [4, 15], [1, 15]], group_id=1),
        _shape("cell", [[4, 14], [7, 14], [7, 17], [4, 17]], group_id=1),
        _shape("cell", [[0, 0], [5, 5]], "line"),
        _shape("cell", [[3, 3]], "point"),
    ], image_path="a.png")
    # second file: the image embedded as base64 (no file on disk), RGB with grey content
    rgb = np.repeat(img[..., None], 3, axis=-1)[::-1].copy()
    data = base64.b64encode(iio.imwrite("<bytes>", rgb, extension=".png")).decode()
    _write(src / "b.json", [_shape("cell", [[0, 0], [29, 19]], "rectangle")],
           image_data=data, image_path="does_not_exist.png")
    return src


def test_import_folder(tmp_path, folder):
    with pytest.warns(UserWarning) as record:
        ann = import_labelme(folder, tmp_path / "ds")
    messages = [str(r.message) for r in record]
    assert any("'line'" in m and "a.json" in m and "'cell'" in m for m in messages)
    assert any("'point'" in m for m in messages)
    ds = read_dataset(ann.parent)
    assert ds.categories == {1: "cell", 2: "fragment"}
    assert len(ds) == 2
    np.testing.assert_array_equal(ds.load_image(0), _image())
    inst = ds.instances(0)
    assert len(inst) == 4  # polygon, rectangle, circle, one grouped instance
    np.testing.assert_array_equal(inst.class_ids, [1, 1, 2, 1])

    poly = np.zeros((H, W), bool)
    poly[3:8, 2:9] = True  # corners included, like LabelMe's own rasteriser
    np.testing.assert_array_equal(inst.masks[0], poly)
    rect = np.zeros((H, W), bool)
    rect[1:6, 10:15] = True
    np.testing.assert_array_equal(inst.masks[1], rect)
    yy, xx = np.mgrid[:H, :W]
    disk = (yy - 10) ** 2 + (xx - 20) ** 2 <= 9
    circle = inst.masks[2]
    assert circle[disk].all() and circle[10, 20] and not circle[10, 25]
    assert circle.sum() <= ((yy - 10) ** 2 + (xx - 20) ** 2 <= 16).sum()
    grouped = inst.masks[3]
    assert grouped[12:16, 1:5].all() and grouped[14:18, 4:8].all()
    assert grouped.sum() == 16 + 16 - 2  # two 4x4 squares sharing two pixels
    np.testing.assert_array_equal(inst.occlusion > 0, inst.overlap_map())

    # embedded image decoded, grey RGB collapsed to one channel, saved losslessly
    np.testing.assert_array_equal(ds.load_image(1), _image()[::-1])
    assert ds.instances(1).masks[0].all()
    assert [e["file_name"] for e in ds.images] == ["images/a.png", "images/b.png"]
    assert ds.images[0]["labelme_file"] == "a.json"


def test_label_map_and_file_list(tmp_path, folder):
    with pytest.warns(UserWarning):
        import_labelme([folder / "a.json"], tmp_path / "ds",
                       label_map={"cell": 1, "fragment": 5})
    ds = read_dataset(tmp_path / "ds")
    assert ds.categories == {1: "cell", 5: "fragment"}
    np.testing.assert_array_equal(ds.instances(0).class_ids, [1, 1, 5, 1])
    with pytest.raises(DatasetFormatError, match=r"\['fragment'\] are not in label_map"):
        import_labelme(folder / "a.json", tmp_path / "ds2", label_map={"cell": 1})


def test_overwrite_protection(tmp_path, folder):
    with pytest.warns(UserWarning):
        import_labelme(folder, tmp_path / "ds")
    with pytest.raises(DatasetFormatError, match="already exists"):
        import_labelme(folder, tmp_path / "ds")
    (tmp_path / "ds" / "annotations.json").write_text("{}")  # stands for a user's edits
    with pytest.warns(UserWarning):
        import_labelme(folder, tmp_path / "ds", overwrite=True)
    backups = list((tmp_path / "ds").glob("annotations.json.*.bak"))
    assert len(backups) == 1 and backups[0].read_text() == "{}"


def test_missing_image_names_json(tmp_path):
    path = _write(tmp_path / "lonely.json", [_shape("cell", [[1, 1], [5, 1], [5, 5]])],
                  image_path="gone.png")
    with pytest.raises(DatasetFormatError, match="lonely.json.*gone.png"):
        import_labelme(path, tmp_path / "ds")


def test_bad_json_and_empty_folder(tmp_path):
    (tmp_path / "x.json").write_text("{broken")
    with pytest.raises(DatasetFormatError, match="x.json: invalid JSON"):
        import_labelme(tmp_path, tmp_path / "ds")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetFormatError, match="no LabelMe"):
        import_labelme(empty, tmp_path / "ds")


def test_shape_to_mask_ellipse_and_windows_path(tmp_path):
    ell = shape_to_mask(_shape("c", [[5, 5], [15, 11]], "ellipse"), (H, W))
    assert ell[8, 10] and not ell[5, 5] and not ell[0, 0]
    assert shape_to_mask(_shape("c", [[1, 1]], "point"), (H, W)) is None
    # imagePath with backslashes and a folder prefix: the image beside the JSON is used
    iio.imwrite(tmp_path / "img.png", _image())
    path = _write(tmp_path / "w.json", [], image_path="..\\somewhere\\img.png")
    import_labelme(path, tmp_path / "ds")
    ds = read_dataset(tmp_path / "ds")
    assert len(ds.instances(0)) == 0
    np.testing.assert_array_equal(ds.load_image(0), _image())


def test_mask_shape_and_polygon_outside_image():
    crop = np.zeros((3, 4), np.uint8)
    crop[1, 1:3] = 255
    data = base64.b64encode(iio.imwrite("<bytes>", crop, extension=".png")).decode()
    shape = {"label": "c", "points": [[5, 2], [8, 4]], "shape_type": "mask", "mask": data}
    out = shape_to_mask(shape, (H, W))
    assert out.sum() == 2 and out[3, 6] and out[3, 7]
    # a polygon reaching past the image border is clipped, not an error
    poly = shape_to_mask(_shape("c", [[-5, -5], [40, -5], [40, 3], [-5, 3]]), (H, W))
    assert poly[:4].all() and not poly[4:].any()
