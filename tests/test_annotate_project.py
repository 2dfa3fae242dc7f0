"""Annotation projects (blastoseg.annotate): save/reopen, autosave and recovery, export for
training with a split, import from COCO and LabelMe, training-data checks. No napari, no Qt."""

import json
import warnings
from pathlib import Path
from types import SimpleNamespace

import imageio.v3 as iio
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from blastoseg.annotate import (
    PREV_FILE,
    AnnotationProject,
    ProjectRecoveredWarning,
    check_training_data,
    export_for_training,
    import_annotations,
    import_project,
    validate_training_data,
)
from blastoseg.annotate import project as project_module
from blastoseg.errors import DatasetFormatError, InvalidImageError
from blastoseg.instances import FrameInstances
from blastoseg.io import Sample, read_dataset, write_dataset
from blastoseg.synth import EmbryoConfig, render_embryo

S = 96
CFG = EmbryoConfig(image_size=(S, S))


@pytest.fixture(scope="module")
def embryos():
    """Six small synthetic frames (image, instances with visible masks and track ids)."""
    return [render_embryo(2 + k % 3, seed=k, config=CFG) for k in range(6)]


def _stack(embryos, n=3):
    return np.stack([f.image for f in embryos[:n]]), [f.instances for f in embryos[:n]]


def _same(a: FrameInstances, b: FrameInstances):
    assert np.array_equal(a.masks, b.masks)
    assert np.array_equal(a.class_ids, b.class_ids)
    assert np.array_equal(a.scores, b.scores)
    for x, y in ((a.visible_masks, b.visible_masks), (a.track_ids, b.track_ids)):
        assert (x is None) == (y is None)
        if x is not None:
            assert np.array_equal(x, y)


def _disk(cy, cx, r, shape=(S, S)):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


# --- projects ---------------------------------------------------------------------------------

def test_create_edit_save_reopen_roundtrip(tmp_path, embryos):
    images, insts = _stack(embryos)
    p = AnnotationProject.create(tmp_path / "proj", images, insts, pixel_size_um=0.8,
                                 source="unit test")
    assert p.n_frames == 3 and not p.is_dirty and p.pixel_size_um == 0.8
    assert [p.frame_info(t)["frame_index"] for t in range(3)] == [0, 1, 2]
    assert {p.frame_info(t)["video_id"] for t in range(3)} == {1}
    _same(p.instances(1), insts[1])
    assert np.array_equal(p.image(2), images[2])

    p.set_instances(1, p.instances(1))  # re-setting the same content is not an edit
    assert not p.is_dirty
    new0 = FrameInstances(masks=np.stack([_disk(30, 30, 12), _disk(40, 45, 14)]),
                          scores=[0.5, 1.0], track_ids=[7, 9],
                          visible_masks=np.stack([_disk(30, 30, 12) & ~_disk(40, 45, 14),
                                                  _disk(40, 45, 14)]))
    new2 = insts[2].select([0])
    p.set_instances(0, new0)
    p.set_instances(2, new2)
    p.set_reviewed(0)
    p.set_reviewed(2, True)
    p.set_reviewed(2, False)
    p.set_note(1, "cell 3 out of focus")
    assert p.is_dirty and p.dirty_frames == [0, 1, 2]
    p.save()
    assert not p.is_dirty

    q = AnnotationProject.open(tmp_path / "proj")
    _same(q.instances(0), new0)
    _same(q.instances(1), insts[1])
    _same(q.instances(2), new2)
    assert q.reviewed_frames() == [0] and q.reviewed(0) and not q.reviewed(2)
    assert q.note(1) == "cell 3 out of focus" and q.note(0) == ""
    assert q.pixel_size_um == 0.8 and q.info["source"] == "unit test"
    assert np.array_equal(q.image(0), images[0])
    # the project is a valid dataset: the reader and pycocotools open it
    ds = read_dataset(tmp_path / "proj")
    assert ds.extra(0) == {"reviewed": True}
    _same(ds.instances(0), new0)
    entry = json.loads((tmp_path / "proj" / "annotations.json").read_text())["images"][2]
    assert "reviewed" not in entry  # unset flags are left out


def test_images_not_rewritten_on_save(tmp_path, embryos):
    images, insts = _stack(embryos)
    p = AnnotationProject.create(tmp_path / "proj", images, insts)
    files = sorted((tmp_path / "proj" / "images").iterdir())
    before = [(f.stat().st_ino, f.stat().st_mtime_ns) for f in files]
    for t in range(3):
        p.set_instances(t, insts[t].select([0]))
        p.set_reviewed(t)
        p.save()
    assert [(f.stat().st_ino, f.stat().st_mtime_ns) for f in files] == before
    assert sorted((tmp_path / "proj" / "images").iterdir()) == files


def test_backups_are_bounded(tmp_path, embryos):
    images, insts = _stack(embryos)
    root = tmp_path / "proj"
    p = AnnotationProject.create(root, images, insts)
    p.save()  # nothing changed: no write, no backup
    assert not list(root.glob("*.bak")) and not (root / PREV_FILE).exists()
    p.set_reviewed(0)
    p.save()
    first = (root / "annotations.json").read_text()
    assert len(list(root.glob("*.bak"))) == 1  # the first save of a session keeps one
    p.set_reviewed(1)
    p.save()
    assert len(list(root.glob("*.bak"))) == 1  # within the interval: only .prev moves
    assert (root / PREV_FILE).read_text() == first

    q = AnnotationProject.open(root, backup_interval_s=0, keep_backups=2)
    for t in range(3):
        q.set_note(t, f"note {t}")
        q.save()
    assert len(list(root.glob("annotations.json.*.bak"))) == 2


def test_autosave_interval_and_flush(tmp_path, embryos, monkeypatch):
    images, insts = _stack(embryos)
    p = AnnotationProject.create(tmp_path / "proj", images, insts)
    clock = [1000.0]
    monkeypatch.setattr(project_module, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    p._last_save = clock[0]
    assert not p.autosave()  # nothing to save
    p.set_reviewed(0)
    clock[0] += 1.0
    assert not p.autosave(min_interval_s=2.0) and p.is_dirty  # too soon after the last save
    clock[0] += 1.5
    assert p.autosave(min_interval_s=2.0) and not p.is_dirty
    p.set_reviewed(1)
    assert p.flush() and not p.flush()
    assert AnnotationProject.open(tmp_path / "proj").reviewed_frames() == [0, 1]
    with AnnotationProject.open(tmp_path / "proj") as q:
        q.set_reviewed(2)
    assert AnnotationProject.open(tmp_path / "proj").reviewed_frames() == [0, 1, 2]


def test_crash_during_save_keeps_last_good_version(tmp_path, embryos, monkeypatch):
    images, insts = _stack(embryos)
    root = tmp_path / "proj"
    p = AnnotationProject.create(root, images, insts)
    p.set_reviewed(0)
    p.save()
    good = (root / "annotations.json").read_text()

    def crash(path, text):  # the process dies before the atomic rename
        raise OSError("simulated crash")

    monkeypatch.setattr(project_module, "atomic_write_text", crash)
    p.set_instances(1, FrameInstances.empty((S, S)))
    with pytest.raises(OSError, match="simulated"):
        p.save()
    assert p.is_dirty  # nothing was marked saved
    assert (root / "annotations.json").read_text() == good
    assert not [f for f in root.iterdir() if f.name.endswith(".tmp")]
    assert AnnotationProject.open(root).reviewed_frames() == [0]
    monkeypatch.undo()
    p.save()  # the next save succeeds
    assert len(AnnotationProject.open(root).instances(1)) == 0


def test_truncated_file_recovers_previous_version(tmp_path, embryos):
    images, insts = _stack(embryos)
    root = tmp_path / "proj"
    p = AnnotationProject.create(root, images, insts)
    p.set_reviewed(0)
    p.save()
    p.set_reviewed(1)
    p.save()
    ann = root / "annotations.json"
    ann.write_text(ann.read_text()[: len(ann.read_text()) // 2])  # e.g. a sync tool's damage
    with pytest.warns(ProjectRecoveredWarning, match="Recovered"):
        q = AnnotationProject.open(root)
    assert q.reviewed_frames() == [0]  # the version before the damaged one
    assert list(root.glob("annotations.json.corrupt-*"))  # the damaged file is kept
    _same(q.instances(2), insts[2])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        AnnotationProject.open(root)  # restored on disk: no warning any more

    bare = tmp_path / "bare"
    write_dataset(bare, [Sample(image=images[0], instances=insts[0])])
    (bare / "annotations.json").write_text("{")
    with pytest.raises(DatasetFormatError, match="invalid JSON"):
        AnnotationProject.open(bare)


def test_create_and_open_errors(tmp_path, embryos):
    images, insts = _stack(embryos)
    root = tmp_path / "proj"
    AnnotationProject.create(root, images, insts)
    with pytest.raises(DatasetFormatError, match="already holds a project"):
        AnnotationProject.create(root, images)
    p = AnnotationProject.create(root, images[:2], overwrite=True)  # old one kept as .bak
    assert p.n_frames == 2 and len(p.instances(0)) == 0 and list(root.glob("*.bak"))
    with pytest.raises(InvalidImageError, match="instance masks"):
        p.set_instances(0, FrameInstances.empty((S, S + 1)))
    with pytest.raises(DatasetFormatError, match="no category"):
        p.set_instances(0, FrameInstances(masks=_disk(30, 30, 9)[None], class_ids=[4]))
    with pytest.raises(InvalidImageError, match="3 frames but 2"):
        AnnotationProject.create(tmp_path / "x", images, insts[:2])
    with pytest.raises(InvalidImageError, match="shape"):
        AnnotationProject.create(tmp_path / "x", np.zeros((2, 2, 4, 4)))
    with pytest.raises(DatasetFormatError, match="no annotations.json"):
        AnnotationProject.open(tmp_path)
    (root / "images" / "frame_0001.png").unlink()
    with pytest.raises(DatasetFormatError, match="missing"):
        AnnotationProject.open(root)


# --- export for training ---------------------------------------------------------------------

def _two_sources(tmp_path, embryos):
    """A project with three 2-frame videos and a folder of three independent frames."""
    frames = [{"video_id": v, "frame_index": k} for v in (1, 2, 3) for k in (0, 1)]
    a = AnnotationProject.create(tmp_path / "a", [f.image for f in embryos],
                                 [f.instances for f in embryos], frames=frames)
    b = AnnotationProject.create(tmp_path / "b", [f.image for f in embryos[:3]],
                                 [f.instances for f in embryos[:3]])
    return a, b


def _exported(folder):
    ds = read_dataset(folder)
    return [(Path(e["source_dataset"]).name, e["source_file"], e.get("video_id"))
            for e in ds.images]


def test_export_split_keeps_videos_together_and_trains(tmp_path, embryos):
    from blastoseg.train.amodal_data import AmodalDataset

    a, b = _two_sources(tmp_path, embryos)
    res = export_for_training([a, tmp_path / "b"], tmp_path / "out", val_fraction=0.3, seed=1)
    assert res.n_train + res.n_val == 9 and res.n_val >= 1
    train, val = _exported(res.train_dir), _exported(res.val_dir)
    assert len(train) == res.n_train and len(val) == res.n_val
    # frames of one video never straddle the split
    videos = {"train": {(s, v) for s, _, v in train if v}, "val": {(s, v) for s, _, v in val if v}}
    assert not videos["train"] & videos["val"]
    for split in (train, val):
        for src, vid in {(s, v) for s, _, v in split if v}:
            assert sum(1 for s, _, v in split if (s, v) == (src, vid)) == 2
    again = export_for_training([a, b], tmp_path / "out2", val_fraction=0.3, seed=1)
    assert _exported(again.train_dir) == train and _exported(again.val_dir) == val
    with pytest.raises(DatasetFormatError, match="already exists"):
        export_for_training([a, b], tmp_path / "out", val_fraction=0.3, seed=1)

    ds = AmodalDataset(res.train_dir, working_size=64)
    image, target = ds[0]
    assert image.shape == (1, 64, 64) and len(target["boxes"]) >= 1


def test_export_by_frame_reviewed_only_and_empty_frames(tmp_path, embryos):
    a, b = _two_sources(tmp_path, embryos)
    calls = []
    res = export_for_training(b, tmp_path / "f", val_fraction=0.34, split_by="frame",
                              progress=lambda done, total: calls.append((done, total)))
    assert (res.n_train, res.n_val) == (2, 1) and calls == [(1, 3), (2, 3), (3, 3)]
    a.set_instances(5, FrameInstances.empty((S, S)))  # unsaved edits are exported too
    for t in (0, 1, 4, 5):
        a.set_reviewed(t)
    res = export_for_training(a, tmp_path / "r", val_fraction=0.4, reviewed_only=True)
    assert res.n_train + res.n_val == 3 and res.skipped_empty == 1
    assert res.skipped_unreviewed == 2
    res = export_for_training(a, tmp_path / "all", val_fraction=0)
    assert res.val_dir is None and res.n_train == 5 and not (tmp_path / "all" / "val").exists()


def test_export_errors(tmp_path, embryos):
    a, b = _two_sources(tmp_path, embryos)
    one = AnnotationProject.create(tmp_path / "one", np.stack([f.image for f in embryos[:2]]),
                                   [f.instances for f in embryos[:2]])
    with pytest.raises(DatasetFormatError, match="single video"):
        export_for_training(one, tmp_path / "o1")
    single = AnnotationProject.create(tmp_path / "single", embryos[0].image[None],
                                      [embryos[0].instances])
    with pytest.raises(DatasetFormatError, match="only 1 frame to export"):
        export_for_training(single, tmp_path / "s1", split_by="frame")
    assert export_for_training(single, tmp_path / "s2", val_fraction=0).n_train == 1
    assert export_for_training(one, tmp_path / "o2", split_by="frame").n_val == 1
    empty = AnnotationProject.create(tmp_path / "empty", np.stack([f.image for f in embryos]))
    with pytest.raises(DatasetFormatError, match="6 have no annotations"):
        export_for_training(empty, tmp_path / "o3")
    with pytest.raises(DatasetFormatError, match="not marked reviewed"):
        export_for_training(b, tmp_path / "o4", reviewed_only=True)
    write_dataset(tmp_path / "none", [])
    with pytest.raises(DatasetFormatError, match="no frames"):
        export_for_training(tmp_path / "none", tmp_path / "o5")
    with pytest.raises(ValueError, match="split_by"):
        export_for_training(b, tmp_path / "o6", split_by="well")
    (tmp_path / "b" / "images" / "frame_0001.png").unlink()
    _bad_size(tmp_path / "a")
    with pytest.raises(DatasetFormatError, match="2 problem") as err:
        export_for_training([tmp_path / "a", tmp_path / "b"], tmp_path / "o7")
    assert "frame_0001.png" in str(err.value) and "(64, 64)" in str(err.value)
    assert not (tmp_path / "o7").exists()  # nothing written


def _bad_size(root):
    """Replace frame 0's picture with a smaller one (masks no longer fit)."""
    iio.imwrite(root / "images" / "frame_0000.png", np.zeros((64, 64), np.uint8))


def test_validate_training_data(tmp_path, embryos):
    a, b = _two_sources(tmp_path, embryos)
    assert validate_training_data([tmp_path / "a", b]) == []
    check_training_data(tmp_path / "a")
    b.set_instances(0, FrameInstances.empty((S, S)))
    b.save()
    empty = AnnotationProject.create(tmp_path / "empty", [embryos[0].image])
    _bad_size(tmp_path / "a")
    problems = validate_training_data([a, b, empty, tmp_path / "nothing"])
    text = "\n".join(problems)
    assert len(problems) == 4, problems
    assert "(64, 64)" in text and "1 of 3 frames have no annotations" in text
    assert "none of its 1 frames" in text and "does not exist" in text
    assert validate_training_data(b, allow_empty_frames=True) == []
    assert validate_training_data([]) == ["no training data given"]
    with pytest.raises(DatasetFormatError, match="4 problem"):
        check_training_data([a, b, empty, tmp_path / "nothing"])
    # a cell whose mask has no pixels (issue 18 item 13: it was not reported)
    masks = np.zeros((2, S, S), bool)
    masks[0, 5:15, 5:15] = True
    b.set_instances(0, FrameInstances(masks=masks))
    b.save()
    (problem,) = validate_training_data(b)
    assert "1 of its 2 cell masks are empty (cell 2 first)" in problem


# --- import ------------------------------------------------------------------------------------

def _coco_folder(tmp_path, segmentation_of):
    """A plain COCO file with its images in images/ next to it, file names without folder."""
    root = tmp_path / "coco"
    (root / "images").mkdir(parents=True)
    masks = [_disk(30, 30, 10), _disk(50, 60, 15)]
    anns = []
    for k, name in enumerate(["a.png", "b.png"]):
        iio.imwrite(root / "images" / name, np.full((S, S), 60 + k, np.uint8))
        for m in masks[: k + 1]:
            anns.append({"id": len(anns) + 1, "image_id": k + 1, "category_id": 3,
                         "segmentation": segmentation_of(m)})
    doc = {"images": [{"id": k + 1, "file_name": n, "height": S, "width": S}
                      for k, n in enumerate(["a.png", "b.png"])],
           "annotations": anns, "categories": [{"id": 3, "name": "cell"}]}
    (root / "instances.json").write_text(json.dumps(doc))
    return root, masks


def _rle(mask):
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode()}


def _rle_list(mask):
    """Uncompressed COCO RLE: run lengths in column-major order, starting with background."""
    flat = mask.ravel(order="F").astype(np.int8)
    counts = np.diff(np.r_[0, np.flatnonzero(np.diff(flat)) + 1, flat.size]).tolist()
    return {"size": list(mask.shape), "counts": ([0] if flat[0] else []) + counts}


def _polygon(mask):
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    return [[int(v) for v in (x0, y0, x1, y0, x1, y1, x0, y1)]]


@pytest.mark.parametrize("kind", ["rle", "rle-list", "polygon"])
def test_import_coco(tmp_path, kind):
    encode = {"rle": _rle, "rle-list": _rle_list, "polygon": _polygon}[kind]
    root, masks = _coco_folder(tmp_path, encode)
    images, insts, meta = import_annotations(root / "instances.json")
    assert meta["format"] == "coco" and meta["categories"] == {3: "cell"}
    assert [im[0, 0] for im in images] == [60, 61] and images[0].shape == (S, S)
    assert [len(i) for i in insts] == [1, 2] and list(insts[1].class_ids) == [3, 3]
    if kind != "polygon":
        assert np.array_equal(insts[1].masks, np.stack(masks))
    else:  # a box polygon covers the mask's bounding box
        assert insts[1].masks[1].sum() >= masks[1].sum()
    p = import_project(root, tmp_path / "proj")  # a folder with one COCO file works too
    assert p.frame_info(1)["file_name"] == "images/b.png" and p.categories == {3: "cell"}
    _same(p.instances(1), insts[1])


def test_import_labelme_and_own_dataset(tmp_path, embryos):
    lm = tmp_path / "lm"
    lm.mkdir()
    iio.imwrite(lm / "emb.png", np.full((S, S), 90, np.uint8))
    shapes = [{"label": "blastomere", "shape_type": "circle", "points": [[40, 30], [50, 30]]},
              {"label": "blastomere", "shape_type": "polygon",
               "points": [[10, 60], [40, 60], [40, 90], [10, 90]]}]
    (lm / "emb.json").write_text(json.dumps({"shapes": shapes, "imagePath": "emb.png",
                                             "imageHeight": S, "imageWidth": S}))
    images, insts, meta = import_annotations(lm / "emb.json")
    assert meta["format"] == "labelme" and len(insts[0]) == 2 and images[0][0, 0] == 90
    assert meta["frames"][0]["extra"] == {"labelme_file": "emb.json"}
    assert insts[0].masks[0][30, 40] and insts[0].masks[1][75, 25]

    frames = [{"video_id": 4, "frame_index": k, "extra": {"reviewed": k == 0}}
              for k in range(2)]
    AnnotationProject.create(tmp_path / "src", [f.image for f in embryos[:2]],
                             [f.instances for f in embryos[:2]], pixel_size_um=1.5,
                             frames=frames)
    images, insts, meta = import_annotations(tmp_path / "src")
    assert meta["format"] == "blastoseg" and meta["pixel_size_um"] == 1.5
    _same(insts[1], embryos[1].instances)
    p = import_project(tmp_path / "src", tmp_path / "copy")
    assert p.reviewed_frames() == [0] and p.frame_info(1)["video_id"] == 4
    assert p.pixel_size_um == 1.5 and np.array_equal(p.image(1), embryos[1].image)


def test_import_errors(tmp_path):
    with pytest.raises(DatasetFormatError, match="no such file"):
        import_annotations(tmp_path / "missing.json")
    (tmp_path / "x.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(DatasetFormatError, match="neither a COCO"):
        import_annotations(tmp_path / "x.json")
    root, _ = _coco_folder(tmp_path, _rle)
    (root / "images" / "b.png").unlink()
    with pytest.raises(DatasetFormatError, match="'b.png' not found"):
        import_annotations(root / "instances.json")
