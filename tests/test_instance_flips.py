"""Test-time flips for the amodal detector (predict/instance_flips.py): flipping detections
back, merging the four copies' lists, and the predictor's wiring."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from blastoseg.predict.instance_flips import VIEWS, check_flips, flip_back, flipped, merge_flipped


def _output(boxes, scores, h=8, w=10):
    """A detector output whose masks are its (integer) boxes filled in."""
    masks = torch.zeros((len(boxes), 1, h, w))
    for k, (x1, y1, x2, y2) in enumerate(boxes):
        masks[k, 0, y1:y2, x1:x2] = 0.9
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "scores": torch.tensor(scores, dtype=torch.float32),
            "labels": torch.ones(len(boxes), dtype=torch.int64),
            "masks": masks, "occlusion": torch.zeros((1, h, w))}


@pytest.mark.parametrize("view", VIEWS[8])
def test_flip_back_undoes_every_copy(view):
    # a detection in the top-left corner of a square crop, as the copy `view` shows it
    truth = _output([[0, 1, 3, 4]], [0.8], h=9, w=9)
    truth["occlusion"][0, 1, 0] = 1.0
    seen = {k: (flipped(v, view) if k in ("masks", "occlusion") else v)
            for k, v in truth.items()}
    ys, xs = np.nonzero(seen["masks"][0, 0].numpy())  # where the copy shows it
    seen["boxes"] = torch.tensor([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]],
                                 dtype=torch.float32)
    back = flip_back(seen, view)
    assert torch.equal(back["masks"], truth["masks"])
    assert torch.equal(back["occlusion"], truth["occlusion"])
    assert back["boxes"].tolist() == [[0.0, 1.0, 3.0, 4.0]]
    assert back["scores"] is seen["scores"]


def test_the_eight_copies_are_the_eight_symmetries_of_a_square():
    x = torch.arange(9.0).reshape(1, 3, 3)
    copies = {tuple(flipped(x, v).flatten().tolist()) for v in VIEWS[8]}
    rotations = {tuple(torch.rot90(x, k, (-2, -1)).flatten().tolist()) for k in range(4)}
    assert len(copies) == 8 and rotations <= copies
    assert [v for v in VIEWS[8] if not v[1]] == list(VIEWS[4])


def test_flips_option_is_checked():
    assert [check_flips(f) for f in (False, None, 0, 1, True, 4, 8)] == [0, 0, 0, 0, 4, 4, 8]
    for bad in (2, 3, 16, -4, 4.5, "4"):
        with pytest.raises(ValueError, match="flips"):
            check_flips(bad)


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
    (not flip-equivariant), and a square around the centre of the brightest pixels
    (equivariant, up to a pixel of rounding)."""

    def forward(self, images):
        outs = []
        for img in images:
            h, w = img.shape[-2:]
            ys, xs = torch.nonzero(img[0] >= img[0].max() - 1e-3, as_tuple=True)
            y, x = int(ys.float().mean().round()), int(xs.float().mean().round())
            outs.append(_output([[0, 0, w // 4, h // 4], [x - 12, y - 12, x + 13, y + 13]],
                                [0.8, 0.9], h=h, w=w))
        return outs


@pytest.mark.parametrize("flips", [4, 8])
def test_the_predictor_merges_its_flipped_copies(tiny_models, flips):
    from blastoseg.predict.amodal import AmodalPredictor

    yy, xx = np.mgrid[:64, :64]
    image = np.exp(-((yy - 30) ** 2 + (xx - 40) ** 2) / 50.0).astype(np.float32)  # the spot
    plain = AmodalPredictor("tiny-amodal", device="cpu", score_threshold=0.05,
                            mask_nms_iou=1.0)
    merged = AmodalPredictor("tiny-amodal", device="cpu", score_threshold=0.05,
                             mask_nms_iou=1.0, flips=flips)
    assert merged.flips == flips
    for p in (plain, merged):
        p.model = _Fixed()
    one = plain.predict(image, localise=False)
    many = merged.predict(image, localise=False)
    np.testing.assert_allclose(sorted(one.scores), [0.8, 0.9], rtol=1e-6)
    # the spot is found in every copy at the same place: one cell at its score; the corner
    # lands in each of the four corners once flipped back (a transpose keeps the top-left
    # corner where it is, so with eight copies each corner is found twice): 4 x 0.8 / 4
    np.testing.assert_allclose(sorted(many.scores), [0.2] * 4 + [0.9], rtol=1e-6)
    spot = many.masks[int(np.argmax(many.scores))]
    assert spot[28:33, 38:43].all() and spot.sum() < 0.1 * spot.size  # one square, no more


def test_cli_flips(tiny_models, tmp_path, capsys):
    import json

    from blastoseg.cli import main

    _, data = tiny_models
    capsys.readouterr()
    assert main(["eval", "amodal", "--data", str(data), "--model", "tiny-amodal",
                 "--device", "cpu", "--json", "--flips", "8"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["flips"] == 8
    assert main(["eval", "amodal", "--data", str(data), "--model", "tiny-amodal",
                 "--device", "cpu", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["flips"] == 0
    image = sorted((data / "images").iterdir())[0]
    out = tmp_path / "seg"
    assert main(["segment", "amodal", str(image), "--out", str(out), "--model", "tiny-amodal",
                 "--device", "cpu", "--flips"]) == 0
    assert (out / "counts.csv").is_file()
    assert "4 test-time flips" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # only 4 or 8 copies
        main(["segment", "amodal", str(image), "--out", str(tmp_path / "x"), "--flips", "3"])


def test_calibration_sees_the_flipped_candidates(tiny_models, monkeypatch):
    import blastoseg.predict.calibrate as calibrate
    from blastoseg.predict.amodal import AmodalPredictor

    made = []

    class Recording(AmodalPredictor):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(calibrate, "AmodalPredictor", Recording)
    _, data = tiny_models
    result = calibrate.calibrate_counts("tiny-amodal", data, device="cpu", max_frames=3,
                                        flips=4)
    assert result["n_frames"] == 3 and [p.flips for p in made] == [4]
