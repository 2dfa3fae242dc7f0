"""Exporting probability maps P alongside a dataset (blastoseg.targets.probability_export)."""

import json

import numpy as np
import pytest
import tifffile

from blastoseg.errors import BlastosegError, DatasetFormatError
from blastoseg.instances import FrameInstances
from blastoseg.io import read_dataset, write_dataset
from blastoseg.io.dataset import Sample
from blastoseg.io.nuclei import load_nuclei
from blastoseg.targets.probability import probability_map
from blastoseg.targets.probability_export import (
    export_probability_maps,
    iter_export_probability_maps,
    probability_file_names,
)


def _disc(shape, cy, cx, r):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def _dataset(tmp_path, n=3, names=None):
    shape = (48, 64)
    samples = []
    for i in range(n):
        masks = np.stack([_disc(shape, 20, 18 + i, 12), _disc(shape, 26, 38, 13)])
        image = (100 + 50 * masks.sum(0)).astype(np.uint8)
        samples.append(Sample(image=image, instances=FrameInstances(masks=masks),
                              file_name=names[i] if names else f"images/{i:03d}.png",
                              extra={"scene_id": i}))
    root = tmp_path / "ds"
    write_dataset(root, samples, categories={1: "cell"})
    # nuclei for the first image only (sibling <stem>_nuclei.png)
    import imageio.v3 as iio

    nuc = (_disc(shape, 20, 18, 4) | _disc(shape, 26, 38, 4)).astype(np.uint8) * 255
    first = read_dataset(root).images[0]["file_name"]
    stem = first.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    iio.imwrite(root / first.rsplit("/", 1)[0] / f"{stem}_nuclei.png", nuc)
    return root


def test_export_writes_maps_and_extras(tmp_path):
    root = _dataset(tmp_path)
    before = json.loads((root / "annotations.json").read_text())
    calls = []
    out = export_probability_maps(root, "combined_nuclei_overlap",
                                  {"log_scale": 5.0, "overlap_width": 4.0},
                                  progress=lambda d, t: calls.append((d, t)))
    assert out == root / "probability"
    assert calls[-1] == (3, 3)
    ds = read_dataset(root)
    assert ds.info["probability"] == {"variant": "combined_nuclei_overlap", "log_scale": 5.0,
                                      "overlap_width": 4.0}
    for i, entry in enumerate(ds.images):
        assert entry["probability_file"] == f"probability/{i:03d}_P.tif"
        assert entry["scene_id"] == i  # other extras kept
        p = tifffile.imread(root / entry["probability_file"])
        assert p.dtype == np.float32 and p.shape == (48, 64)
        want = probability_map(ds.instances(i), "combined_nuclei_overlap",
                               nuclei=load_nuclei(ds, i), log_scale=5.0, overlap_width=4.0)
        np.testing.assert_array_equal(p, want)
    # the nucleus mask of image 0 was used: its map differs from the no-nuclei computation
    no_nuc = probability_map(ds.instances(0), "combined_nuclei_overlap", log_scale=5.0,
                             overlap_width=4.0)
    assert not np.array_equal(tifffile.imread(root / ds.images[0]["probability_file"]), no_nuc)
    # the old annotations.json was kept; the annotations themselves did not change
    backups = list(root.glob("annotations.json.*.bak"))
    assert len(backups) == 1 and json.loads(backups[0].read_text()) == before
    assert [a["segmentation"] for a in json.loads((root / "annotations.json").read_text())[
        "annotations"]] == [a["segmentation"] for a in before["annotations"]]
    assert not list(root.glob(".probability-export-*"))  # no staging left behind

    # the training reader takes these files (variant "from_dataset")
    from blastoseg.train.overlap_data import _stored_probability

    np.testing.assert_array_equal(_stored_probability(ds, 1, (48, 64)),
                                  tifffile.imread(root / ds.images[1]["probability_file"]))

    # exporting again (another variant) replaces the maps, with a second backup
    export_probability_maps(root, "border")
    assert read_dataset(root).info["probability"] == {"variant": "border"}
    assert len(list(root.glob("annotations.json.*.bak"))) == 2


def test_cancel_and_errors_leave_the_dataset_unchanged(tmp_path):
    root = _dataset(tmp_path)
    text = (root / "annotations.json").read_text()
    work = iter_export_probability_maps(root, "border", {})
    assert next(work) == (0, 3)
    assert next(work) == (1, 3)
    work.close()  # cancelled (what the widget's worker does)
    assert (root / "annotations.json").read_text() == text
    assert not (root / "probability").exists() and not list(root.glob(".probability-export-*"))

    with pytest.raises(BlastosegError, match="unknown probability-map variant"):
        export_probability_maps(root, "from_dataset")
    with pytest.raises(BlastosegError, match="unknown probability-map parameter"):
        export_probability_maps(root, "border", {"nope": 1.0})
    with pytest.raises(BlastosegError, match="must be a number in"):
        export_probability_maps(root, "border", {"floor": 3.0})
    with pytest.raises(DatasetFormatError):
        export_probability_maps(tmp_path / "missing", "border")
    assert (root / "annotations.json").read_text() == text
    assert not list(root.glob("annotations.json.*.bak"))


def test_same_stem_in_two_folders_gets_distinct_files(tmp_path):
    names = ["a/x.png", "b/x.png", "b/y.png"]
    root = _dataset(tmp_path, names=names)
    ds = read_dataset(root)
    assert probability_file_names(ds.images) == [
        "probability/x_1_P.tif", "probability/x_2_P.tif", "probability/y_P.tif"]
    export_probability_maps(root, "nuclei")
    assert sorted(p.name for p in (root / "probability").iterdir()) == [
        "x_1_P.tif", "x_2_P.tif", "y_P.tif"]
