"""The "Oocyte inclusions" widget and its Qt-free job, with a stand-in predictor that returns
the ground truth of synthetic oocytes: the class Labels layer and its colours, the legend,
the measurement table and the CSV export."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from conftest import drive_steps


class TruthPredictor:
    """An oocyte-kind stand-in: each frame's "prediction" is the true class map of the
    synthetic oocyte whose image it is (frames are matched by their pixels)."""

    kind = "oocyte"
    device_name = "CPU (fake)"

    def __init__(self, oocytes, name="fake-oocyte"):
        self.entry = SimpleNamespace(name=name)
        self.oocytes = oocytes

    def iter_predict(self, frames, on_result=None, pixel_size_um=None):
        from blastoseg.measure.oocyte import measure_oocyte
        from blastoseg.predict.oocyte import OocyteResult

        out = []
        for i, frame in enumerate(frames):
            o = next(o for o in self.oocytes if np.array_equal(o.image, np.asarray(frame)))
            r = OocyteResult(labels=o.labels, confidence=np.ones(o.labels.shape, np.float32),
                             measurements=measure_oocyte(o.labels, pixel_size_um),
                             meta={"model": self.entry.name})
            out.append(r)
            yield i + 1, len(frames)
        return out


@pytest.fixture
def oocytes():
    from blastoseg.synth.oocyte import OocyteConfig, render_oocyte

    cfg = OocyteConfig(image_size=(96, 96), cut_by_frame_prob=0.0)
    return [render_oocyte(s, cfg) for s in (2, 3)]


@pytest.fixture
def fake(monkeypatch, tmp_path, oocytes):
    monkeypatch.setenv("BLASTOSEG_HOME", str(tmp_path))
    loads = []  # the predictor options of every load
    monkeypatch.setattr("blastoseg.predict.base.load_predictor",
                        lambda name, device="auto", **o: loads.append(o) or
                        TruthPredictor(oocytes, name))
    monkeypatch.setattr("blastoseg.napari._ui.model_names",
                        lambda *kinds: ["fake-oocyte"] if "oocyte" in kinds else [])
    return loads


def test_job_without_qt(oocytes):
    from blastoseg.napari.oocyte_job import CLASSES_ROLE, class_colormap, legend_html, oocyte_job
    from blastoseg.napari.result_layers import Placement

    stack = np.stack([o.image for o in oocytes])
    steps, run = drive_steps(oocyte_job(stack, "T", (1, 2), lambda: TruthPredictor(oocytes),
                                   name="ovum", placement=Placement(axes="T"),
                                   pixel_size_um=0.7))
    assert steps[0] == ("loading the model", 0, 1) and steps[-1][1:] == (1, 1)
    assert run.first_frame == 1 and run.results[0].meta["frame"] == 1
    data, kwargs, kind = run.layers[0]
    assert kind == "labels" and data.shape == (1, 96, 96)
    assert np.array_equal(data[0], oocytes[1].labels)
    assert kwargs["translate"][0] == 1.0  # on its own frame of the stack
    assert kwargs["metadata"]["blastoseg"]["role"] == CLASSES_ROLE
    assert class_colormap()[4][0] == 1.0  # inclusions in red
    assert "4 inclusion" in legend_html() and "ser cluster" in legend_html()


@pytest.mark.gui
def test_widget_table_legend_and_export(make_napari_viewer, qtbot, fake, oocytes, tmp_path):
    from napari.layers import Labels

    from blastoseg.measure.oocyte import measure_oocyte
    from blastoseg.napari._oocyte_widget import TABLE_ROWS, OocyteWidget

    viewer = make_napari_viewer()
    viewer.add_image(oocytes[0].image, name="ovum")
    widget = OocyteWidget(viewer)
    assert list(widget.model.choices) == ["fake-oocyte"]
    assert "inclusion" in widget.legend.value
    widget.pixel_size.value = 0.7
    widget.start()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=30_000)
    layer = viewer.layers["ovum: oocyte classes"]
    assert isinstance(layer, Labels) and np.array_equal(layer.data, oocytes[0].labels)
    truth = measure_oocyte(oocytes[0].labels, 0.7)
    cells = widget.table_text()
    keys = [k for k, _ in TABLE_ROWS]
    assert cells[keys.index("inclusion_count")][0] == str(truth.inclusion_count)
    assert cells[keys.index("ooplasm_diameter")][0] == f"{truth.ooplasm_diameter:.2f}"
    assert widget.table.horizontalHeaderItem(0).text() == "frame 0 (um)"
    assert f"{truth.inclusion_count} inclusions" in widget.status.value
    out = widget.export_csv(tmp_path / "m.csv")
    rows = out.read_text().splitlines()
    assert rows[0].startswith("frame,unit,inclusion_count") and rows[1].startswith("0,um,")
    # a correction painted into the Labels layer goes into the exported dataset
    from blastoseg.io.dataset import read_dataset
    from blastoseg.io.oocyte_classes import VACUOLE, class_map

    layer.data[40:44, 40:44] = VACUOLE
    widget.export_dataset(tmp_path / "corrected")
    ds = read_dataset(tmp_path / "corrected")
    assert len(ds) == 1 and ds.images[0]["pixel_size_um"] == 0.7
    assert np.array_equal(class_map(ds.instances(0), ds.categories), layer.data)
    assert np.array_equal(ds.load_image(0), oocytes[0].image)
    # re-running replaces the layer instead of piling up another
    widget.start()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=30_000)
    assert [la.name for la in viewer.layers] == ["ovum", "ovum: oocyte classes"]


class EmbryoSayingPredictor(TruthPredictor):
    """The stand-in whose embryo check fired (as the real predictor marks it)."""

    def iter_predict(self, frames, on_result=None, pixel_size_um=None):
        results = yield from super().iter_predict(frames, on_result, pixel_size_um)
        for r in results:
            r.meta["looks_like_embryo"] = True
            r.measurements.warnings.append("this looks like an embryo, not an oocyte")
        return results


@pytest.mark.gui
def test_widget_says_when_the_frame_looks_like_an_embryo(make_napari_viewer, qtbot,
                                                         monkeypatch, tmp_path, oocytes):
    from blastoseg.napari._oocyte_widget import TABLE_ROWS, OocyteWidget

    monkeypatch.setenv("BLASTOSEG_HOME", str(tmp_path))
    monkeypatch.setattr("blastoseg.predict.base.load_predictor",
                        lambda name, device="auto", **o: EmbryoSayingPredictor(oocytes, name))
    monkeypatch.setattr("blastoseg.napari._ui.model_names",
                        lambda *kinds: ["fake-oocyte"] if "oocyte" in kinds else [])
    viewer = make_napari_viewer()
    viewer.add_image(oocytes[0].image, name="ovum")
    widget = OocyteWidget(viewer)
    widget.start()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=30_000)
    assert "this looks like an embryo, not an oocyte" in widget.status.value
    keys = [k for k, _ in TABLE_ROWS]
    assert "like an embryo" in widget.table_text()[keys.index("warnings")][0]


@pytest.mark.gui
def test_flips_box_reaches_the_predictor(make_napari_viewer, qtbot, fake, oocytes):
    from blastoseg.napari._oocyte_widget import OocyteWidget

    viewer = make_napari_viewer()
    viewer.add_image(oocytes[0].image, name="ovum")
    widget = OocyteWidget(viewer)
    assert not widget.flips.value  # off unless asked for: it is 2.5 times slower
    for ticked in (True, False):
        widget.flips.value = ticked
        widget.start()
        qtbot.waitUntil(lambda: widget.worker is None, timeout=30_000)
    assert [o.get("flips", False) for o in fake] == [True, False]
    assert widget.settings()["flips"] is False
