"""Tests of the synthetic embryo generator (small frames so they run in seconds)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from blastoseg.errors import BlastosegError
from blastoseg.synth import (
    EmbryoConfig,
    SynthFrame,
    SynthTimelapse,
    render_embryo,
    render_timelapse,
    write_synthetic_embryos,
)
from blastoseg.synth.font import render_text

SMALL = EmbryoConfig(image_size=(128, 128))


def _check_masks(inst) -> None:
    amodal, vis = inst.masks, inst.visible_masks
    assert vis is not None and inst.occlusion is not None
    # visible inside amodal
    assert not np.any(vis & ~amodal)
    # visible masks are disjoint and cover exactly the union of the amodal masks
    assert vis.sum(axis=0).max() <= 1
    np.testing.assert_array_equal(vis.any(axis=0), amodal.any(axis=0))
    # occlusion = pixels in two or more amodal masks
    np.testing.assert_array_equal(inst.occlusion > 0.5, amodal.sum(axis=0) >= 2)
    assert inst.occlusion.dtype == np.float32
    assert all(m.any() for m in amodal)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 8, 12, 16])
def test_render_embryo_ground_truth(n: int) -> None:
    fr = render_embryo(n, seed=n, config=SMALL)
    assert isinstance(fr, SynthFrame)
    assert fr.image.shape == (128, 128) and fr.image.dtype == np.uint8
    assert fr.image.std() > 3
    assert fr.instances.count == n == fr.meta["n_cells"]
    assert fr.instances.shape == (128, 128)
    np.testing.assert_array_equal(fr.instances.class_ids, np.ones(n))
    assert len(set(fr.instances.track_ids.tolist())) == n
    _check_masks(fr.instances)
    json.dumps(fr.meta)  # JSON-able


def test_cells_inside_zona() -> None:
    for seed in range(4):
        fr = render_embryo(8, seed=seed, config=SMALL)
        cx, cy = fr.meta["embryo_center_xy"]
        r_in = fr.meta["zona_inner_radius_px"]
        yy, xx = np.nonzero(fr.instances.masks.any(axis=0))
        r = np.hypot(xx - cx, yy - cy)
        # zona may be slightly elliptical (<= 7 %) and outlines wobble a little
        assert r.max() <= r_in * 1.1 + 1.5


def test_deterministic_by_seed() -> None:
    a = render_embryo(4, seed=3, config=SMALL)
    b = render_embryo(4, seed=3, config=SMALL)
    c = render_embryo(4, seed=4, config=SMALL)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.instances.masks, b.instances.masks)
    np.testing.assert_array_equal(a.instances.visible_masks, b.instances.visible_masks)
    assert not np.array_equal(a.image, c.image)
    assert not np.array_equal(a.instances.masks, c.instances.masks)


def test_eight_cells_stack_deep() -> None:
    depths = [render_embryo(8, seed=s, config=SMALL).instances.coverage().max()
              for s in range(6)]
    assert min(depths) >= 3
    assert np.median(depths) >= 3


def test_invalid_arguments() -> None:
    with pytest.raises(BlastosegError):
        render_embryo(0, seed=0, config=SMALL)
    with pytest.raises(BlastosegError):
        render_embryo(17, seed=0, config=SMALL)
    with pytest.raises(BlastosegError):
        render_timelapse(1, seed=0, config=SMALL, max_cells=4)


@pytest.mark.parametrize("seed,n_frames,max_cells", [(0, 24, 8), (1, 10, 5), (2, 3, 8)])
def test_timelapse(seed: int, n_frames: int, max_cells: int) -> None:
    tl = render_timelapse(n_frames, seed=seed, config=SMALL, max_cells=max_cells)
    assert isinstance(tl, SynthTimelapse)
    assert tl.images.shape == (n_frames, 128, 128) and tl.images.dtype == np.uint8
    counts = [f.count for f in tl.frames]
    assert counts[0] == 1 and counts[-1] == max_cells
    assert all(b >= a for a, b in zip(counts[:-1], counts[1:], strict=True))
    increases = [k for k in range(1, n_frames) if counts[k] > counts[k - 1]]
    assert sorted(set(tl.cleavage_frames)) == increases
    assert len(tl.cleavage_frames) == max_cells - 1
    for k in range(1, n_frames):  # count jumps by the number of cleavages recorded there
        assert counts[k] - counts[k - 1] == tl.cleavage_frames.count(k)
    for f in tl.frames:
        _check_masks(f)
    # daughters get new ids, unchanged cells keep theirs; lineage links every id to a parent
    for k in range(1, n_frames):
        prev, cur = set(tl.frames[k - 1].track_ids), set(tl.frames[k].track_ids)
        gone, new = prev - cur, cur - prev
        assert len(new) - len(gone) == tl.cleavage_frames.count(k)
        for t in new:  # every new id descends from a cell that disappeared
            anc = tl.lineage[t]
            while anc not in gone:
                anc = tl.lineage[anc]
                assert anc != -1
        if tl.cleavage_frames.count(k) == 1:
            assert len(gone) == 1 and {tl.lineage[t] for t in new} == gone
    assert tl.lineage[int(tl.frames[0].track_ids[0])] == -1
    assert len(tl.meta["hours"]) == n_frames
    assert np.all(np.diff(tl.meta["hours"]) > 0)
    json.dumps(tl.meta)


def test_timelapse_deterministic_and_moving() -> None:
    a = render_timelapse(4, seed=5, config=SMALL, max_cells=2)
    b = render_timelapse(4, seed=5, config=SMALL, max_cells=2)
    np.testing.assert_array_equal(a.images, b.images)
    assert not np.array_equal(a.images[0], a.images[1])


def test_font_renders() -> None:
    bm = render_text("W3 45.2h", scale=2)
    assert bm.shape[0] == 14 and bm.any()


def test_write_synthetic_embryos(tmp_path) -> None:
    from blastoseg.io.dataset import read_dataset

    seen = []
    out = write_synthetic_embryos(tmp_path / "ds", n=3, seed=0, config=SMALL,
                                  progress=lambda d, t: seen.append((d, t)))
    ds = read_dataset(out)
    assert len(ds) == 3 and seen[-1] == (3, 3)
    counts = sorted(ds.instances(i).count for i in range(3))
    assert counts == [1, 2, 3] or all(1 <= c <= 8 for c in counts)

    out = write_synthetic_embryos(tmp_path / "vid", n=1, seed=1, timelapse=4, config=SMALL)
    ds = read_dataset(out)
    assert len(ds) == 4
    entries = [ds.images[i] for i in range(4)]
    assert [e["frame_index"] for e in entries] == [0, 1, 2, 3]
    assert all(e["video_id"] == 1 for e in entries)
    extra = ds.extra(0)
    assert "cleavage_frames" in extra and "hours" in extra
    assert ds.instances(3).visible_masks is not None
