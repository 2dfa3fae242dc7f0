"""Shared fixtures."""

import json

import pytest

#: a detector small enough to train a few steps in seconds on a CPU
TINY_MODEL = {"working_size": 96, "anchor_sizes": [[8, 12], [16, 24], [32, 48], [64, 96]],
              "fpn_channels": 16, "occlusion_channels": 8, "box_representation": 32,
              "mask_head_channels": 16, "refine_channels": 8}


@pytest.fixture(scope="session", autouse=True)
def session_home(tmp_path_factory):
    """One temporary BLASTOSEG_HOME for the whole session, set before any other fixture: the
    session's tiny models live there, and a module or test that sets its own home (and undoes
    it afterwards) falls back to this one, so no model of another fixture goes missing."""
    home = tmp_path_factory.mktemp("session") / "home"
    mp = pytest.MonkeyPatch()
    mp.setenv("BLASTOSEG_HOME", str(home))
    yield home
    mp.undo()


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory, session_home):
    """A tiny shape prior and a tiny amodal model ("tiny-prior", "tiny-amodal"), trained a few
    steps through the CLI and registered in the session's BLASTOSEG_HOME; yields
    (folder, dataset folder)."""
    from blastoseg.cli import main

    tmp = tmp_path_factory.mktemp("amodal")
    mp = pytest.MonkeyPatch()  # register in the session home, whatever the caller's home is
    mp.setenv("BLASTOSEG_HOME", str(session_home))
    data = tmp / "data"
    assert main(["synth", "embryos", "--n", "6", "--seed", "5", "--size", "128",
                 "--out", str(data)]) == 0
    sp = tmp / "sp.json"
    sp.write_text(json.dumps({"hyper": {"max_steps": 10, "batch_size": 16, "log_every": 5}}))
    assert main(["train", "shape_prior", "--data", str(data), "--out", str(tmp / "j1"),
                 "--config", str(sp), "--name", "tiny-prior", "--quiet"]) == 0
    am = tmp / "am.json"
    am.write_text(json.dumps({"shape_prior": "tiny-prior", "model": TINY_MODEL,
                              "hyper": {"max_steps": 3, "batch_size": 2, "val_frames": 2,
                                        "calib_min_frames": 5}}))
    assert main(["train", "amodal", "--data", str(data), "--val", str(data),
                 "--out", str(tmp / "j2"), "--config", str(am), "--name", "tiny-amodal",
                 "--quiet"]) == 0
    mp.undo()
    yield tmp, data


#: an SE-U-Net small enough to train a few steps in seconds on a CPU
TINY_SEUNET = {"base_width": 4, "depth": 2, "se_reduction": 2}


@pytest.fixture(scope="session")
def tiny_overlap(tmp_path_factory, session_home):
    """A tiny SE-U-Net overlap model ("tiny-overlap") trained a few steps through the CLI on
    synthetic brightfield scenes, registered in the session's BLASTOSEG_HOME; yields
    (folder, dataset folder)."""
    from blastoseg.cli import main

    tmp = tmp_path_factory.mktemp("overlap")
    mp = pytest.MonkeyPatch()  # register in the session home, whatever the caller's home is
    mp.setenv("BLASTOSEG_HOME", str(session_home))
    data = tmp / "bf"
    assert main(["synth", "brightfield", "--n", "3", "--seed", "2", "--size", "96",
                 "--out", str(data)]) == 0
    cfg = tmp / "ov.json"
    cfg.write_text(json.dumps({
        "seunet": TINY_SEUNET, "probability": {"variant": "combined_border_overlap"},
        "data": {"crop": 64, "repeats": 2},
        "hyper": {"max_steps": 4, "batch_size": 2, "lr": 0.01, "val_frames": 2}}))
    assert main(["train", "overlap", "--data", str(data), "--val", str(data),
                 "--out", str(tmp / "job"), "--config", str(cfg), "--name", "tiny-overlap",
                 "--quiet"]) == 0
    mp.undo()
    yield tmp, data


#: a Cell-Net small enough to train two steps in seconds on a CPU
TINY_COUNT = {"model": {"working_size": 64, "pyramid_channels": 8, "puc_width": 1},
              "hyper": {"max_steps": 2, "batch_size": 2, "val_frames": 2, "threads": 1,
                        "log_every": 1}}


@pytest.fixture(scope="session")
def tiny_count(tmp_path_factory, session_home):
    """A tiny count model ("tiny-count") trained 2 steps through the CLI, registered in the
    session's BLASTOSEG_HOME (the count kind's tests and the batch tests); yields the dataset."""
    from blastoseg.cli import main

    tmp = tmp_path_factory.mktemp("count")
    mp = pytest.MonkeyPatch()
    mp.setenv("BLASTOSEG_HOME", str(session_home))
    data = tmp / "data"
    assert main(["synth", "embryos", "--n", "3", "--seed", "7", "--size", "128",
                 "--out", str(data)]) == 0
    cfg = tmp / "count.json"
    cfg.write_text(json.dumps(TINY_COUNT))
    assert main(["train", "count", "--data", str(data), "--val", str(data),
                 "--out", str(tmp / "job"), "--config", str(cfg), "--name", "tiny-count",
                 "--quiet"]) == 0
    events = [json.loads(line) for line in (tmp / "job" / "events.jsonl").read_text().split("\n")
              if line.strip()]
    val = [e for e in events if e["event"] == "validation"][-1]["metrics"]
    assert {"count_exact", "count_mae", "detection_rate", "ed_px"} <= set(val)
    yield data
    mp.undo()


def drive_steps(work):
    """Run a generator job to the end: (every step it yielded, the value it returned)."""
    steps = []
    while True:
        try:
            steps.append(next(work))
        except StopIteration as stop:
            return steps, stop.value
