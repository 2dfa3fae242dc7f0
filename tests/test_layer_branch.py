"""The layer-count branch (models/layer_count.py), its training on a frozen detector
(train/amodal_task.py ``train_only``) and the layer rule reading its map (amodal_post.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from blastoseg.models.amodal_rcnn import AmodalMaskRCNN
from blastoseg.models.layer_count import expected_layers, layer_loss, layer_targets
from blastoseg.predict.amodal_post import (
    LayerRule,
    layer_count,
    postprocess_detections,
    select_cells,
)
from blastoseg.predict.mask_nms import mask_overlaps
from test_amodal_rcnn import H, _box, _ellipse, _one_thread, tiny_config  # noqa: F401 (fixture)


def _stack_sample():
    """Three ellipses, two of them stacked (IoU ~0.8), on a 96 px frame."""
    masks = torch.stack([_ellipse(40, 40, 22, 18), _ellipse(43, 42, 22, 19),
                         _ellipse(64, 62, 15, 15)]).to(torch.uint8)
    img = (0.3 + 0.2 * masks.float().sum(0))[None]
    target = {"boxes": torch.stack([_box(m) for m in masks]),
              "labels": torch.ones(3, dtype=torch.int64), "masks": masks}
    return img, target


# --- the branch ------------------------------------------------------------------------------

def test_layer_targets_count_clip_and_pad():
    m = torch.zeros(4, 8, 8, dtype=torch.uint8)
    m[:, :4, :4] = 1        # 4 layers, clipped to K-1 = 2
    m[0, 4:, 4:] = 1        # 1 layer
    onehot, valid = layer_targets([m], [(8, 8)], (8, 12), classes=3)
    assert onehot.shape == (1, 3, 8, 12) and valid.shape == (1, 1, 8, 12)
    assert onehot[0, 2, :4, :4].eq(1).all()
    assert onehot[0, 1, 4:, 4:8].eq(1).all()
    assert onehot[0, 0, :4, 4:8].eq(1).all()
    assert valid[0, 0, :, 8:].eq(0).all() and valid[0, 0, :, :8].eq(1).all()
    empty, _ = layer_targets([torch.zeros(0, 8, 8)], [(8, 8)], (8, 8), classes=3)
    assert empty[0, 0].eq(1).all()


def test_layer_loss_is_low_for_the_right_map_and_ignores_padding():
    onehot, valid = layer_targets([torch.ones(2, 8, 8)], [(8, 8)], (8, 8), classes=3)
    right = torch.full((1, 3, 4, 4), -10.0)
    right[:, 2] = 10.0
    wrong = right.flip(1)
    assert layer_loss(right, onehot, valid) < 1e-3 < 5 < layer_loss(wrong, onehot, valid)
    assert expected_layers(right).squeeze().allclose(torch.full((4, 4), 2.0), atol=1e-3)
    none_valid = torch.zeros_like(valid)
    assert float(layer_loss(wrong, onehot, none_valid)) == 0.0


def test_model_with_layer_branch_trains_and_predicts_a_layer_map():
    img, target = _stack_sample()
    torch.manual_seed(0)
    model = AmodalMaskRCNN(tiny_config(layer_classes=4, layer_channels=8))
    model.train()
    losses = model([img], [target])
    assert "loss_layers" in losses and losses["loss_layers"] > 0
    model.eval()
    with torch.no_grad():
        out = model([img])[0]
    assert out["layers"].shape == (1, H, H)
    assert 0.0 <= float(out["layers"].min()) and float(out["layers"].max()) <= 3.0


def test_the_layer_branch_does_not_change_the_detections():
    img, _ = _stack_sample()
    torch.manual_seed(0)
    plain = AmodalMaskRCNN(tiny_config(box_score_thresh=0.0)).eval()
    with_layers = AmodalMaskRCNN(tiny_config(box_score_thresh=0.0, layer_classes=4,
                                             layer_channels=8)).eval()
    missing, unexpected = with_layers.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("layer_branch.") for k in missing)
    with torch.no_grad():
        a, b = plain([img])[0], with_layers([img])[0]
    assert torch.equal(a["scores"], b["scores"]) and torch.equal(a["masks"], b["masks"])
    assert torch.equal(a["occlusion"], b["occlusion"])


def test_frozen_detector_training_touches_only_the_branch():
    img, target = _stack_sample()
    torch.manual_seed(0)
    model = AmodalMaskRCNN(tiny_config(layer_classes=4, layer_channels=8)).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith("layer_branch."))
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    first = None
    for _ in range(5):
        loss = model.layer_branch_losses([img], [target])["loss_layers"]
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = model.state_dict()
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    assert changed and all(k.startswith("layer_branch.") for k in changed), changed
    assert float(loss.detach()) < first  # BatchNorm statistics above are untouched too
    assert model.backbone.training  # the mode is restored after the frozen forward


def test_layer_branch_losses_needs_a_branch():
    img, target = _stack_sample()
    with pytest.raises(ValueError, match="no layer branch"):
        AmodalMaskRCNN(tiny_config()).layer_branch_losses([img], [target])


@pytest.mark.parametrize("bad", [{"layer_classes": 2}, {"layer_classes": 17},
                                 {"layer_channels": 0}])
def test_config_rejects_bad_layer_settings(bad):
    with pytest.raises(ValueError, match="layer_"):
        tiny_config(**bad)


# --- the rule reading the layer map ----------------------------------------------------------

def _disc(cy, cx, r, n=64):
    y, x = np.mgrid[:n, :n]
    return (y - cy) ** 2 + (x - cx) ** 2 <= r * r


def test_layer_count_reads_a_layer_map_as_it_is():
    cells = np.stack([_disc(16, 16, 8), _disc(16, 48, 8), _disc(48, 16, 8), _disc(48, 48, 8)])
    layers = cells.sum(0).astype(np.float32)
    assert layer_count(cells, layers, None) == pytest.approx(4.0)
    # a second cell under the first: one kept mask, two layers where it lies
    stacked = np.stack([_disc(32, 32, 12)])
    assert layer_count(stacked, 2.0 * stacked[0], None) == pytest.approx(2.0)
    # inside a kept mask a pixel is at least one layer, whatever the map says
    assert layer_count(stacked, np.zeros((64, 64), np.float32), None) == pytest.approx(1.0)


def test_layers_rule_lets_the_stacked_cell_back_and_needs_the_map():
    # equal cells: the estimate divides by the kept cells' mean area
    top, under = _disc(30, 30, 10, 80), _disc(32, 32, 10, 80)
    others = [_disc(12, 66, 10, 80), _disc(66, 12, 10, 80), _disc(66, 66, 10, 80)]
    masks = np.stack([top, under, *others]).astype(np.float32)
    scores = np.array([0.99, 0.9, 0.98, 0.97, 0.96])
    layers = np.stack([top, under, *others]).sum(0).astype(np.float32)
    iou, area = mask_overlaps(masks)
    assert iou[0, 1] > 0.6  # mask NMS at 0.6 removes the stacked cell
    rule = LayerRule(source="layers", min_count=3.0, add_min_score=0.5, add_max_iou=0.9)
    plain, _ = select_cells(iou, area, masks, scores, None, score_threshold=0.5,
                            mask_nms_iou=0.6, rule=None)
    cells, est = select_cells(iou, area, masks, scores, layers, score_threshold=0.5,
                              mask_nms_iou=0.6, rule=rule)
    assert len(plain) == 4 and len(cells) == 5 and est == pytest.approx(5.0, abs=0.3)
    res = postprocess_detections(masks, scores, np.zeros_like(layers), score_threshold=0.05,
                                 mask_nms_iou=0.6, count_threshold=0.5, rule=rule,
                                 layers=layers)
    assert res.n_cells == 5
    # without the map (a model without a layer branch) the rule does not run
    res = postprocess_detections(masks, scores, np.zeros_like(layers), score_threshold=0.05,
                                 mask_nms_iou=0.6, count_threshold=0.5, rule=rule)
    assert res.n_cells == 4 and res.layer_estimate is None


def test_layer_rule_source_round_trips_and_is_checked():
    rule = LayerRule(source="layers", min_count=3.5)
    back = LayerRule.from_dict(json.loads(json.dumps(rule.to_dict())))
    assert back == rule and back.table == []
    with pytest.raises(ValueError, match="source"):
        LayerRule(source="depth")
    with pytest.raises(ValueError, match="table"):
        LayerRule(source="occlusion", table=[1.0, 2.0])


# --- training a layer branch onto a trained detector (CLI) -----------------------------------

def test_train_only_the_layer_branch_of_a_trained_model(tiny_models, tmp_path, capsys):
    from blastoseg.cli import main
    from blastoseg.weights import resolve_model
    from blastoseg.weights.safetensors_io import load_weights
    from conftest import TINY_MODEL

    _, data = tiny_models
    cfg = tmp_path / "layers.json"
    cfg.write_text(json.dumps({
        "model": {**TINY_MODEL, "layer_classes": 4, "layer_channels": 8},
        "hyper": {"max_steps": 3, "batch_size": 2, "val_frames": 2, "calib_min_frames": 5,
                  "train_only": "layer_branch"}}))
    job = tmp_path / "job"
    assert main(["train", "amodal", "--data", str(data), "--val", str(data), "--base",
                 "tiny-amodal", "--out", str(job), "--config", str(cfg), "--name",
                 "tiny-amodal-layers", "--quiet"]) == 0
    events = [json.loads(x) for x in (job / "events.jsonl").read_text().splitlines()]
    assert "has no layer branch" in events[0]["message"]
    assert "layer_mae" in events[-1]["metrics"]
    base = load_weights(resolve_model("tiny-amodal").weights_path)
    new = load_weights(resolve_model("tiny-amodal-layers").weights_path)
    assert set(new) - set(base) and all(k.startswith("layer_branch.") for k in set(new) - set(base))
    assert all(torch.equal(base[k].float(), new[k].float()) for k in base)  # detector frozen

    # the rule is switched on as the card says, or as asked; a card without one has none
    from blastoseg.napari._ui import card_layer_rule
    from blastoseg.predict.amodal import AmodalPredictor

    assert AmodalPredictor("tiny-amodal-layers", device="cpu").count_stacked is False
    entry = resolve_model("tiny-amodal-layers")
    card = json.loads(entry.card_path.read_text())
    card["config"].setdefault("postprocess", {})["layer_rule"] = LayerRule(
        source="layers", min_count=3.0).to_dict()
    entry.card_path.write_text(json.dumps(card))
    assert AmodalPredictor("tiny-amodal-layers", device="cpu").layer_rule is not None
    assert AmodalPredictor("tiny-amodal-layers", device="cpu",
                           count_stacked=False).layer_rule is None
    card["config"]["postprocess"]["use_layer_rule"] = False
    entry.card_path.write_text(json.dumps(card))
    assert card_layer_rule("tiny-amodal-layers")[1] is False
    assert AmodalPredictor("tiny-amodal-layers", device="cpu").layer_rule is None
    assert AmodalPredictor("tiny-amodal-layers", device="cpu",
                           count_stacked=True).layer_rule is not None
    assert AmodalPredictor("tiny-amodal", device="cpu", count_stacked=True).layer_rule is None
    assert card_layer_rule("tiny-amodal") is None
    card["config"]["postprocess"]["use_layer_rule"] = "yes"
    entry.card_path.write_text(json.dumps(card))
    with pytest.raises(Exception, match="use_layer_rule"):
        AmodalPredictor("tiny-amodal-layers", device="cpu")
    card["config"]["postprocess"]["use_layer_rule"] = False  # as the shipped model's
    entry.card_path.write_text(json.dumps(card))
    image = tmp_path / "frame.png"
    from PIL import Image
    Image.fromarray((np.random.default_rng(0).random((96, 96)) * 255).astype(np.uint8)).save(image)
    assert main(["segment", "amodal", str(image), "--model", "tiny-amodal-layers",
                 "--no-count-stacked", "--out", str(tmp_path / "seg")]) == 0

    # a fine-tune of it keeps its layer rule and calibrates the counts with it
    entry = resolve_model("tiny-amodal-layers")
    card = json.loads(entry.card_path.read_text())
    rule = LayerRule(source="layers", min_count=3.0).to_dict()
    card["config"].setdefault("postprocess", {})["layer_rule"] = rule
    card["config"]["postprocess"]["use_layer_rule"] = False
    entry.card_path.write_text(json.dumps(card))
    tune = tmp_path / "tune.json"
    tune.write_text(json.dumps({"model": {**TINY_MODEL, "layer_classes": 4, "layer_channels": 8},
                                "hyper": {"max_steps": 1, "batch_size": 2, "val_frames": 2,
                                          "calib_min_frames": 5}}))
    assert main(["train", "amodal", "--data", str(data), "--val", str(data), "--base",
                 "tiny-amodal-layers", "--out", str(tmp_path / "job3"), "--config", str(tune),
                 "--name", "tiny-amodal-layers-tuned", "--quiet"]) == 0
    tuned = resolve_model("tiny-amodal-layers-tuned").card.config["postprocess"]
    assert tuned["layer_rule"] == rule and "calibration" in tuned
    assert tuned["use_layer_rule"] is False  # a fine-tune does not switch the rule on

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"model": TINY_MODEL, "hyper": {"max_steps": 1,
                                                              "train_only": "layer_branch"}}))
    assert main(["train", "amodal", "--data", str(data), "--base", "tiny-amodal", "--out",
                 str(tmp_path / "job2"), "--config", str(bad), "--quiet"]) != 0
    assert "layer_classes" in capsys.readouterr().err
