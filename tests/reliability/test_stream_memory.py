"""Issue 18 item 24: ``blastoseg segment`` held every frame's result until the end (200
frames of 500 x 500: 1.6 GB peak, 3-7 MB more per frame). It streams them: a frame's result
is written and dropped before the next batch runs, so memory stays flat with the stack's
length. Checked here cheaply: a stub predictor counts how many of its results are still
alive each time it makes a new one. The input side too: a frame folder or a multi-page TIFF
is read a frame at a time as the run goes (it was read whole before the run: 1,000 frames of
256 x 256 peaked 54 MB above 250); a counting reader checks that only a few frames are ever
held at once."""

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
        self.flips = 0
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
            chunk = frames[start:stop]  # one batch read, as the amodal predictor does
            for t in range(start, stop):
                h, w = np.shape(chunk[t - start])[:2]
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


class _FrameCounter:
    """Counts the frames a lazy stack has read that are still alive (each array it hands
    out, a frame or a batch, counted until it is freed)."""

    def __init__(self, monkeypatch) -> None:
        from blastoseg.io.lazy_stack import LazyFrames

        self.reads = self.alive = self.most_alive = 0
        frame, getitem = LazyFrames.frame, LazyFrames.__getitem__

        def track(array, n):
            self.alive += n
            self.most_alive = max(self.most_alive, self.alive)
            weakref.finalize(array, self._freed, n)
            return array

        def counted_frame(stack, t):
            self.reads += 1
            return track(frame(stack, t).copy(), 1)  # a copy: its own life to count

        def counted_getitem(stack, key):
            out = getitem(stack, key)
            return track(out, len(out)) if isinstance(key, slice) else out

        monkeypatch.setattr(LazyFrames, "frame", counted_frame)
        monkeypatch.setattr(LazyFrames, "__getitem__", counted_getitem)

    def _freed(self, n: int) -> None:
        self.alive -= n


def _no_eager_read(*_a, **_k):
    raise AssertionError("the whole stack was read into memory before the run")


@pytest.mark.parametrize("kind", ["amodal", "brightfield"])
@pytest.mark.parametrize("layout", ["tiff", "folder", "planes"])
def test_segment_reads_the_input_a_frame_at_a_time(tmp_path, monkeypatch, kind, layout):
    import imageio.v3 as iio
    import tifffile

    from blastoseg.cli import main
    from blastoseg.io import images, read_dataset
    from blastoseg.predict import base

    n = 40
    frames = np.random.default_rng(1).integers(0, 255, (n, 32, 32), np.uint8)
    frames[:, 0, 0] = np.arange(n)  # each frame says which it is
    if layout == "tiff":
        src = tmp_path / "stack.tif"
        tifffile.imwrite(src, frames)
    else:
        src = tmp_path / "frames"
        src.mkdir()
        for t in range(n):
            if layout == "folder":
                iio.imwrite(src / f"frame_{t:03d}.png", frames[t])
            else:  # focal planes: --plane 1 takes the F0 files
                for z in (-15, 0, 15):
                    iio.imwrite(src / f"emb_F{z}_RUN{t}.png", frames[t] if z == 0 else
                                np.zeros_like(frames[t]))
    monkeypatch.setattr(images, "_stack_files", _no_eager_read)
    monkeypatch.setattr(images, "_read_tiff", _no_eager_read)
    counter = _FrameCounter(monkeypatch)
    stub = _Stub()
    stub.kind = kind
    monkeypatch.setattr(base, "load_predictor", lambda *a, **k: stub)
    plane = ["--plane", "1"] if layout == "planes" else []
    assert main(["segment", kind, str(src), "--out", str(tmp_path / "out"), *plane]) == 0
    # each frame read as the run went (once to run, once to write), never all at once
    assert counter.reads >= n
    assert counter.most_alive <= 2 * stub.batch_size + 2, counter.most_alive
    ds = read_dataset(tmp_path / "out" / "dataset")
    assert [int(ds.load_image(t)[0, 0]) for t in range(n)] == list(range(n))  # in order
    assert np.array_equal(ds.load_image(n - 1), frames[n - 1])
