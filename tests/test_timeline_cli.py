"""``blastoseg timeline`` and ``blastoseg eval timeline``: a stand-in count predictor on TIFF
stacks and frame folders (known answers), the shipped amodal model on a tiny synthetic
time-lapse dataset (the files and JSON keys), and bad input."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from blastoseg.cli import main

#: cells per frame of the stand-in time-lapse (a frame's mean grey value is 10 x its count)
COUNTS = [1, 1, 2, 2, 2, 3, 4, 4, 5, 6, 7, 8, 8]


class FakeCount:
    """A count-kind stand-in: the density integral is the frame's mean grey value / 10."""

    kind = "count"
    entry = SimpleNamespace(name="fake-count")
    device_name = "CPU (fake)"

    framing: list = []  # the framing options of every run

    def iter_predict(self, frames, on_result=None, **framing):
        self.framing.append(framing)
        for i, frame in enumerate(frames):
            value = float(np.asarray(frame, float).mean()) / 10
            on_result(i, SimpleNamespace(count=round(value), integral=value, meta={},
                                         density=np.zeros((4, 4), np.float32),
                                         centroids=np.zeros((round(value), 2))))
            yield i + 1, len(frames)
        return []


@pytest.fixture
def fake(monkeypatch):
    """The stand-in counts, whatever counter the options ask for (test_fused_counter.py
    tests that choice)."""
    monkeypatch.setattr("blastoseg.predict.fused_counter.load_counter",
                        lambda *a, **kw: FakeCount())


def _frames(counts=COUNTS) -> np.ndarray:
    return np.stack([np.full((32, 32), 10 * c, np.uint8) for c in counts])


def test_timeline_of_a_frame_folder_with_hours_in_the_names(tmp_path, fake, capsys):
    import imageio.v3 as iio

    folder = tmp_path / "lapse"
    folder.mkdir()
    for k, frame in enumerate(_frames()):
        iio.imwrite(folder / f"embryo_frame{k:03d}_{20 + 0.5 * k:.1f}h.png", frame)
    assert main(["timeline", str(folder), "--out", str(tmp_path / "out"), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["model"] == "fake-count" and doc["kind"] == "count"
    (tl,) = doc["timelines"]
    assert tl["time_source"] == "file names" and tl["time_unit"] == "hours"
    assert tl["events"]["t2"] == {"hours": 21.0, "frame": 2}
    assert tl["events"]["t8"] == {"hours": 25.5, "frame": 11}
    assert tl["intervals"]["cc2"] == 1.5 and tl["intervals"]["s2"] == 0.5
    rows = (tmp_path / "out" / "timeline.csv").read_text().splitlines()
    assert rows[0] == "frame,hours,count_estimate,stage" and rows[3] == "2,21.000,2.000,2"
    assert (tmp_path / "out" / "events.csv").read_text().splitlines()[1] == "t2,21.000,2"


def test_timeline_of_a_tiff_without_times_uses_frame_indices(tmp_path, fake, capsys):
    import tifffile

    path = tmp_path / "lapse.tif"
    tifffile.imwrite(path, _frames())
    assert main(["timeline", str(path), "--out", str(tmp_path / "out")]) == 0
    out, err = capsys.readouterr()
    assert "no frame times in the TIFF metadata; using frame indices" in err
    assert "times from frame index" in out and "  t2: frame 2\n" in out
    assert "  cc2: 3 frames\n" in out
    assert (tmp_path / "out" / "timeline.csv").read_text().splitlines()[3] == "2,,2.000,2"


def test_a_frame_interval_gives_hours_to_a_tiff_without_times(tmp_path, fake, capsys):
    import tifffile

    path = tmp_path / "lapse.tif"
    tifffile.imwrite(path, _frames())
    assert main(["timeline", str(path), "--out", str(tmp_path / "out"), "--json",
                 "--interval-min", "30", "--start-h", "20"]) == 0
    out, err = capsys.readouterr()
    (tl,) = json.loads(out)["timelines"]
    assert tl["time_unit"] == "hours" and tl["time_source"].startswith("frame interval")
    assert tl["events"]["t2"] == {"hours": 21.0, "frame": 2}
    assert tl["intervals"]["cc2"] == 1.5 and "frame indices" not in err
    assert (tmp_path / "out" / "timeline.csv").read_text().splitlines()[3] == \
        "2,21.000,2.000,2"
    # --start-h alone cannot place the frames
    assert main(["timeline", str(path), "--out", str(tmp_path / "o2"), "--start-h", "20"]) == 2
    assert "needs a frame interval" in capsys.readouterr().err


def test_the_times_in_the_file_names_win_over_a_frame_interval(tmp_path, fake, capsys):
    import imageio.v3 as iio

    folder = tmp_path / "lapse"
    folder.mkdir()
    for k, frame in enumerate(_frames()):
        iio.imwrite(folder / f"embryo_frame{k:03d}_{20 + 0.5 * k:.1f}h.png", frame)
    assert main(["timeline", str(folder), "--out", str(tmp_path / "out"),
                 "--interval-min", "10"]) == 0
    out, err = capsys.readouterr()
    assert "the frame times come from the file names; the frame interval is not used" in err
    assert "  t2: 21.00 h (frame 2)" in out


def test_bad_time_lapses_are_refused_before_counting(tmp_path, fake, capsys):
    import imageio.v3 as iio
    import tifffile

    one = tmp_path / "one.tif"
    tifffile.imwrite(one, _frames([3])[0])
    assert main(["timeline", str(one), "--out", str(tmp_path / "o1")]) == 2
    assert "single frame; a timeline needs a time-lapse of at least 2 frames" in \
        capsys.readouterr().err
    folder = tmp_path / "back"
    folder.mkdir()
    for k, h in enumerate([20.0, 21.0, 20.5]):
        iio.imwrite(folder / f"f_frame{k}_{h}h.png", _frames([1])[0])
    assert main(["timeline", str(folder), "--out", str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err
    assert "frame times must increase: f_frame2_20.5h.png (20.5 h) is not after " \
           "f_frame1_21.0h.png (21 h)" in err
    assert not (tmp_path / "o2").exists()


def test_timeline_and_eval_on_a_synthetic_time_lapse_dataset(tmp_path, capsys):
    data = tmp_path / "tl"
    assert main(["synth", "embryos", "--n", "1", "--timelapse", "4", "--seed", "3",
                 "--size", "128", "--out", str(data)]) == 0
    capsys.readouterr()
    assert main(["eval", "timeline", "--data", str(data), "--device", "cpu", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {"event_mae_h", "event_mae_h_by_event", "stage_accuracy", "stage_accuracy_raw",
            "n_videos", "n_frames", "events_missed", "model", "kind"} <= set(report)
    assert report["n_videos"] == 1 and report["n_frames"] == 4
    assert report["time_source"] == ["dataset hours"] and 0 <= report["stage_accuracy"] <= 1
    assert main(["timeline", str(data), "--out", str(tmp_path / "out"), "--device", "cpu",
                 "--json"]) == 0
    (tl,) = json.loads(capsys.readouterr().out)["timelines"]
    assert tl["name"] == "video_0001" and tl["n_frames"] == 4
    assert (tmp_path / "out" / "timeline.csv").is_file()


def test_count_stacked_reaches_an_amodal_predictor_only(tmp_path, monkeypatch, capsys):
    import tifffile

    asked = []
    monkeypatch.setattr("blastoseg.predict.base.load_predictor",
                        lambda name, device="auto", **kw: asked.append(kw) or FakeCount())
    path = tmp_path / "lapse.tif"
    tifffile.imwrite(path, _frames())
    assert main(["timeline", str(path), "--out", str(tmp_path / "a"), "--model",
                 "amodal-default", "--count-stacked", "--no-fuse"]) == 0
    assert main(["timeline", str(path), "--out", str(tmp_path / "b"), "--model",
                 "amodal-default", "--no-fuse"]) == 0
    # unset: the card decides
    assert asked == [{"kind": "amodal", "count_stacked": True}, {"kind": "amodal"}]
    capsys.readouterr()
    assert main(["timeline", str(path), "--out", str(tmp_path / "c"), "--model",
                 "brightfield-default", "--count-stacked"]) != 0
    assert "amodal models only" in capsys.readouterr().err


def test_steady_framing_reaches_the_counter(tmp_path, fake, capsys):
    import tifffile

    from blastoseg.commands.timeline import TIMELINE_STEADY

    path = tmp_path / "lapse.tif"
    tifffile.imwrite(path, _frames())
    FakeCount.framing.clear()
    assert main(["timeline", str(path), "--out", str(tmp_path / "a"), "--steady", "5"]) == 0
    assert main(["timeline", str(path), "--out", str(tmp_path / "b"), "--steady", "0"]) == 0
    assert main(["timeline", str(path), "--out", str(tmp_path / "c")]) == 0
    default = {"steady": TIMELINE_STEADY} if TIMELINE_STEADY > 1 else {}
    assert FakeCount.framing == [{"steady": 5}, {}, default]
    with pytest.raises(SystemExit):
        main(["timeline", str(path), "--out", str(tmp_path / "d"), "--steady", "-1"])
    assert "--steady" in capsys.readouterr().err


def test_flips_reach_the_counter(tmp_path, monkeypatch, capsys):
    import tifffile

    asked = []
    monkeypatch.setattr("blastoseg.predict.fused_counter.load_counter",
                        lambda *a, **kw: asked.append(kw["flips"]) or FakeCount())
    path = tmp_path / "lapse.tif"
    tifffile.imwrite(path, _frames())
    for i, extra in enumerate(([], ["--flips"], ["--flips", "8"])):
        assert main(["timeline", str(path), "--out", str(tmp_path / str(i)), *extra]) == 0
    data = tmp_path / "data"
    assert main(["synth", "embryos", "--n", "1", "--timelapse", "4", "--seed", "3",
                 "--size", "128", "--out", str(data)]) == 0
    assert main(["eval", "timeline", "--data", str(data), "--flips", "--json"]) == 0
    assert asked == [0, 4, 8, 4]
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["timeline", str(path), "--out", str(tmp_path / "x"), "--flips", "2"])
    assert "--flips" in capsys.readouterr().err
