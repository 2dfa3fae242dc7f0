"""CompressedStack: NumPy indexing semantics, memory, and napari painting on it."""

from __future__ import annotations

import numpy as np
import pytest

from blastoseg.instances import FrameInstances
from blastoseg.napari.compressed_stack import CompressedStack
from blastoseg.napari.layer_conversion import LabelLayerPacker, instances_to_label_layers
from blastoseg.napari.result_layers import (
    Placement,
    ResultLayerBuilder,
    instances_from_layers,
    result_layer_data,
)


def _labels(t=6, h=40, w=50, seed=0):
    rng = np.random.default_rng(seed)
    ref = np.zeros((t, h, w), np.uint8)
    for k in range(t):
        y, x = rng.integers(0, h - 10), rng.integers(0, w - 10)
        ref[k, y:y + 10, x:x + 10] = k + 1
    return ref


READ_KEYS = [
    1, -1, (2,), (slice(None),), (slice(1, 4), slice(2, 9)), (2, slice(None), 3),
    (slice(None, None, 2), 5, slice(3, 40, 3)), (Ellipsis, 4), (1, Ellipsis),
    (slice(4, 2),),
]


@pytest.mark.parametrize("key", READ_KEYS, ids=[repr(k) for k in READ_KEYS])
def test_reads_match_numpy(key):
    ref = _labels()
    cs = CompressedStack.from_array(ref)
    np.testing.assert_array_equal(cs[key], ref[key])


def test_fancy_reads_and_writes_match_numpy():
    ref = _labels()
    cs = CompressedStack.from_array(ref)
    idx = (np.array([1, 3, 3, 0, 5]), np.array([6, 12, 0, 0, 39]), np.array([6, 2, 3, 4, 49]))
    np.testing.assert_array_equal(cs[idx], ref[idx])
    ref[idx] = 9
    cs[idx] = 9
    ref[idx] = np.arange(5)
    cs[idx] = np.arange(5)
    np.testing.assert_array_equal(np.asarray(cs), ref)


@pytest.mark.parametrize("key, value", [
    ((slice(0, 2), slice(0, 3), slice(0, 3)), 9),
    ((4, slice(10, 12)), np.arange(50, dtype=np.uint8)),
    ((slice(1, 3), 0, 0), np.array([1, 2])),
    (2, 0),
    ((Ellipsis, 7), 3),
])
def test_writes_match_numpy(key, value):
    ref = _labels()
    cs = CompressedStack.from_array(ref)
    ref[key] = value
    cs[key] = value
    np.testing.assert_array_equal(np.asarray(cs), ref)


def test_frames_are_independent_of_the_cache():
    ref = _labels(t=12)
    cs = CompressedStack.from_array(ref)
    for t in range(12):  # more frames than the cache holds: all come back from compression
        np.testing.assert_array_equal(cs[t], ref[t])
    got = cs[3]
    got[:] = 77  # a read is a copy: changing it does not change the stack
    np.testing.assert_array_equal(cs[3], ref[3])
    with pytest.raises(ValueError):
        cs.frame(3)[0, 0] = 1  # the decoded view is read-only


def test_promote_keeps_values_and_four_d_layout():
    ref = _labels()[:, None]
    cs = CompressedStack.from_array(ref)
    assert cs.shape == ref.shape and cs.ndim == 4
    cs.promote(np.uint16)
    assert cs.dtype == np.uint16
    cs[2, 0, 0, 0] = 300
    ref = ref.astype(np.uint16)
    ref[2, 0, 0, 0] = 300
    np.testing.assert_array_equal(np.asarray(cs), ref)
    np.testing.assert_array_equal(cs[:, 0], ref[:, 0])


def test_label_frames_compress_far_below_plain_arrays():
    t, h, w = 60, 200, 200
    yy, xx = np.mgrid[:h, :w]
    cs = CompressedStack((t, h, w), np.uint8)
    for k in range(t):
        cs[k] = ((yy - 100) ** 2 + (xx - 60 - k) ** 2 < 50 ** 2) * 3
    assert cs.nbytes == t * h * w
    assert cs.compressed_nbytes < cs.nbytes / 10
    empty = CompressedStack((1000, 500, 500), np.uint8)
    assert empty.compressed_nbytes == 0  # empty frames cost nothing


def test_bad_shapes_and_indices_are_clear():
    with pytest.raises(ValueError, match="shape"):
        CompressedStack((0, 10, 10))
    cs = CompressedStack((3, 4, 5))
    with pytest.raises(IndexError, match="out of range"):
        cs[3]
    with pytest.raises(ValueError, match="does not fit"):
        cs.set_frame(0, np.zeros((5, 4)))


def _disc_frames(n=5, shape=(64, 64)):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    frames = []
    for t in range(n):
        masks = np.stack([(yy - 30) ** 2 + (xx - 20 - t) ** 2 < 15 ** 2,
                          (yy - 30) ** 2 + (xx - 40) ** 2 < 15 ** 2])
        frames.append(FrameInstances(masks=masks, track_ids=np.array([0, 300]),
                                     occlusion=np.full(shape, 0.5, np.float32)))
    return frames


def test_streaming_packer_matches_batch_packing_and_promotes():
    frames = _disc_frames()
    packer = LabelLayerPacker(len(frames), frames[0].shape, new_stack=CompressedStack)
    for t, f in enumerate(frames):
        packer.add(t, f)
    streamed = packer.result()
    batch = instances_to_label_layers(frames)
    assert len(streamed) == len(batch) == 2
    for a, b in zip(streamed, batch, strict=True):
        assert a.dtype == b.dtype == np.uint16  # id 301 outgrew uint8
        np.testing.assert_array_equal(np.asarray(a), b)


@pytest.mark.parametrize("axes", ["T", "TZ"])
def test_builder_gives_compressed_stack_layers_that_round_trip(axes):
    frames = _disc_frames()
    placement = Placement(axes=axes, n_z=3)
    data = result_layer_data(frames, "e", placement)
    labels = [d for d, _k, kind in data if kind == "labels"]
    assert all(isinstance(d, CompressedStack) for d in labels)
    expected = (5, 64, 64) if axes == "T" else (5, 1, 64, 64)
    assert all(d.shape == expected for d in labels)

    class L:  # the duck-typed layer instances_from_layers reads
        def __init__(self, d, k):
            self.data, self.metadata, self.name = d, k["metadata"], k["name"]

    amodal = [L(d, k) for d, k, kind in data if "amodal" in k["name"]]
    first, back, _ = instances_from_layers(amodal)
    assert first == 0 and len(back) == 5
    for f, g in zip(frames, back, strict=True):
        np.testing.assert_array_equal(f.masks, g.masks)


def test_single_frame_results_stay_plain_arrays():
    frames = _disc_frames(n=1)
    builder = ResultLayerBuilder(1, frames[0].shape, "e")
    builder.add(0, frames[0])
    for d, _k, kind in builder.layer_data():
        if kind != "points":
            assert isinstance(d, np.ndarray) and d.shape == (64, 64)


def test_napari_paints_fills_and_undoes_on_a_compressed_stack(make_napari_viewer):
    ref = np.zeros((6, 80, 90), np.uint8)
    ref[:, 20:50, 20:50] = 2
    cs = CompressedStack.from_array(ref)
    viewer = make_napari_viewer()
    layer = viewer.add_labels(cs, name="amodal 1")
    viewer.dims.set_current_step(0, 3)
    layer.brush_size = 6
    layer.paint((3, 60, 70), 5)
    assert (cs[3] == 5).sum() > 0 and (cs[2] == 5).sum() == 0
    layer.fill((3, 5, 5), 7)
    assert (cs[3] == 7).sum() > 1000 and (cs[4] == 7).sum() == 0
    layer.undo()
    assert (cs[3] == 7).sum() == 0
    layer.paint_polygon(np.array([[3, 0, 0], [3, 0, 10], [3, 10, 10], [3, 10, 0]]), 9)
    assert (cs[3] == 9).sum() > 0
    viewer.dims.set_current_step(0, 5)
    assert layer.get_value((5, 30, 30)) == 2
