"""Issue 18 item 15: a large brightfield field must not die in a (cells, H, W) allocation
after minutes of work. Its masks are built per cell on their boxes (the result is the one
full-size array), a field whose buffers cannot fit is refused before the network runs, and a
tiled run stops as soon as the cells it has found could not fit.

The network is replaced by a stub (one confident round cell in the middle of each window, or
none), so these run on large-but-cheap frames in a second or two."""

from __future__ import annotations

import tracemalloc
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from blastoseg.errors import MemoryLimitError

RADIUS = 6  # working px of a cell (brightfield-default works at 1/4 of the input size)
SPACING = 32  # working px between cells


def _dots(side: int) -> np.ndarray:
    """A mostly empty field (uint8) with a bright disk wherever the stub sees a cell."""
    yy, xx = np.mgrid[:side, :side] / 4.0  # working coordinates
    dy, dx = (yy % SPACING) - SPACING / 2, (xx % SPACING) - SPACING / 2
    return np.where(dy ** 2 + dx ** 2 <= RADIUS ** 2, 255, 0).astype(np.uint8)


def _predictor(monkeypatch):
    """brightfield-default with its network replaced: an instance per bright blob of the
    window (the cells of :func:`_dots`), the heads' maps zero."""
    from scipy import ndimage

    from blastoseg.predict.brightfield import BrightfieldPredictor

    p = BrightfieldPredictor("brightfield-default", device="cpu")
    calls = []

    def forward(windows: np.ndarray):
        b, _, h, w = windows.shape
        calls.append(b)
        n = 40  # instance slots
        mask = torch.full((b, n, h, w), -20.0)
        cls = torch.full((b, n, 1), -20.0)
        for i in range(b):
            labels, k = ndimage.label(windows[i, 0] > 0.5)
            for j in range(min(k, n)):
                mask[i, j][torch.from_numpy(labels == j + 1)] = 20.0
                cls[i, j] = 20.0
        heads = {name: torch.zeros(b, 1, h, w) for name in p.heads}
        return SimpleNamespace(heads=heads, class_logits=cls, mask_logits=mask,
                               iou_logits=None, mask_stride=1)

    monkeypatch.setattr(p, "_forward", forward)
    return p, calls


def test_field_that_cannot_fit_is_refused_before_the_network(monkeypatch):
    from blastoseg.predict import memory

    p, calls = _predictor(monkeypatch)
    frame = _dots(2000)  # mostly empty, cheap
    monkeypatch.setattr(memory, "available_memory", lambda: 8 << 20)  # 8 MiB free
    with pytest.raises(MemoryLimitError, match=r"2000 x 2000 frame needs .* smaller parts"):
        p.predict(frame)
    assert calls == []  # not one window ran


def test_tiled_run_stops_once_the_cells_found_cannot_fit(monkeypatch):
    from blastoseg.predict import memory

    p, calls = _predictor(monkeypatch)
    frame = _dots(2048)  # 512 px working: 49 windows of 128 px, 256 cells
    total = p.count_windows(frame)
    # room for the buffers (asked first, before the work), then, with those allocated, for
    # 10 cells' masks: not for the cell in each of the 49 windows
    free = [p.frame_bytes(frame.shape) + frame.size]
    monkeypatch.setattr(memory, "available_memory",
                        lambda: free.pop() if len(free) > 1 else 10 * frame.size)
    free.insert(0, 10 * frame.size)
    with pytest.raises(MemoryLimitError, match=r"with at least \d+ cells .* one byte per pixel"):
        p.predict(frame)
    assert 0 < len(calls) < total  # stopped early, not after the whole field


def _peak(predictor, frame):
    tracemalloc.start()
    try:
        result = predictor.predict(frame)
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_masks_are_built_per_cell_not_cells_x_pixels(monkeypatch):
    """Peak numpy memory of a tiled field of 64 cells exceeds that of an empty field by the
    result's masks and not more: no second (cells, H, W) array (the old code allocated one
    full-size mask per candidate, then copied the non-empty ones: twice the masks)."""
    p, _ = _predictor(monkeypatch)
    _, buffers = _peak(p, np.zeros((1024, 1024), np.uint8))
    frame = _dots(1024)  # 256 px working: 9 windows, 64 cells
    result, peak = _peak(p, frame)
    assert len(result) == 64  # each cell once, whole, merged across windows
    masks = result.masks.nbytes
    assert peak - buffers < 1.3 * masks, (peak, buffers, masks)
    # each cell is one disk, about pi (4 RADIUS)^2 input px
    assert np.allclose(result.areas, np.pi * (4 * RADIUS) ** 2, rtol=0.15)


def test_frame_crops_work_on_boxes():
    from blastoseg.predict.brightfield_post import _Candidate, frame_crops, paste_crops

    sq = np.pad(np.ones((4, 4), bool), 2)
    cand = _Candidate(0.9, 0, 8, 8, sq.astype(np.float32), sq)
    empty = _Candidate(0.5, 0, 0, 0, np.zeros((3, 3), np.float32), np.zeros((3, 3), bool))
    crops = frame_crops([cand, empty], (40, 40), (80, 80), 0.5)
    assert crops[1] is None
    y0, x0, crop = crops[0]
    assert (y0, x0) == (20, 20) and crop.shape == (8, 8) and crop.all()  # box only
    masks = paste_crops(crops, (80, 80))
    assert masks.shape == (2, 80, 80) and masks[0].sum() == 64 and not masks[1].any()
