"""The morphokinetic timeline: decoding counts into non-decreasing stages, events, intervals,
frame counts from count and amodal results, frame times and bad input."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from blastoseg.errors import BlastosegError
from blastoseg.instances import FrameInstances
from blastoseg.io.frame_times import hours_from_names, hours_from_tiff, parse_hours
from blastoseg.measure.frame_counts import frame_count, iter_frame_counts
from blastoseg.measure.timeline import (
    EVENTS,
    TimelineError,
    build_timeline,
    decode_stages,
    event_frames,
    frame_times,
    intervals_from_events,
    stage_log_likelihoods,
)
from blastoseg.results.timeline import write_timeline_files

#: 1 -> 8 cells with 3-cell and 5-7-cell stages, 4 frames per stage
TRUTH = np.repeat([1, 2, 3, 4, 5, 6, 7, 8], 4)


def test_a_noisy_non_decreasing_count_sequence_decodes_to_the_truth():
    rng = np.random.default_rng(2)
    noisy = TRUTH + rng.normal(0, 0.2, len(TRUTH))
    noisy[[5, 18]] += [1.0, -1.0]  # two counting slips of a whole cell
    assert (np.rint(noisy) != TRUTH).sum() >= 2
    stages = decode_stages(stage_log_likelihoods(noisy))
    assert np.array_equal(stages, TRUTH)
    assert np.all(np.diff(stages) >= 0)


def test_a_single_outlier_frame_makes_no_spurious_division():
    counts = np.array([2, 2, 2, 2, 6, 2, 2, 2, 2, 2], float)  # one wild frame
    stages = decode_stages(stage_log_likelihoods(counts))
    assert np.array_equal(stages, np.full(10, 2))
    dip = np.array([4, 4, 4, 1, 4, 4, 4], float)  # one frame far too low: no decrease
    assert np.array_equal(decode_stages(stage_log_likelihoods(dip)), np.full(7, 4))


def test_events_and_intervals_from_a_known_sequence_with_hours():
    hours = 20.0 + 0.5 * np.arange(len(TRUTH))
    tl = build_timeline(TRUTH.astype(float), hours, time_source="dataset hours")
    assert tl.has_hours and tl.time_source == "dataset hours"
    for k in range(2, 9):
        frame = 4 * (k - 1)
        assert tl.events[f"t{k}"] == (hours[frame], frame)
    iv = tl.intervals
    assert iv["cc2"] == pytest.approx(2.0) and iv["s2"] == pytest.approx(2.0)
    assert iv["cc3"] == pytest.approx(4.0) and iv["s3"] == pytest.approx(6.0)
    doc = tl.to_dict()
    assert doc["events"]["t2"] == {"hours": 22.0, "frame": 4} and doc["time_unit"] == "hours"


def test_a_skipped_stage_takes_the_first_frame_above_it():
    stages = np.array([1, 1, 2, 2, 4, 4, 4, 8])
    ev = event_frames(stages)
    assert ev["t3"] == ev["t4"] == 4 and ev["t5"] == ev["t8"] == 7
    assert event_frames(np.array([1, 1, 2, 2]))["t3"] is None
    # cleavage 2 -> 4 between two frames: the decoder may skip
    tl = build_timeline([2, 2, 2, 4, 4, 4, 4])
    assert tl.events["t3"] == tl.events["t4"] == (3.0, 3) and tl.intervals["s2"] == 0.0
    assert intervals_from_events({"t2": 1.0}) == {"cc2": None, "s2": None, "cc3": None,
                                                  "s3": None}


def test_nine_or_more_cells_is_the_last_stage():
    tl = build_timeline([7, 7, 8, 8, 11, 12, 12])
    assert tl.stages.tolist() == [7, 7, 8, 8, 9, 9, 9] and tl.events["t8"] == (2.0, 2)


def test_bad_input_gets_clear_errors():
    with pytest.raises(TimelineError, match="at least 2 frames; got 1 frame$"):
        build_timeline([3.0])
    with pytest.raises(TimelineError, match=r"frame 2 \(1 h\) is not after frame 1 \(2 h\)"):
        build_timeline([1, 1, 2], [0.0, 2.0, 1.0])
    with pytest.raises(TimelineError, match="3 frame times for 2 frames"):
        build_timeline([1, 2], [0.0, 1.0, 2.0])
    with pytest.raises(TimelineError, match=r"frames \[1\]"):
        build_timeline([1, np.nan, 2])
    tl = build_timeline([1, 1, 2, 2])
    assert tl.time_source == "frame index" and not tl.has_hours
    assert tl.events["t2"] == (2.0, 2) and tl.to_dict()["time_unit"] == "frames"


def test_frame_times_from_an_interval_and_the_input_s_own_times_winning():
    times = frame_times(4, interval_min=30, start_h=20)
    assert times.hours == [20.0, 20.5, 21.0, 21.5] and times.note == ""
    assert times.source == "frame interval (30 min, 20 h at frame 0)"
    assert frame_times(3, interval_min=15).hours == [0.0, 0.25, 0.5]  # frame 0 at 0 h
    tl = build_timeline([1, 1, 2, 2], times.hours, time_source=times.source)
    assert tl.has_hours and tl.events["t2"] == (21.0, 2)
    # times the input carries (file names, metadata) win over the interval, and say so
    own = frame_times(2, [24.0, 24.2], "file names", interval_min=30, start_h=20)
    assert own.hours == [24.0, 24.2] and own.source == "file names"
    assert own.note == "the frame times come from the file names; the frame interval is not used"
    assert frame_times(2, [1, 2], "layer metadata").note == ""
    none = frame_times(3)
    assert none.hours is None and none.source == "frame index"
    for bad, match in [({"interval_min": 0}, "positive number of minutes; got 0"),
                       ({"interval_min": -5}, "positive"),
                       ({"interval_min": float("nan")}, "positive"),
                       ({"start_h": 20}, "needs a frame interval"),
                       ({"interval_min": 10, "start_h": float("inf")}, "number of hours")]:
        with pytest.raises(TimelineError, match=match):
            frame_times(3, **bad)
    with pytest.raises(TimelineError, match="2 frame times for 3 frames"):
        frame_times(3, [1.0, 2.0], interval_min=10)


# --- frame counts from either kind ----------------------------------------------------------

def _instances(n: int, scores) -> FrameInstances:
    masks = np.zeros((n, 20, 20), bool)
    for i in range(n):
        masks[i, 2 * i:2 * i + 2, 5:7] = True
    return FrameInstances(masks=masks, scores=np.asarray(scores, np.float32))


def test_frame_count_from_instances_and_from_a_count_result():
    fc = frame_count(_instances(3, [0.9, 0.2, 0.6]), threshold=0.5)
    assert fc.estimate == 2.0 and fc.centroids.shape == (2, 2) and fc.density is None
    assert fc.centroids[0].tolist() == [0.5, 5.5]
    density = np.full((8, 8), 3.4 / 64, np.float32)
    fake = SimpleNamespace(count=3, integral=3.4, density=density,
                           centroids=np.array([[1.0, 2.0], [3, 4], [5, 6]]), meta={})
    fc = frame_count(fake)
    assert fc.estimate == pytest.approx(3.4) and fc.count == 3 and fc.density.shape == (8, 8)
    with pytest.raises(BlastosegError, match="cannot count cells from a str"):
        frame_count("nope")


class _Predictor:
    """Streams one instance result per frame, like PredictorBase.iter_predict."""

    calibrated_threshold = 0.5

    def iter_predict(self, frames, on_result=None):
        for i, frame in enumerate(frames):
            on_result(i, _instances(int(frame.max()), [0.9] * int(frame.max())))
            yield i + 1, len(frames)
        return []


def test_iter_frame_counts_streams_and_keeps_only_counts():
    frames = np.stack([np.full((20, 20), k, np.uint8) for k in (1, 2, 2, 4)])
    seen = []
    work = iter_frame_counts(_Predictor(), frames, on_count=lambda i, c: seen.append(i))
    steps = []
    while True:
        try:
            steps.append(next(work))
        except StopIteration as stop:
            counts = stop.value
            break
    assert steps[-1] == (4, 4) and seen == [0, 1, 2, 3]
    assert [c.estimate for c in counts] == [1, 2, 2, 4]


# --- frame times and files ------------------------------------------------------------------

def test_hours_from_file_names_and_tiff_metadata(tmp_path):
    assert parse_hours("frame_0003_25.5h") == 25.5
    assert parse_hours("embryo_t12_30.25hpi") == 30.25
    assert parse_hours("E1 24,0 hours") == 24.0
    assert parse_hours("frame_0003") is None and parse_hours("Thumbnail_high") is None
    assert hours_from_names(["a_1h.png", "a_2.5h.png"]) == ([1.0, 2.5], "file names")
    hours, why = hours_from_names(["a_1h.png", "a_2.png"])
    assert hours is None and "1 of 2 file names carry no hours (e.g. a_2.png)" in why
    import tifffile

    path = tmp_path / "lapse.tif"
    tifffile.imwrite(path, np.zeros((3, 8, 8), np.uint8), imagej=True,
                     metadata={"axes": "TYX", "finterval": 600.0})
    hours, source = hours_from_tiff(path, 3)
    assert hours == pytest.approx([0.0, 1 / 6, 1 / 3]) and "finterval" in source
    plain = tmp_path / "plain.tif"
    tifffile.imwrite(plain, np.zeros((3, 8, 8), np.uint8))
    assert hours_from_tiff(plain, 3)[0] is None


def test_timeline_files(tmp_path):
    tl = build_timeline(TRUTH[:10].astype(float), 10.0 + np.arange(10))
    write_timeline_files(tmp_path, tl)
    rows = (tmp_path / "timeline.csv").read_text().splitlines()
    assert rows[0] == "frame,hours,count_estimate,stage" and rows[5] == "4,14.000,2.000,2"
    events = (tmp_path / "events.csv").read_text().splitlines()
    assert events[0] == "event,hours,frame" and events[1] == "t2,14.000,4"
    assert events[3] == "t4,," and len(events) == 1 + len(EVENTS) + 4
    assert "cc2,4.000,4" in events and "s2,," in events
