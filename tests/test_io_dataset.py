"""Dataset format: exact round trips, backups on overwrite, clear errors on malformed input."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from blastoseg.errors import DatasetFormatError
from blastoseg.instances import FrameInstances
from blastoseg.io import (
    Sample,
    atomic_write_text,
    backup_existing,
    read_dataset,
    write_dataset,
)


def _random_instances(rng, shape, n, *, visible=True, tracks=True, scores=False):
    h, w = shape
    masks = np.zeros((n, h, w), dtype=bool)
    yy, xx = np.mgrid[:h, :w]
    for i in range(n):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        r = rng.uniform(2, max(h, w) / 2)
        masks[i] = (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
    vis = None
    if visible and n:
        vis = masks.copy()
        for i in range(1, n):  # later instances lie on top
            vis[: i] &= ~masks[i]
    return FrameInstances(
        masks=masks,
        class_ids=rng.integers(1, 3, n),
        scores=rng.uniform(0, 1, n).astype(np.float32) if scores else None,
        visible_masks=vis,
        track_ids=np.arange(10, 10 + n) if tracks else None,
    )


def _edge_instances(shape):
    h, w = shape
    masks = np.zeros((4, h, w), dtype=bool)
    masks[0, 0, 0] = True  # 1-pixel mask in a corner
    masks[1, h - 1, :] = True  # touching the bottom border
    masks[2, :, w - 1] = True  # touching the right border, overlapping mask 1
    masks[3] = True  # the whole frame
    return FrameInstances(masks=masks, class_ids=[1, 1, 2, 1], scores=[1.0, 0.5, 0.25, 1.0])


@pytest.fixture
def samples():
    rng = np.random.default_rng(0)
    out = []
    for t in range(3):  # a short non-square uint8 time-lapse with visible masks and tracks
        shape = (24, 37)
        out.append(Sample(
            image=rng.integers(0, 255, shape, dtype=np.uint8),
            instances=_random_instances(rng, shape, 4),
            video_id=7, frame_index=2 - t, focal_plane=0, pixel_size_um=0.25,
            extra={"n_cells": 4, "seed": t, "cleavage": {"stage": "4-cell"}},
        ))
    out.append(Sample(image=rng.integers(0, 65535, (16, 9), dtype=np.uint16),
                      instances=_edge_instances((16, 9))))
    out.append(Sample(image=rng.normal(size=(12, 20)).astype(np.float32),
                      instances=FrameInstances.empty((12, 20)), extra={"note": "empty"}))
    out.append(Sample(image=rng.integers(0, 255, (10, 11, 3), dtype=np.uint8),
                      instances=_random_instances(rng, (10, 11), 2, visible=False,
                                                  tracks=False, scores=True),
                      file_name="rgb/colour.png"))
    out.append(Sample(image=rng.integers(-5, 5, (8, 8), dtype=np.int32),
                      instances=_random_instances(rng, (8, 8), 1)))
    return out


CATS = {1: "blastomere", 2: "fragment"}


def _assert_same_instances(a: FrameInstances, b: FrameInstances) -> None:
    np.testing.assert_array_equal(a.masks, b.masks)
    np.testing.assert_array_equal(a.class_ids, b.class_ids)
    np.testing.assert_array_equal(a.scores, b.scores)
    if a.visible_masks is None or len(a) == 0:
        assert b.visible_masks is None
    else:
        np.testing.assert_array_equal(a.visible_masks, b.visible_masks)
    if a.track_ids is None or len(a) == 0:
        assert b.track_ids is None
    else:
        np.testing.assert_array_equal(a.track_ids, b.track_ids)


def test_round_trip_is_exact(tmp_path, samples):
    ann = write_dataset(tmp_path / "ds", samples, CATS, info={"purpose": "test"})
    assert ann == tmp_path / "ds" / "annotations.json"
    ds = read_dataset(tmp_path / "ds")
    assert len(ds) == len(samples)
    assert ds.categories == CATS
    assert ds.info["purpose"] == "test"
    for i, s in enumerate(samples):
        got = ds[i]
        assert got.image.dtype == s.image.dtype
        np.testing.assert_array_equal(got.image, s.image)
        _assert_same_instances(s.instances, got.instances)
        np.testing.assert_array_equal(got.instances.occlusion,
                                      s.instances.overlap_map().astype(np.float32))
        assert got.instances.occlusion.dtype == np.float32
        assert got.extra == s.extra == got.instances.meta
        for key in ("video_id", "frame_index", "focal_plane", "pixel_size_um"):
            assert getattr(got, key) == getattr(s, key)
    # lossless formats chosen by dtype, custom file name kept
    names = [e["file_name"] for e in ds.images]
    assert names == ["images/000001.png", "images/000002.png", "images/000003.png",
                     "images/000004.png", "images/000005.tif", "rgb/colour.png",
                     "images/000007.tif"]


def test_annotation_fields(tmp_path, samples):
    write_dataset(tmp_path, samples, CATS)
    doc = json.loads((tmp_path / "annotations.json").read_text())
    assert set(doc) == {"info", "images", "annotations", "categories"}
    first = doc["annotations"][0]
    assert isinstance(first["segmentation"]["counts"], str)
    assert first["iscrowd"] == 0 and "score" not in first
    assert first["track_id"] == 10 and "visible_segmentation" in first
    rle = {**first["segmentation"], "counts": first["segmentation"]["counts"].encode()}
    assert first["bbox"] == pytest.approx(mask_utils.toBbox(rle).tolist())
    assert first["area"] == int(mask_utils.area(rle))
    edge = [a for a in doc["annotations"] if a["image_id"] == 4]
    assert [a["bbox"] for a in edge] == [[0, 0, 1, 1], [0, 15, 9, 1], [8, 0, 1, 16],
                                         [0, 0, 9, 16]]
    assert [a.get("score") for a in edge] == [None, 0.5, 0.25, None]
    assert doc["images"][0]["n_cells"] == 4 and doc["images"][0]["video_id"] == 7
    assert "video_id" not in doc["images"][3]
    assert [a["id"] for a in doc["annotations"]] == list(range(1, len(doc["annotations"]) + 1))


def test_rewrite_gives_identical_json(tmp_path, samples):
    write_dataset(tmp_path / "a", samples, CATS, info={"x": 1})
    ds = read_dataset(tmp_path / "a")
    write_dataset(tmp_path / "b", ds, ds.categories, info=ds.info)
    a = json.loads((tmp_path / "a" / "annotations.json").read_text())
    b = json.loads((tmp_path / "b" / "annotations.json").read_text())
    assert a == b


def test_videos_ordered_by_frame_index(tmp_path, samples):
    write_dataset(tmp_path, samples, CATS)
    assert read_dataset(tmp_path).videos() == {7: [2, 1, 0]}


def test_overwrite_refused_then_backed_up(tmp_path, samples):
    write_dataset(tmp_path, samples[:2], CATS)
    original = (tmp_path / "annotations.json").read_text()
    with pytest.raises(DatasetFormatError, match="already exists.*--overwrite"):
        write_dataset(tmp_path, samples[2:3], CATS)
    assert (tmp_path / "annotations.json").read_text() == original
    # the refused write must not have touched the images either
    assert len(list((tmp_path / "images").iterdir())) == 2
    write_dataset(tmp_path, samples[2:3], CATS, overwrite=True)
    backups = list(tmp_path.glob("annotations.json.*.bak"))
    assert len(backups) == 1 and backups[0].read_text() == original
    # the replaced image (different pixels at images/000001.png) was backed up too
    assert len(list((tmp_path / "images").glob("000001.png.*.bak"))) == 1
    assert len(read_dataset(tmp_path)) == 1
    # rewriting identical content leaves no extra backup; different content makes one
    write_dataset(tmp_path, samples[2:3], CATS, overwrite=True)
    assert len(list(tmp_path.glob("annotations.json.*.bak"))) == 1
    write_dataset(tmp_path, samples[1:2], CATS, overwrite=True)
    assert len(list(tmp_path.glob("annotations.json.*.bak"))) == 2


def test_in_place_rewrite_does_not_back_up_identical_images(tmp_path, samples):
    write_dataset(tmp_path, samples, CATS)
    ds = read_dataset(tmp_path)
    write_dataset(tmp_path, list(ds), ds.categories, overwrite=True, info=ds.info)
    assert not list(tmp_path.rglob("images/*.bak"))


def test_annotation_only_export(tmp_path, samples):
    write_dataset(tmp_path / "src", samples[:1], CATS)
    # image=None: the file must already be in the output folder
    s = Sample(image=None, instances=samples[0].instances, file_name="images/000001.png")
    write_dataset(tmp_path / "src", [s], CATS, overwrite=True)
    ds = read_dataset(tmp_path / "src")
    np.testing.assert_array_equal(ds.load_image(0), samples[0].image)
    with pytest.raises(DatasetFormatError, match="does not exist"):
        write_dataset(tmp_path / "other", [s], CATS)


def test_write_validation(tmp_path, samples):
    with pytest.raises(DatasetFormatError, match=r"class id\(s\) \[2\]"):
        write_dataset(tmp_path / "a", samples, None)
    bad = Sample(image=np.zeros((5, 5), np.uint8), instances=FrameInstances.empty((4, 5)))
    with pytest.raises(DatasetFormatError, match="instance masks"):
        write_dataset(tmp_path / "b", [bad])
    esc = Sample(image=np.zeros((4, 5), np.uint8), instances=FrameInstances.empty((4, 5)),
                 file_name="../outside.png")
    with pytest.raises(DatasetFormatError, match="relative path"):
        write_dataset(tmp_path / "c", [esc])
    clash = Sample(image=np.zeros((4, 5), np.uint8), instances=FrameInstances.empty((4, 5)),
                   extra={"height": 3})
    with pytest.raises(DatasetFormatError, match="reserved"):
        write_dataset(tmp_path / "d", [clash])


def test_lossy_file_name_switched_to_png(tmp_path):
    img = np.arange(20, dtype=np.uint8).reshape(4, 5)
    s = Sample(image=img, instances=FrameInstances.empty((4, 5)), file_name="x/a.jpg")
    with pytest.warns(UserWarning, match="losslessly"):
        write_dataset(tmp_path, [s])
    ds = read_dataset(tmp_path)
    assert ds.images[0]["file_name"] == "x/a.png"
    np.testing.assert_array_equal(ds.load_image(0), img)


def _write_doc(folder: Path, doc) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    text = doc if isinstance(doc, str) else json.dumps(doc)
    (folder / "annotations.json").write_text(text)
    return folder


def _plain_doc():
    return {
        "images": [{"id": 5, "file_name": "a.png", "height": 6, "width": 8}],
        "annotations": [
            # polygon: a rectangle x 1..5, y 1..4
            {"id": 1, "image_id": 5, "category_id": 3,
             "segmentation": [[1, 1, 5, 1, 5, 4, 1, 4]]},
            # uncompressed RLE (column-major counts), as many tools write it
            {"id": 2, "image_id": 5, "category_id": 3,
             "segmentation": {"size": [6, 8], "counts": [6, 6, 36]}},
        ],
        "categories": [{"id": 3, "name": "cell", "supercategory": "x"}],
    }


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
def test_reads_plain_coco(tmp_path):
    ds = read_dataset(_write_doc(tmp_path, _plain_doc()))
    inst = ds.instances(0)
    assert ds.categories == {3: "cell"}
    expected_rle = np.zeros((6, 8), bool)
    expected_rle[:, 1] = True
    np.testing.assert_array_equal(inst.masks[1], expected_rle)
    poly = mask_utils.decode(mask_utils.merge(
        mask_utils.frPyObjects([[1, 1, 5, 1, 5, 4, 1, 4]], 6, 8))).astype(bool)
    np.testing.assert_array_equal(inst.masks[0], poly)
    assert poly.sum() > 0
    assert inst.visible_masks is None and inst.track_ids is None
    np.testing.assert_array_equal(inst.scores, [1, 1])
    with pytest.raises(DatasetFormatError, match="does not exist"):
        ds.load_image(0)
    # no categories at all: the used ids get names
    doc = _plain_doc()
    del doc["categories"]
    assert read_dataset(_write_doc(tmp_path / "nocat", doc)).categories == {3: "category_3"}


def _broken(kind):
    doc = _plain_doc()
    if kind == "unknown image":
        doc["annotations"][0]["image_id"] = 99
    elif kind == "rle size":
        doc["annotations"][1]["segmentation"]["size"] = [8, 6]
    elif kind == "duplicate annotation id":
        doc["annotations"][1]["id"] = 1
    elif kind == "duplicate image id":
        doc["images"].append(dict(doc["images"][0]))
    elif kind == "missing key":
        del doc["images"][0]["height"]
    elif kind == "no annotations":
        del doc["annotations"]
    elif kind == "unknown category":
        doc["annotations"][0]["category_id"] = 1
    elif kind == "bad id type":
        doc["images"][0]["id"] = "5"
    elif kind == "bad segmentation":
        doc["annotations"][0]["segmentation"] = "polygon"
    return doc


@pytest.mark.parametrize("kind, message", [
    ("unknown image", "unknown image id 99"),
    ("rle size", r"RLE size \[8, 6\] does not match"),
    ("duplicate annotation id", "duplicate annotation id 1"),
    ("duplicate image id", "duplicate image id 5"),
    ("missing key", r"lacks \['height'\]"),
    ("no annotations", "missing required list 'annotations'"),
    ("unknown category", "unknown category id 1"),
    ("bad id type", r"\['id'\] must be integers"),
    ("bad segmentation", "must be an RLE dict or a list of polygons"),
])
def test_malformed_files(tmp_path, kind, message):
    folder = _write_doc(tmp_path, _broken(kind))
    with pytest.raises(DatasetFormatError, match=message) as info:
        read_dataset(folder)
    assert "annotations.json" in str(info.value)


def test_read_accepts_annotation_file_path(tmp_path, samples):
    ann = write_dataset(tmp_path, samples[:2], CATS)
    ds = read_dataset(ann)
    assert ds.root == tmp_path and len(ds) == 2


def test_missing_folder_file_and_bad_json(tmp_path):
    with pytest.raises(DatasetFormatError, match="does not exist"):
        read_dataset(tmp_path / "nope")
    with pytest.raises(DatasetFormatError, match="no annotations.json"):
        read_dataset(tmp_path)
    _write_doc(tmp_path, "{not json")
    with pytest.raises(DatasetFormatError, match="invalid JSON"):
        read_dataset(tmp_path)


def test_image_size_mismatch_on_load(tmp_path, samples):
    write_dataset(tmp_path, samples[:1], CATS)
    doc = json.loads((tmp_path / "annotations.json").read_text())
    doc["images"][0]["width"] = 36
    doc["annotations"] = []
    _write_doc(tmp_path, doc)
    with pytest.raises(DatasetFormatError, match="width=36"):
        read_dataset(tmp_path).load_image(0)


def test_atomic_helpers(tmp_path):
    target = tmp_path / "sub" / "f.txt"
    atomic_write_text(target, "one")
    assert target.read_text() == "one"
    assert backup_existing(tmp_path / "missing.txt") is None
    b1 = backup_existing(target)
    b2 = backup_existing(target)
    assert b1 != b2 and b1.read_text() == b2.read_text() == "one"
    assert b1.name.startswith("f.txt.") and b1.name.endswith(".bak")
    atomic_write_text(target, "two")
    assert target.read_text() == "two"
    # no temporary files left behind
    assert sorted(p.name for p in target.parent.iterdir() if p.name.startswith(".")) == []
    moved = backup_existing(target, move=True)
    assert not target.exists() and moved.read_text() == "two"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        atomic_write_text(target, "three")
