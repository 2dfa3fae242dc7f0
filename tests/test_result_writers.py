"""The result writers of blastoseg.results (issue 14, item 4): known answers on hand-made masks,
and the CLI and the napari exports writing the same files with the same columns."""

from __future__ import annotations

import io
from types import SimpleNamespace

import numpy as np
import pytest
import tifffile

from blastoseg.errors import DatasetFormatError
from blastoseg.instances import FrameInstances
from blastoseg.io.dataset import read_dataset
from blastoseg.results.amodal import write_amodal_results
from blastoseg.results.brightfield import write_brightfield_results
from blastoseg.results.files import csv_text, refuse_existing, tiff_bytes
from blastoseg.results.overlap import write_overlap_results

SHAPE = (20, 30)
COUNTS_HEADER = "frame,cell_count,mean_diameter_px,mean_diameter_um,diameter_cv,overlap_fraction"
CELLS_HEADER = ("frame,instance,track_id,area_px,area_um2,diameter_px,diameter_um,eccentricity,"
                "overlap_fraction,centroid_y,centroid_x,overlap_px,neighbours,score")


def _frames(scores: bool = True) -> list[FrameInstances]:
    """Frame 0: two 4 x 5 px rectangles (area 20) sharing 2 x 2 px; frame 1: one 3 x 4 px
    rectangle (area 12).

    Known answers: equivalent diameter sqrt(4 * area / pi) = 5.046 and 3.909 px; the
    eccentricity of a w x h pixel block is sqrt(1 - ((h^2 - 1) / 12) / ((w^2 - 1) / 12)) for
    h < w: 0.6124 (4 x 5) and 0.6831 (3 x 4); frame 0's overlap 4 / 36 px covered = 0.1111.
    """
    a = np.zeros((2, *SHAPE), bool)
    a[0, 2:6, 2:7] = True  # centroid (y, x) = (3.5, 4)
    a[1, 4:8, 5:10] = True  # centroid (5.5, 7); shares rows 4-5, columns 5-6 with the first
    b = np.zeros((1, *SHAPE), bool)
    b[0, 10:13, 20:24] = True  # centroid (11, 21.5)
    return [FrameInstances(masks=a, scores=[0.9, 0.5] if scores else None),
            FrameInstances(masks=b, scores=[0.75] if scores else None)]


def _images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 255, (2, *SHAPE), dtype=np.uint8)


def _lines(path) -> list[str]:
    return path.read_text().splitlines()


# --- the amodal writer -------------------------------------------------------------------------

def test_amodal_writer_known_answers(tmp_path):
    frames = _frames()
    frames[0].meta.update(embryo={"cx": 15, "cy": 10, "radius": 9.123, "confidence": 0.8,
                                  "source": "localised", "method": "auto, steady 9",
                                  "note": "2 embryos in view"}, embryo_unsure=False)
    out = write_amodal_results(frames, tmp_path, images=_images(), pixel_size_um=0.5)
    assert set(out) == {"dataset", "counts", "cells", "framing"}
    assert _lines(out["counts"]) == [COUNTS_HEADER,
                                     "0,2,5.046,2.523,0,0.1111",
                                     "1,1,3.909,1.954,0,0"]
    assert _lines(out["cells"]) == [CELLS_HEADER,
                                    "0,1,,20,5,5.046,2.523,0.6124,0.2,3.5,4,4,1,0.9",
                                    "0,2,,20,5,5.046,2.523,0.6124,0.2,5.5,7,4,1,0.5",
                                    "1,1,,12,3,3.909,1.954,0.6831,0,11,21.5,0,0,0.75"]
    assert _lines(out["framing"]) == [
        "frame,source,cx,cy,radius,confidence,unsure,guess_cx,guess_cy,guess_radius,"
        "guess_confidence,method,note",
        '0,localised,15.0,10.0,9.12,0.8,0,,,,,"auto, steady 9",2 embryos in view', "1,,,,,,,,,,,,"]
    assert [c.area_px for c in out.cells] == [20, 20, 12] and len(out.frames) == 2
    ds = read_dataset(tmp_path / "dataset")
    assert ds.categories == {1: "blastomere"} and len(ds) == 2
    assert ds.images[1]["video_id"] == 1 and ds.images[1]["frame_index"] == 1
    assert ds.images[0]["embryo"]["radius"] == 9.12 and ds.images[0]["pixel_size_um"] == 0.5
    assert ds.images[0]["embryo"]["method"] == "auto, steady 9"
    assert ds.images[0]["embryo"]["note"] == "2 embryos in view"
    np.testing.assert_array_equal(ds.instances(0).masks, frames[0].masks)


def test_amodal_writer_refuses_existing_results_and_drops_a_stale_framing(tmp_path):
    frames = _frames()
    frames[0].meta.update(embryo={"cx": 1, "cy": 1, "radius": 1}, embryo_unsure=True)
    write_amodal_results(frames, tmp_path, images=_images())
    with pytest.raises(DatasetFormatError, match="exists already"):
        write_amodal_results(frames, tmp_path, images=_images())
    out = write_amodal_results(_frames(), tmp_path, images=_images(), overwrite=True)
    assert "framing" not in out and not (tmp_path / "framing.csv").exists()
    assert list((tmp_path / "dataset").glob("annotations.json.*.bak"))  # the old one kept


def test_a_result_without_cells_keeps_the_header(tmp_path):
    out = write_amodal_results([FrameInstances.empty(SHAPE)], tmp_path,
                               images=_images()[:1])
    assert _lines(out["cells"]) == [CELLS_HEADER]
    assert _lines(out["counts"]) == [COUNTS_HEADER, "0,0,0,,0,0"]
    assert read_dataset(tmp_path / "dataset").images[0]["file_name"] == "images/000001.png"


def test_untracked_label_values_number_the_cells_but_are_no_tracks(tmp_path):
    frames = _frames()
    frames[0].track_ids = np.array([6, 2])  # napari label values 7 and 3
    out = write_amodal_results(frames, tmp_path, images=_images(), first_frame=5,
                               video=True, track_ids=False)
    assert [(c.frame, c.instance, c.track_id) for c in out.cells] == [
        (5, 7, None), (5, 3, None), (6, 1, None)]
    ds = read_dataset(tmp_path / "dataset")
    assert ds.instances(0).track_ids is None and ds.images[0]["frame_index"] == 5
    assert frames[0].track_ids is not None  # the caller's results are left as they were


# --- the brightfield writer --------------------------------------------------------------------

def test_brightfield_writer_has_the_amodal_tables_plus_the_maps(tmp_path):
    frames = _frames()
    for k, inst in enumerate(frames):
        inst.meta.update(overlap=np.full(SHAPE, 0.25 * k), nuclei=np.full(SHAPE, 0.5))
    out = write_brightfield_results(frames, tmp_path / "bf", images=_images(),
                                    pixel_size_um=0.5)
    write_amodal_results(_frames(), tmp_path / "am", images=_images(), pixel_size_um=0.5)
    for name in ("counts.csv", "cells.csv"):
        assert (tmp_path / "bf" / name).read_text() == (tmp_path / "am" / name).read_text()
    assert set(out) == {"dataset", "counts", "cells", "nuclei_probability",
                        "overlap_probability"}
    overlap = tifffile.imread(out["overlap_probability"])
    assert overlap.dtype == np.float32 and overlap.shape == (2, *SHAPE)
    assert overlap[1].max() == pytest.approx(0.25)
    assert read_dataset(tmp_path / "bf" / "dataset").categories == {1: "cell"}
    one = write_brightfield_results(frames[:1], tmp_path / "one", images=_images()[:1])
    assert tifffile.imread(one["nuclei_probability"]).shape == SHAPE  # one frame: (H, W)


def test_brightfield_cli_and_widget_export_write_the_same_tables(tmp_path):
    """``blastoseg segment brightfield`` calls write_brightfield_results on the predictions;
    the widget's Export reads the same cells back from its Labels layers
    (export_brightfield): the two folders get identical counts.csv and cells.csv."""
    from blastoseg.napari.brightfield_job import export_brightfield
    from blastoseg.napari.result_layers import Placement, ResultLayerBuilder

    frames, images = _frames(scores=False), _images()  # layers carry no scores
    for inst in frames:
        inst.meta["overlap"] = np.full(SHAPE, 0.5, np.float32)
    cli = write_brightfield_results(frames, tmp_path / "cli", images=images, pixel_size_um=0.5)

    builder = ResultLayerBuilder(2, SHAPE, "bf", Placement(axes="T"), extra_meta={})
    for t, inst in enumerate(frames):
        builder.add(t, inst)
    layers = [SimpleNamespace(data=d, name=kw["name"], metadata=kw["metadata"])
              for d, kw, _ in builder.layer_data()
              if kw["metadata"]["blastoseg"]["role"] == "amodal"]
    overlap_layer = SimpleNamespace(data=np.stack([f.meta["overlap"] for f in frames]),
                                    metadata={"blastoseg": {"head": "overlap"}})
    image = SimpleNamespace(data=images, name="bf", rgb=False)
    widget = export_brightfield(tmp_path / "widget", image, layers, [overlap_layer],
                                pixel_size_um=0.5)
    for name in ("counts", "cells"):
        assert widget[name].read_text() == cli[name].read_text()
    assert widget["frames"] == 2 and len(widget["rows"]) == 3
    np.testing.assert_array_equal(tifffile.imread(widget["overlap_probability"]),
                                  tifffile.imread(cli["overlap_probability"]))
    a, b = read_dataset(tmp_path / "widget"), read_dataset(tmp_path / "cli" / "dataset")
    assert a.categories == b.categories == {1: "cell"}
    assert [e["file_name"] for e in a.images] == [e["file_name"] for e in b.images]
    with pytest.raises(DatasetFormatError, match="exists already"):
        export_brightfield(tmp_path / "widget", image, layers, [overlap_layer])


def test_measure_widget_export_writes_the_cli_tables(tmp_path):
    """The Measure widget's "Export results" (export_result) writes the amodal CLI's
    counts.csv / cells.csv next to its label TIFFs."""
    from blastoseg.napari.export_results import export_result
    from blastoseg.napari.result_layers import Placement, ResultLayerBuilder

    frames, images = _frames(scores=False), _images()
    cli = write_amodal_results(frames, tmp_path / "cli", images=images)
    builder = ResultLayerBuilder(2, SHAPE, "im", Placement(axes="T"), extra_meta={})
    for t, inst in enumerate(frames):
        builder.add(t, inst)
    layers = [SimpleNamespace(data=d, name=kw["name"], metadata=kw["metadata"])
              for d, kw, _ in builder.layer_data()
              if kw["metadata"]["blastoseg"]["role"] == "amodal"]
    out = export_result(tmp_path / "napari", SimpleNamespace(data=images, name="im"), layers)
    for name in ("counts", "cells"):
        assert out[name].read_text() == cli[name].read_text()
    assert len(out["tiffs"]) == len(layers) and out["frames"] == 2


# --- the overlap writer and the file helpers ---------------------------------------------------

def test_overlap_writer(tmp_path):
    prob = np.linspace(0, 1, 2 * 20 * 30, dtype=np.float32).reshape(2, *SHAPE)
    result = SimpleNamespace(probabilities={"cytoplasm": 1 - prob, "overlap": prob},
                             overlap_mask=prob >= 0.3)
    out = write_overlap_results(result, tmp_path)
    assert set(out) == {"cytoplasm_probability", "overlap_probability", "overlap_mask"}
    np.testing.assert_array_equal(tifffile.imread(out["overlap_probability"]), prob)
    mask = tifffile.imread(tmp_path / "overlap_mask.tif")
    assert mask.dtype == np.uint8 and mask.sum() == (prob >= 0.3).sum()
    with pytest.raises(DatasetFormatError, match="overwrite"):
        write_overlap_results(result, tmp_path)
    write_overlap_results(result, tmp_path, overwrite=True)


@pytest.mark.parametrize("array", [
    np.arange(6, dtype=np.float32).reshape(2, 3) / 7,
    np.arange(24, dtype=np.uint8).reshape(2, 3, 4),
    np.arange(24, dtype=np.uint16).reshape(2, 3, 4)[:, ::-1],  # not contiguous
])
def test_tiff_bytes_round_trip(array):
    with tifffile.TiffFile(io.BytesIO(tiff_bytes(array))) as tif:
        back = tif.asarray()
        assert tif.is_imagej and tif.series[0].axes == ("TYX" if array.ndim == 3 else "YX")
    assert back.dtype == array.dtype
    np.testing.assert_array_equal(back, array)


def test_csv_text_and_refuse_existing(tmp_path):
    text = csv_text(("a", "b", "c"), [{"a": 1, "b": None, "c": 2 / 3}, {"a": "x,y", "b": 0.0,
                                                                       "c": np.float32(1e5)}])
    assert text == 'a,b,c\n1,,0.6667\n"x,y",0,1e+05\n'
    refuse_existing([tmp_path / "none.csv"], overwrite=False)
    (tmp_path / "there.csv").write_text("")
    with pytest.raises(DatasetFormatError, match="there.csv exists already"):
        refuse_existing([tmp_path / "there.csv"], overwrite=False)
    refuse_existing([tmp_path / "there.csv"], overwrite=True)
