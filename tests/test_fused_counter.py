"""Counting with both models over frames (predict/fused_counter.py): the tiny amodal and count
models run on synthetic frames, the circle found once and given to Cell-Net, the fused count
equal to the fusion rule applied by hand, and which counter each choice of models gives."""

from __future__ import annotations

import numpy as np
import pytest

from blastoseg.errors import BlastosegError


@pytest.fixture(scope="module")
def frames(tiny_models):
    from blastoseg.synth import render_embryo

    return np.stack([render_embryo(n, seed=40 + n).image for n in (2, 4, 5)])


def test_fused_counter_matches_the_rule_applied_by_hand(tiny_models, tiny_count, frames,
                                                        monkeypatch):
    from blastoseg.predict.count import CountPredictor
    from blastoseg.predict.count_fusion import FusedCount, fuse_counts
    from blastoseg.predict.embryo_box import EmbryoBox
    from blastoseg.predict.fused_counter import LOW_THRESHOLD, load_fused_counter

    counter = load_fused_counter("tiny-amodal", "tiny-count", device="cpu")
    assert counter.kind == "fused" and counter.entry.name == "tiny-amodal + tiny-count"
    assert counter.amodal.score_threshold == LOW_THRESHOLD
    given = []  # Cell-Net must frame with the detector's circle, not localise again
    choose = CountPredictor._choose
    monkeypatch.setattr(CountPredictor, "_choose", lambda self, grey, spec, *a:
                        given.append(spec) or choose(self, grey, spec, *a))
    results = counter.predict(frames)
    assert len(results) == 3 and all(isinstance(r, FusedCount) for r in results)
    assert len(given) == 3 and all(isinstance(b, EmbryoBox) for b in given)
    insts = counter.amodal.predict(frames)
    for k, (r, inst) in enumerate(zip(results, insts, strict=True)):
        assert r.meta["frame"] == k and r.meta["density_model"] == "tiny-count"
        assert r.density.density.shape == frames.shape[1:]
        assert r.count == len(r.instances) == len(r.centroids)
        by_hand = fuse_counts(r.density, inst, count_threshold=counter.calibrated_threshold)
        assert r.count == by_hand.count and r.added == by_hand.added
        assert r.instance_count == int((inst.scores >= counter.calibrated_threshold).sum())
    one = counter.predict(frames[0])  # a frame: one result
    assert isinstance(one, FusedCount) and one.count == results[0].count


def test_the_timeline_counts_a_fused_result(tiny_models, tiny_count, frames):
    from blastoseg.measure.frame_counts import iter_frame_counts
    from blastoseg.predict.fused_counter import load_fused_counter
    from blastoseg.progress import run_with_progress

    counter = load_fused_counter("tiny-amodal", "tiny-count", device="cpu")
    counts = run_with_progress(iter_frame_counts(counter, list(frames)))
    fused = counter.predict(frames)
    assert [c.estimate for c in counts] == [float(r.count) for r in fused]
    assert all(c.density is not None and len(c.centroids) == c.count for c in counts)


def test_which_counter_each_choice_of_models_gives(tiny_models, tiny_count):
    from blastoseg.predict.amodal import AmodalPredictor
    from blastoseg.predict.count import CountPredictor
    from blastoseg.predict.fused_counter import FusedCounter, load_counter

    assert isinstance(load_counter("tiny-count", device="cpu"), CountPredictor)
    fused = load_counter("tiny-amodal", "tiny-count", device="cpu")
    assert isinstance(fused, FusedCounter)
    alone = load_counter("tiny-amodal", fuse=False, device="cpu")
    assert isinstance(alone, AmodalPredictor) and alone.score_threshold > 0.05
    with pytest.raises(BlastosegError, match="name an amodal model"):
        load_counter("tiny-count", "tiny-count", device="cpu")
    with pytest.raises(BlastosegError, match="fusion is off"):
        load_counter("tiny-amodal", "tiny-count", fuse=False, device="cpu")
    with pytest.raises(BlastosegError, match="amodal models only"):
        load_counter("tiny-count", count_stacked=True, device="cpu")
    # test-time flips go to the detector; the density model sees each frame once
    flipped = load_counter("tiny-amodal", "tiny-count", flips=4, device="cpu")
    assert isinstance(flipped, FusedCounter) and flipped.flips == flipped.amodal.flips == 4
    assert fused.flips == 0
    assert load_counter("tiny-amodal", fuse=False, flips=8, device="cpu").flips == 8
    with pytest.raises(BlastosegError, match="amodal models only"):
        load_counter("tiny-count", flips=4, device="cpu")
    with pytest.raises(BlastosegError, match="an 'amodal' and a 'count' model"):
        FusedCounter(alone, alone)
    with pytest.raises(BlastosegError, match="down to score"):
        FusedCounter(alone, load_counter("tiny-count", device="cpu"))
