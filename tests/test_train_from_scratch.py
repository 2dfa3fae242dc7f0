"""A new user's first amodal training (issue 18, items 13 and 23): from scratch, no shape prior
named, on a dataset with a frame that has no cells (a negative frame)."""

from __future__ import annotations

import json

import numpy as np

from blastoseg.cli import main
from blastoseg.instances import FrameInstances, flat_masks
from blastoseg.train.events import read_events
from conftest import TINY_MODEL


def test_measures_of_a_frame_without_cells_are_empty():
    empty = FrameInstances(masks=np.zeros((0, 64, 64), bool))
    assert empty.areas.shape == (0,)
    assert flat_masks(np.zeros((0, 5, 7), bool)).shape == (0, 35)
    assert flat_masks(np.ones((2, 5, 7), bool)).sum(axis=1).tolist() == [35, 35]


def test_training_from_scratch_uses_the_bundled_shape_prior_and_accepts_negative_frames(
        tmp_path):
    data = tmp_path / "data"
    assert main(["synth", "embryos", "--n", "3", "--seed", "11", "--size", "128",
                 "--out", str(data)]) == 0
    ann_path = data / "annotations.json"
    ann = json.loads(ann_path.read_text())
    first = ann["images"][0]["id"]
    ann["annotations"] = [a for a in ann["annotations"] if a["image_id"] != first]
    ann_path.write_text(json.dumps(ann))  # frame 0 now shows an embryo with no cells labelled

    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"model": TINY_MODEL,
                               "hyper": {"max_steps": 2, "batch_size": 3, "val_frames": 3,
                                         "calib_min_frames": 50}}))
    job = tmp_path / "job"
    code = main(["train", "amodal", "--data", str(data), "--val", str(data), "--out", str(job),
                 "--config", str(cfg), "--name", "scratch-amodal", "--quiet"])
    events = read_events(job / "events.jsonl")
    assert code == 0, [e for e in events if e["event"] == "failed"]
    start = next(e for e in events if e["event"] == "start")
    assert any("shape-prior-default" in note for note in start["notes"])
    assert "shape-prior-default" in start["message"]
    assert events[-1]["event"] == "done"


def test_train_checks_its_data_before_making_a_job(tmp_path, capsys):
    """Issue 18 item 13: an unreadable image or an empty cell mask stops `blastoseg train`
    before a job folder exists, naming every problem; datasets of negative frames pass."""
    data = tmp_path / "data"
    assert main(["synth", "embryos", "--n", "3", "--seed", "11", "--size", "128",
                 "--out", str(data)]) == 0
    ann = json.loads((data / "annotations.json").read_text())
    broken = data / ann["images"][1]["file_name"]
    broken.write_bytes(b"not an image")
    job = tmp_path / "job"
    args = ["train", "amodal", "--data", str(data), "--out", str(job), "--quiet"]
    assert main(args) != 0
    err = capsys.readouterr().err
    assert "problem" in err and ann["images"][1]["file_name"].split("/")[-1] in err
    assert not job.exists()

    negatives = tmp_path / "negatives"
    assert main(["synth", "embryos", "--n", "2", "--seed", "12", "--size", "128",
                 "--out", str(negatives)]) == 0
    neg = json.loads((negatives / "annotations.json").read_text())
    neg["annotations"] = []
    (negatives / "annotations.json").write_text(json.dumps(neg))
    from blastoseg.commands.train import _check_data

    _check_data([str(negatives)])  # frames without cells are negatives: no problem
