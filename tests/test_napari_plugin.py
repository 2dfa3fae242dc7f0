"""The napari plugin in a headless viewer: discovery, sample data, reader, writer, widget."""

import numpy as np
import pytest
import tifffile
from skimage.draw import disk

from blastoseg.instances import FrameInstances
from blastoseg.io import Sample, read_dataset, write_dataset

pytestmark = pytest.mark.gui


def test_manifest_is_valid_and_discovered():
    from npe2 import PluginManager

    pm = PluginManager.instance()
    pm.discover()
    manifest = pm.get_manifest("blastoseg")
    assert {s.key for s in manifest.contributions.sample_data} == {"embryo", "timelapse"}
    assert manifest.contributions.readers and manifest.contributions.writers
    assert any(w.display_name == "Generate synthetic embryos" for w in manifest.contributions.widgets)


def test_plugin_listed_in_plugins_menu(make_napari_viewer):
    viewer = make_napari_viewer()
    titles = [a.text() for a in viewer.window.plugins_menu.actions()]
    submenus = [a.menu().title() for a in viewer.window.plugins_menu.actions() if a.menu()]
    assert any("blastoseg" in t or "Generate synthetic embryos" in t for t in titles + submenus)


def test_sample_embryo_loads(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("blastoseg", "embryo")
    assert len(viewer.layers) == 1
    layer = viewer.layers[0]
    assert layer.data.shape == (500, 500) and layer.data.dtype == np.uint8
    assert layer.metadata["pixel_size_um"] > 0


@pytest.mark.slow
def test_sample_timelapse_loads(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("blastoseg", "timelapse")
    data = viewer.layers[0].data
    assert data.ndim == 3 and data.shape[0] >= 16 and data.shape[1:] == (500, 500)
    assert viewer.dims.nsteps[0] == data.shape[0]


def test_reader_opens_a_frame_folder_with_focal_planes(make_napari_viewer, tmp_path):
    rng = np.random.default_rng(0)
    frames = {}
    for t in (1, 2, 10):  # natural sort: 10 comes last
        for f in (-15, 0, 15):
            img = rng.integers(0, 255, (40, 50), dtype=np.uint8)
            frames[(t, f)] = img
            tifffile.imwrite(tmp_path / f"WELL3_RUN{t}_F{f}.tif", img)
    viewer = make_napari_viewer()
    layers = viewer.open(str(tmp_path), plugin="blastoseg")
    data = np.asarray(layers[0].data)
    assert data.shape == (3, 3, 40, 50)
    np.testing.assert_array_equal(data[2, 0], frames[(10, -15)])
    assert layers[0].metadata["blastoseg"]["focal_planes"] == [-15, 0, 15]


def test_reader_reports_a_corrupt_file(tmp_path):
    from blastoseg.errors import ImageReadError
    from blastoseg.napari._reader import napari_get_reader

    bad = tmp_path / "frame.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    reader = napari_get_reader(str(bad))
    with pytest.raises(ImageReadError, match="frame.png"):
        reader(str(bad))
    assert napari_get_reader(str(tmp_path / "notes.txt")) is None


def _overlapping_frame(shape=(64, 64)):
    masks = np.zeros((3, *shape), bool)
    for m, c in zip(masks, [(25, 25), (30, 35), (45, 45)], strict=True):
        m[disk(c, 12, shape=shape)] = True
    return FrameInstances(masks=masks)


def test_dataset_folder_opens_as_image_and_packed_labels(make_napari_viewer, tmp_path):
    inst = _overlapping_frame()
    image = np.random.default_rng(1).integers(0, 255, (64, 64), dtype=np.uint8)
    write_dataset(tmp_path / "ds", [Sample(image=image, instances=inst)])
    viewer = make_napari_viewer()
    layers = viewer.open(str(tmp_path / "ds"), plugin="blastoseg")
    kinds = [type(layer).__name__ for layer in layers]
    assert kinds[0] == "Image" and kinds.count("Labels") >= 2
    coverage = sum((np.asarray(layer.data) > 0).astype(int) for layer in layers[1:])
    np.testing.assert_array_equal(coverage, inst.coverage())


def test_writer_round_trips_labels_layers(make_napari_viewer, tmp_path):
    from blastoseg.napari.layer_conversion import instances_to_label_layers

    inst = _overlapping_frame()
    image = np.random.default_rng(2).integers(0, 255, (64, 64), dtype=np.uint8)
    viewer = make_napari_viewer()
    viewer.add_image(image, name="frame")
    for k, labels in enumerate(instances_to_label_layers([inst])):
        viewer.add_labels(labels[0], name=f"amodal {k + 1}")
    out = tmp_path / "export"
    viewer.layers.selection = set(viewer.layers)
    viewer.layers.save(str(out), selected=True, plugin="blastoseg")
    ds = read_dataset(out)
    back = ds.instances(0)
    np.testing.assert_array_equal(back.masks, inst.masks)
    np.testing.assert_array_equal(ds.load_image(0), image)
    # saving an edited mask again keeps the previous annotations as a backup
    previous = (out / "annotations.json").read_text()
    viewer.layers["amodal 1"].data[:5, :5] = 9
    viewer.layers.save(str(out), selected=True, plugin="blastoseg")
    backups = list(out.glob("annotations.json.*.bak"))
    assert len(backups) == 1 and backups[0].read_text() == previous
    assert len(read_dataset(out).instances(0)) == 4
    # the label layers also went out as TIFFs (the previous ones kept as backups)
    import tifffile

    tiffs = sorted((out / "labels").glob("*.tif"))
    assert [t.name for t in tiffs] == [f"amodal_{k + 1}.tif" for k in range(len(tiffs))]
    np.testing.assert_array_equal(tifffile.imread(tiffs[0]), viewer.layers["amodal 1"].data)
    assert list((out / "labels").glob("amodal_1.tif.*.bak"))


def test_synth_widget_generates_and_replaces(make_napari_viewer, qtbot):
    from blastoseg.napari._synth_widget import SynthEmbryoWidget

    viewer = make_napari_viewer()
    widget = SynthEmbryoWidget(viewer)
    widget.mode.value = "single frame"
    widget.n_cells.value = 4
    widget.size.value = 160
    for _ in range(2):  # the second run replaces the first run's layers
        widget.start()
        qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)
    images = [lyr for lyr in viewer.layers if type(lyr).__name__ == "Image"]
    labels = [lyr for lyr in viewer.layers if type(lyr).__name__ == "Labels"]
    assert len(images) == 1 and images[0].data.shape == (160, 160)
    values = set()
    for lyr in labels:
        values |= {int(v) for v in np.unique(lyr.data) if v}
    assert len(values) == 4
    assert widget.status.value == "4 cells"


def test_synth_widget_cancel_stops_a_timelapse(make_napari_viewer, qtbot):
    from blastoseg.napari._synth_widget import SynthEmbryoWidget

    viewer = make_napari_viewer()
    widget = SynthEmbryoWidget(viewer)
    widget.mode.value = "time-lapse"
    widget.n_frames.value = 400
    widget.size.value = 128
    widget.start()
    qtbot.waitUntil(lambda: widget.progress.value >= 2, timeout=60_000)
    widget.cancel()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)
    assert widget.progress.value < 400
    assert len(viewer.layers) == 0
    assert widget.status.value == "cancelled"


def test_synth_widget_blastocyst_stage(make_napari_viewer, qtbot):
    from blastoseg.napari._synth_widget import SynthEmbryoWidget

    viewer = make_napari_viewer()
    widget = SynthEmbryoWidget(viewer)
    widget.mode.value = "single frame"
    widget.stage.value = "blastocyst"
    widget.size.value = 128
    widget.start()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)
    assert viewer.layers["synthetic embryo"].data.shape == (128, 128)
    parts = viewer.layers["blastocyst components"].data
    assert {int(v) for v in np.unique(parts)} == {0, 1, 2, 3, 4}  # zona, TE, cavity, ICM
    assert widget.status.value.endswith("blastocyst (cells not counted)")
    widget.mode.value = "time-lapse"  # blastocysts are single frames: a clear message
    widget.start()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)
    assert "single frame" in widget.status.value


def test_choosing_a_blastocyst_picks_single_frame(make_napari_viewer):
    from blastoseg.napari._synth_widget import SynthEmbryoWidget

    widget = SynthEmbryoWidget(make_napari_viewer())
    widget.mode.value = "time-lapse"
    widget.stage.value = "blastocyst"
    assert widget.mode.value == "single frame" and "single frame" in widget.status.value
