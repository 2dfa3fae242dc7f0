"""Test-time flips for the amodal detector (predict/instance_flips.py): flipping detections
back, merging the four copies' lists, and the predictor's wiring."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from blastoseg.predict.instance_flips import FOUR_FLIPS, flip_back, merge_flipped


def _output(boxes, scores, h=8, w=10):
    """A detector output whose masks are its (integer) boxes filled in."""
    masks = torch.zeros((len(boxes), 1, h, w))
    for k, (x1, y1, x2, y2) in enumerate(boxes):
        masks[k, 0, y1:y2, x1:x2] = 0.9
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "scores": torch.tensor(scores, dtype=torch.float32),
            "labels": torch.ones(len(boxes), dtype=torch.int64),
            "masks": masks, "occlusion": torch.zeros((1, h, w))}


@pytest.mark.parametrize("dims", FOUR_FLIPS)
def test_flip_back_undoes_a_flipped_crop(dims):
    # a detection in the top-left corner of the crop, seen in the crop flipped along dims
    truth = _output([[0, 1, 3, 4]], [0.8])
    truth["occlusion"][0, 1, 0] = 1.0
    seen = {k: (torch.flip(v, dims) if k in ("masks", "occlusion") and dims else v)
            for k, v in truth.items()}
    h, w = 8, 10
    x1, y1, x2, y2 = 0, 1, 3, 4
    if -1 in dims:
        x1, x2 = w - x2, w - x1
    if -2 in dims:
        y1, y2 = h - y2, h - y1
    seen["boxes"] = torch.tensor([[x1, y1, x2, y2]], dtype=torch.float32)
    back = flip_back(seen, dims)
    assert torch.equal(back["masks"], truth["masks"])
    assert torch.equal(back["occlusion"], truth["occlusion"])
    assert back["boxes"].tolist() == [[0.0, 1.0, 3.0, 4.0]]
    assert back["scores"] is seen["scores"]


def test_a_cell_found_in_every_copy_keeps_its_score_and_a_chance_one_sinks():
    cell = [1, 1, 5, 5]
    views = [_output([cell, [6, 2, 9, 7]], [0.9, 0.8])] + [_output([cell], [s])
                                                          for s in (0.7, 0.9, 0.6)]
    views[1]["occlusion"] += 1.0
    merged = merge_flipped(views)
    # the cell: the four scores averaged; the detection of one copy: its score / 4
    np.testing.assert_allclose(merged["scores"].numpy(), [(0.9 + 0.7 + 0.9 + 0.6) / 4, 0.2],
                               rtol=1e-6)
    assert merged["masks"].shape == (2, 1, 8, 10)
    assert torch.allclose(merged["masks"][0], views[0]["masks"][0])
    np.testing.assert_allclose(merged["boxes"][0].numpy(), cell)
    np.testing.assert_allclose(merged["occlusion"].numpy(), 0.25)  # the maps' mean
    assert merged["labels"].tolist() == [1, 1]


def test_a_group_takes_one_detection_per_copy_and_only_overlapping_ones():
    # two near-duplicates in one copy stay two groups; a copy's detection that overlaps
    # the seed less than MATCH_IOU is not merged into it
    a = _output([[1, 1, 5, 5], [1, 1, 5, 6]], [0.9, 0.8])
    b = _output([[1, 1, 5, 5], [4, 4, 8, 8]], [0.9, 0.5])
    merged = merge_flipped([a, b])
    np.testing.assert_allclose(merged["scores"].numpy(), [0.9, 0.4, 0.25], rtol=1e-6)
    # the merged mask where both copies agree is their mean
    assert merged["masks"].shape[0] == 3


def test_empty_copies_merge_to_nothing():
    empty = _output([], [])
    merged = merge_flipped([empty, empty, empty, empty])
    assert merged["scores"].shape == (0,) and merged["masks"].shape == (0, 1, 8, 10)
    assert merged["boxes"].shape == (0, 4)
    with pytest.raises(ValueError):
        merge_flipped([])


class _Fixed(torch.nn.Module):
    """A stand-in detector: one detection in the top-left corner of whatever it is shown
    (not flip-equivariant), and one on the brightest column (equivariant)."""

    def forward(self, images):
        outs = []
        for img in images:
            h, w = img.shape[-2:]
            col = int(img[0].mean(0).argmax())
            outs.append(_output([[0, 0, w // 4, h // 4], [col, 0, col + 1, h]], [0.8, 0.9],
                                h=h, w=w))
        return outs


def test_the_predictor_merges_its_four_copies(tiny_models):
    from blastoseg.predict.amodal import AmodalPredictor

    image = np.zeros((64, 64), np.float32)
    image[:, 40] = 1.0  # the bright column
    image += np.random.default_rng(0).normal(0, 0.01, image.shape).astype(np.float32)
    plain = AmodalPredictor("tiny-amodal", device="cpu", score_threshold=0.05,
                            mask_nms_iou=1.0)
    flipped = AmodalPredictor("tiny-amodal", device="cpu", score_threshold=0.05,
                              mask_nms_iou=1.0, flips=True)
    for p in (plain, flipped):
        p.model = _Fixed()
    one = plain.predict(image, localise=False)
    four = flipped.predict(image, localise=False)
    np.testing.assert_allclose(sorted(one.scores), [0.8, 0.9], rtol=1e-6)
    # the column is found in every copy at the same place: one cell at its score; the
    # corner lands in each of the four corners once flipped back: four at a quarter
    np.testing.assert_allclose(sorted(four.scores), [0.2] * 4 + [0.9], rtol=1e-6)
    column = four.masks[int(np.argmax(four.scores))]
    assert column[:, 40].all() and column.sum() == 64
