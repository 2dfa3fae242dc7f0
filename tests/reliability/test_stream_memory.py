"""Issue 18 item 24: ``blastoseg segment`` held every frame's result until the end (200
frames of 500 x 500: 1.6 GB peak, 3-7 MB more per frame). It streams them: a frame's result
is written and dropped before the next batch runs, so memory stays flat with the stack's
length. Checked here cheaply: a stub predictor counts how many of its results are still
alive each time it makes a new one."""

from __future__ import annotations

import gc
import weakref
from types import SimpleNamespace

import numpy as np
import pytest

from blastoseg.instances import FrameInstances
from blastoseg.predict.base import PredictorBase

N_FRAMES = 24


class _Stub(PredictorBase):
    kind = "amodal"

    def __init__(self, batch_size: int = 4) -> None:  # no model: the CLI's path only
        self.entry = SimpleNamespace(name="stub")
        self.device_name = "CPU (stub)"
        self.score_threshold = 0.5
        self.use_localisation = True
        self.batch_size = batch_size
        self.alive: list[weakref.ref] = []
        self.most_alive = 0

    def run_frames(self, frames, **_):
        for start in range(0, len(frames), self.batch_size):
            stop = min(start + self.batch_size, len(frames))
            gc.collect()
            self.most_alive = max(self.most_alive,
                                  sum(r() is not None for r in self.alive))
            done = []
            for t in range(start, stop):
                h, w = np.shape(frames[t])[:2]
                masks = np.zeros((2, h, w), bool)
                masks[0, 2:10, 2:10] = masks[1, 12:20, 12:20] = True
                maps = {"nuclei": np.full((h, w), t / 100, np.float32),
                        "overlap": np.full((h, w), 1 - t / 100, np.float32)}
                inst = FrameInstances(masks=masks, scores=np.array([0.9, 0.8]),
                                      meta=maps if self.kind == "brightfield" else {})
                self.alive.append(weakref.ref(inst))
                done.append((t, inst))
            yield stop, len(frames), done


@pytest.mark.parametrize("kind", ["amodal", "brightfield"])
def test_segment_streams_results_to_files(tmp_path, monkeypatch, kind):
    import tifffile

    from blastoseg.cli import main
    from blastoseg.io import read_dataset
    from blastoseg.predict import base

    stub = _Stub()
    stub.kind = kind
    monkeypatch.setattr(base, "load_predictor", lambda *a, **k: stub)
    tifffile.imwrite(tmp_path / "stack.tif",
                     np.random.default_rng(0).integers(0, 255, (N_FRAMES, 32, 32), np.uint8))
    assert main(["segment", kind, str(tmp_path / "stack.tif"), "--out",
                 str(tmp_path / "out")]) == 0
    # at most the batch being made and the one being written: not every frame's result
    assert stub.most_alive <= 2 * stub.batch_size, stub.most_alive
    ds = read_dataset(tmp_path / "out" / "dataset")
    assert len(ds) == N_FRAMES and all(len(ds.instances(i)) == 2 for i in range(N_FRAMES))
    counts = (tmp_path / "out" / "counts.csv").read_text().splitlines()
    assert len(counts) == N_FRAMES + 1 and counts[-1].split(",")[:2] == [str(N_FRAMES - 1), "2"]
    if kind == "brightfield":  # the maps were spooled to disk frame by frame, then written
        for key, first in (("nuclei", 0.0), ("overlap", 1.0)):
            tif = tifffile.TiffFile(tmp_path / "out" / f"{key}_probability.tif")
            assert tif.series[0].axes == "TYX" and tif.imagej_metadata["frames"] == N_FRAMES
            maps = tif.asarray()
            assert maps.shape == (N_FRAMES, 32, 32) and maps.dtype == np.float32
            assert np.allclose(maps[:, 0, 0], abs(first - np.arange(N_FRAMES) / 100))
    assert not list((tmp_path / "out").glob(".*.tmp"))  # no spool or temporary file left
