"""Tests of the S1 amodal detector (models/amodal_*.py, occlusion.py, light_backbone.py).

Everything runs on tiny widths at 96 px, on the CPU.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from blastoseg.models.amodal_config import AmodalConfig
from blastoseg.models.amodal_heads import code_bce_loss
from blastoseg.models.amodal_rcnn import LOSS_KEYS, AmodalMaskRCNN
from blastoseg.models.configs import VQVAEConfig
from blastoseg.models.occlusion import occlusion_target_from_masks, targets_to_padded
from blastoseg.models.vqvae import VQVAE

H = 96
COMBOS = [(m, o) for m in ("fcn", "vq", "vq_refine") for o in (True, False)]


def tiny_config(**kw) -> AmodalConfig:
    base = dict(working_size=96, trunk_stages=2, fpn_channels=16, occlusion_channels=8,
                anchor_sizes=((16, 24), (32, 48), (64, 96)), mask_head_channels=16,
                code_fc_channels=4, refine_channels=8, box_representation=32,
                rpn_batch_size_per_image=64, box_batch_size_per_image=32,
                vqvae=VQVAEConfig(hidden_channels=8, codebook_size=16, embed_dim=4))
    base.update(kw)
    return AmodalConfig(**base)


def _ellipse(cy, cx, ry, rx) -> torch.Tensor:
    y, x = torch.meshgrid(torch.arange(H), torch.arange(H), indexing="ij")
    return ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1.0


def _box(m: torch.Tensor) -> torch.Tensor:
    ys, xs = torch.where(m > 0)
    return torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32)


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread: the tiny models only lose time to thread contention."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def sample() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Two overlapping ellipses (amodal masks) on a 96 px grey frame."""
    masks = torch.stack([_ellipse(40, 36, 22, 17), _ellipse(52, 58, 20, 25)]).to(torch.uint8)
    img = (0.3 + 0.25 * masks[0].float() + 0.2 * masks[1].float())[None]
    target = {"boxes": torch.stack([_box(m) for m in masks]),
              "labels": torch.ones(2, dtype=torch.int64), "masks": masks}
    return img, target


def _build(cfg: AmodalConfig, seed: int = 0) -> AmodalMaskRCNN:
    torch.manual_seed(seed)
    return AmodalMaskRCNN(cfg)


def test_config_round_trip_through_json():
    cfg = tiny_config(mask_head="vq", occlusion=False)
    again = AmodalConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    assert isinstance(again.vqvae, VQVAEConfig) and again.anchor_sizes == cfg.anchor_sizes


@pytest.mark.parametrize("bad", [dict(mask_head="unet"), dict(anchor_sizes=((16,),)),
                                 dict(working_size=100), dict(trunk_stages=5)])
def test_config_rejects_bad_values(bad):
    with pytest.raises(ValueError):
        tiny_config(**bad)
    with pytest.raises(ValueError, match="unknown"):
        AmodalConfig.from_dict({"not_a_field": 1})


@pytest.mark.parametrize("mask_head,occlusion", COMBOS)
def test_every_switch_builds_trains_and_predicts(mask_head, occlusion, sample):
    img, target = sample
    model = _build(tiny_config(mask_head=mask_head, occlusion=occlusion))
    model.train()
    losses = model([img], [target])
    expected = set(LOSS_KEYS["always"]) | set(LOSS_KEYS[mask_head])
    if occlusion:
        expected |= set(LOSS_KEYS["occlusion"])
    assert set(losses) == expected
    assert all(torch.isfinite(v) and v.ndim == 0 for v in losses.values())
    sum(losses.values()).backward()

    model.eval()
    with torch.no_grad():
        out = model([img, img[:, :80, :64]])
    for det, (h, w) in zip(out, [(H, H), (80, 64)], strict=True):
        n = det["boxes"].shape[0]
        assert det["boxes"].shape == (n, 4) and det["scores"].shape == (n,)
        assert det["labels"].shape == (n,)
        assert det["masks"].shape == (n, 1, h, w)
        assert det["occlusion"].shape == (1, h, w)
        assert n <= model.config.box_detections_per_img
        if n:
            assert 0.0 <= float(det["masks"].min()) and float(det["masks"].max()) <= 1.0
        assert 0.0 <= float(det["occlusion"].min()) and float(det["occlusion"].max()) <= 1.0


def test_a_few_steps_reduce_the_total_loss(sample):
    img, target = sample
    model = _build(tiny_config())
    model.train()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=2e-3)
    totals = []
    for _ in range(12):
        loss = sum(model([img], [target]).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        totals.append(float(loss.detach()))
    assert all(math.isfinite(t) for t in totals)
    assert sum(totals[-3:]) / 3 < 0.8 * sum(totals[:3]) / 3, totals


def test_occlusion_features_reach_rpn_and_roi_heads(sample):
    img, target = sample
    cfg = tiny_config()
    model = _build(cfg)
    c = cfg.fpn_channels + cfg.occlusion_channels
    assert cfg.feature_channels == c
    seen: dict[str, int] = {}

    def grab(name):
        def hook(module, args):
            x = args[0]
            seen[name] = x[0].shape[1] if isinstance(x, list) else x.shape[1]
        return hook

    model.rpn.head.register_forward_pre_hook(grab("rpn"))
    model.roi_heads.box_head.register_forward_pre_hook(grab("box"))
    model.roi_heads.code_head.register_forward_pre_hook(grab("code"))
    model.roi_heads.refine_head.register_forward_pre_hook(grab("refine"))
    model.train()
    model([img], [target])
    assert seen["rpn"] == c and seen["code"] == c and seen["refine"] == c
    assert seen["box"] == c  # (N, C + C_occ, 7, 7) RoI features
    # without the branch the heads see the FPN width only
    plain = _build(tiny_config(occlusion=False))
    assert plain.rpn.head.conv[0][0].in_channels == cfg.fpn_channels
    assert plain.occlusion_branch is None


def test_zero_detections_give_empty_outputs(sample):
    img, _ = sample
    for mask_head in ("fcn", "vq_refine"):
        model = _build(tiny_config(mask_head=mask_head)).eval()
        model.roi_heads.score_thresh = 1.1  # nothing can pass
        with torch.no_grad():
            det = model([img])[0]
        assert det["boxes"].shape == (0, 4) and det["scores"].shape == (0,)
        assert det["masks"].shape == (0, 1, H, H)
        assert det["occlusion"].shape == (1, H, H)


def test_training_on_an_image_without_cells(sample):
    img, _ = sample
    model = _build(tiny_config()).train()
    empty = {"boxes": torch.zeros((0, 4)), "labels": torch.zeros(0, dtype=torch.int64),
             "masks": torch.zeros((0, H, H), dtype=torch.uint8)}
    losses = model([img], [empty])
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()


def test_vqvae_stays_frozen_and_mask_loss_reaches_code_head(sample):
    img, target = sample
    model = _build(tiny_config(mask_head="vq"))
    before = {k: v.clone() for k, v in model.vqvae.state_dict().items()}
    model.train()
    assert not model.vqvae.training
    assert not any(p.requires_grad for p in model.vqvae.parameters())
    losses = model([img], [target])
    losses["loss_mask_init"].backward()  # through the soft decode only
    assert model.roi_heads.code_head.fc.weight.grad.abs().sum() > 0
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    opt.step()
    after = model.vqvae.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_given_vqvae_must_match_config():
    vq = VQVAE(VQVAEConfig(hidden_channels=8, codebook_size=32, embed_dim=4))
    with pytest.raises(ValueError, match="config"):
        AmodalMaskRCNN(tiny_config(), vqvae=vq)
    model = AmodalMaskRCNN(tiny_config(vqvae=vq.config), vqvae=vq)
    assert model.vqvae is vq and vq.frozen


def test_grey_rgb_and_2d_inputs_are_accepted(sample):
    img, _ = sample
    model = _build(tiny_config()).eval()
    with torch.no_grad():
        a = model([img])[0]
        b = model([img.expand(3, -1, -1)])[0]
        c = model([img[0]])[0]
    assert torch.allclose(a["scores"], b["scores"]) and torch.allclose(a["scores"], c["scores"])
    with pytest.raises(ValueError, match="channels"):
        model([torch.zeros(2, H, H)])


def test_occlusion_targets_follow_resize_and_padding():
    masks = torch.stack([_ellipse(40, 36, 22, 17), _ellipse(52, 58, 20, 25)])
    occ = occlusion_target_from_masks(masks)
    assert occ.dtype == torch.float32 and occ.sum() == (masks.sum(0) >= 2).sum()
    target, valid = targets_to_padded([occ, occ[:50]], [(48, 48), (25, 48)], (64, 64))
    assert target.shape == valid.shape == (2, 1, 64, 64)
    assert valid[1].sum() == 25 * 48 and target[:, :, 48:].sum() == 0
    assert target.max() <= 1.0 and target[0].sum() > 0


def test_code_loss_is_low_for_the_right_code():
    idx = torch.randint(0, 8, (3, 4, 4))
    right = torch.nn.functional.one_hot(idx, 8).permute(0, 3, 1, 2).float() * 20.0
    assert code_bce_loss(right, idx) < 1e-3 < code_bce_loss(torch.zeros(3, 8, 4, 4), idx)


def test_default_model_fits_the_weights_budget():
    model = AmodalMaskRCNN(AmodalConfig())
    n = model.count_parameters()
    # bound: 8 M parameters = 16 MB in fp16, under the 25 MB bundled-weights limit
    assert n < 8_000_000, n
    assert n * 2 < 25e6
    # layer4 of the ResNet-18 trunk is not part of the model
    assert not any(k.startswith("backbone.body.layer4") for k in model.state_dict())


def test_rebuilt_from_card_config_and_state_dict_gives_the_same_output(sample):
    img, _ = sample
    model = _build(tiny_config(), seed=1).eval()
    card = json.loads(json.dumps(model.config.to_dict()))
    again = AmodalMaskRCNN(AmodalConfig.from_dict(card))
    again.load_state_dict(model.state_dict())
    again.eval()
    assert again.vqvae.frozen
    with torch.no_grad():
        a, b = model([img])[0], again([img])[0]
    assert torch.equal(a["boxes"], b["boxes"]) and torch.equal(a["masks"], b["masks"])
    assert torch.equal(a["occlusion"], b["occlusion"])
