"""SparseSEU-Net (S4, sections 4.5.1-4.5.4, 5.7.1, 5.7.3): config, shapes of every option
combination, normalised activation maps, initial priors, gradients, and a tiny model that
overfits two overlapping discs."""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch
import torch.nn.functional as F

from blastoseg.errors import BlastosegError, InvalidImageError
from blastoseg.models.seunet import SEUNetConfig
from blastoseg.models.sparse_seunet import (
    SparseSEUNet,
    SparseSEUNetConfig,
    SparseSEUNetConfigError,
    SparseSEUNetOutput,
    default_seunet_dict,
)
from blastoseg.train.sparse_losses import instance_scores, mask_iou, sparse_losses

TINY_SEUNET = {"heads": ["cytoplasm", "nuclei", "overlap"], "base_width": 4, "depth": 3,
               "se_reduction": 2, "norm": "group"}
TINY = {"seunet": TINY_SEUNET, "num_instances": 6, "branch_width": 8, "branch_convs": 2,
        "kernel_dim": 8}


def tiny(**kw) -> SparseSEUNet:
    return SparseSEUNet({**TINY, **kw})


def test_config_defaults_and_roundtrip():
    cfg = SparseSEUNetConfig()
    assert (cfg.num_instances, cfg.branch_width, cfg.branch_convs, cfg.kernel_dim,
            cfg.num_classes) == (100, 64, 4, 64, 1)
    assert (cfg.multi_level, cfg.overlap_conditioned, cfg.iou_head) == (False, False, False)
    assert cfg.feature_head == "cytoplasm"
    seu = cfg.seunet_config
    assert seu.heads == ("cytoplasm", "nuclei", "overlap")
    assert (seu.base_width, seu.depth) == (8, 4)
    d = json.loads(json.dumps(cfg.to_dict()))  # JSON-safe, as in a model card
    assert SparseSEUNetConfig.from_dict(d) == cfg
    assert SparseSEUNetConfig.from_dict(None) == cfg
    # a partial SE-U-Net dict keeps the SparseSEU-Net defaults for the other keys
    part = SparseSEUNetConfig.from_dict({"seunet": {"heads": ["cytoplasm"]}})
    assert part.seunet_config.base_width == 8 and part.seunet_config.heads == ("cytoplasm",)
    # an SEUNetConfig object is accepted
    obj = SparseSEUNetConfig(seunet=SEUNetConfig(heads=("cytoplasm", "overlap"), depth=3))
    assert obj.seunet["heads"] == ["cytoplasm", "overlap"] and obj.multiple == 8
    assert default_seunet_dict()["heads"] == ["cytoplasm", "nuclei", "overlap"]


@pytest.mark.parametrize("bad, words", [
    ({"overlap_conditioned": True, "seunet": {"heads": ["cytoplasm", "nuclei"]}},
     "overlap_conditioned needs an 'overlap' head"),
    ({"feature_head": "border"}, "feature_head 'border' is not one of"),
    ({"feature_head": "overlap", "overlap_conditioned": True}, "redundant"),
    ({"branch_stride": 3}, "power of two"),
    ({"branch_stride": 16}, "power of two up to 8"),
    ({"num_instances": 0}, "num_instances"),
    ({"kernel_dim": 2.5}, "kernel_dim"),
    ({"multi_level": "yes"}, "multi_level"),
    ({"class_prior": 1.0}, "class_prior"),
    ({"seunet": {"heads": ["membrane"]}}, "seunet: .*unknown head"),
    ({"seunet": ["cytoplasm"]}, "seunet must be a dict"),
])
def test_config_bad_values_raise_clear_errors(bad, words):
    with pytest.raises(SparseSEUNetConfigError, match=words) as info:
        SparseSEUNetConfig.from_dict(bad)
    assert isinstance(info.value, BlastosegError) and isinstance(info.value, ValueError)


def test_config_unknown_key_lists_known_keys():
    with pytest.raises(SparseSEUNetConfigError, match="unknown.*'num_instance'.*num_instances"):
        SparseSEUNetConfig.from_dict({"num_instance": 10})
    with pytest.raises(SparseSEUNetConfigError, match="needs a dict"):
        SparseSEUNetConfig.from_dict([1, 2])


@pytest.mark.parametrize("multi_level, overlap_conditioned, iou_head, stride",
                         list(itertools.product([False, True], [False, True], [False, True],
                                                [1, 2])))
def test_shapes_for_every_option_combination(multi_level, overlap_conditioned, iou_head,
                                             stride):
    torch.manual_seed(0)
    net = tiny(multi_level=multi_level, overlap_conditioned=overlap_conditioned,
               iou_head=iou_head, branch_stride=stride, num_classes=2)
    x = torch.rand(2, 1, 32, 48)
    out = net(x)
    assert isinstance(out, SparseSEUNetOutput)
    assert list(out.heads) == ["cytoplasm", "nuclei", "overlap"]
    assert all(v.shape == (2, 1, 32, 48) for v in out.heads.values())
    assert out.class_logits.shape == (2, 6, 2)
    assert out.mask_logits.shape == (2, 6, 32, 48) and out.mask_stride == 1
    assert out.activation_maps.shape == (2, 6, 32 // stride, 48 // stride)
    if iou_head:
        assert out.iou_logits.shape == (2, 6)
    else:
        assert out.iou_logits is None
    assert net.config.branch_in_channels() == net.instance_branch.convs[0].in_channels
    # the low-resolution masks, for cheap scoring at inference
    low = net(x, upsample_masks=False)
    assert low.mask_logits.shape == (2, 6, 32 // stride, 48 // stride)
    assert low.mask_stride == stride


def test_default_model_shapes_at_64px():
    net = SparseSEUNet().eval()
    with torch.no_grad():
        out = net(torch.rand(1, 1, 64, 64))
    assert out.class_logits.shape == (1, 100, 1)
    assert out.mask_logits.shape == (1, 100, 64, 64)
    assert out.activation_maps.shape == (1, 100, 16, 16)  # branch_stride 4


def test_activation_maps_are_normalised_to_sum_one():
    torch.manual_seed(1)
    net = tiny(multi_level=True)
    out = net(torch.rand(2, 1, 32, 32))
    sums = out.activation_maps.sum(dim=(-2, -1))
    assert torch.allclose(sums, torch.ones_like(sums), atol=1e-5)
    assert (out.activation_maps >= 0).all()


def test_instance_features_are_activation_weighted_means():
    """eq. 4.9: a = A' X^T, checked against an explicit per-instance weighted mean."""
    torch.manual_seed(2)
    net = tiny()
    branch = net.instance_branch
    x = torch.rand(1, net.config.branch_in_channels(), 8, 8)
    cls, kernels, _, act = branch(x)
    feats = branch.convs(x)[0].flatten(1)  # (D, hw)
    a0 = (act[0, 3].flatten()[None, :] * feats).sum(-1)
    assert torch.allclose(branch.kernel(a0), kernels[0, 3], atol=1e-5)
    assert torch.allclose(branch.cls(a0), cls[0, 3], atol=1e-5)


def test_initial_class_probability_is_the_prior():
    net = tiny(num_instances=20)
    with torch.no_grad():
        out = net(torch.rand(1, 1, 32, 32))
    p = torch.sigmoid(out.class_logits)
    assert torch.allclose(p, torch.full_like(p, 0.01), atol=5e-3)
    assert math.isclose(net.instance_branch.cls.bias[0].item(), math.log(0.01 / 0.99),
                        rel_tol=1e-6)


def test_bad_input_raises_invalid_image():
    net = tiny()
    with pytest.raises(InvalidImageError, match="multiples of 8"):
        net(torch.rand(1, 1, 30, 32))
    with pytest.raises(InvalidImageError, match="input channel"):
        net(torch.rand(1, 3, 32, 32))


def test_gradients_reach_every_parameter():
    torch.manual_seed(3)
    net = tiny(multi_level=True, overlap_conditioned=True, iou_head=True, branch_stride=2)
    x = torch.rand(2, 1, 32, 32)
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    disc = ((yy - 12) ** 2 + (xx - 14) ** 2 <= 36).float()
    targets = [{"labels": torch.zeros(1, dtype=torch.long), "masks": disc[None]},
               {"labels": torch.zeros(2, dtype=torch.long),
                "masks": torch.stack([disc, disc.roll(8, 1)])}]
    out = net(x)
    losses = sparse_losses(out, targets)
    heads = sum(F.binary_cross_entropy_with_logits(v, torch.zeros_like(v))
                for v in out.heads.values())  # the auxiliary SE-U-Net heads
    (losses["loss"] + heads).backward()
    params = dict(net.named_parameters())
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in params.values())
    # every parameter is in the graph; all but the SE blocks' excitation layers get a non-zero
    # gradient (an SE block with 2 hidden units may start with both ReLUs off, a property of
    # the tiny SE-U-Net, not of the sparse decoder)
    zero = [n for n, p in params.items() if p.grad.abs().sum() == 0 and ".se.fc" not in n]
    assert not zero, zero
    assert losses["matched"].item() == 3 and losses["iou"].item() > 0


def _two_discs(size: int = 64):
    yy, xx = torch.meshgrid(torch.arange(float(size)), torch.arange(float(size)),
                            indexing="ij")
    d1 = ((yy - 28) ** 2 + (xx - 24) ** 2 <= 14 ** 2).float()
    d2 = ((yy - 36) ** 2 + (xx - 42) ** 2 <= 13 ** 2).float()
    assert (d1 * d2).sum() > 20  # they overlap
    image = (0.1 + 0.4 * d1 + 0.4 * d2)[None, None]
    return image, d1, d2


def test_tiny_model_overfits_two_overlapping_discs():
    torch.manual_seed(0)
    image, d1, d2 = _two_discs()
    targets = [{"labels": torch.zeros(2, dtype=torch.long), "masks": torch.stack([d1, d2])}]
    net = SparseSEUNet({"seunet": {"heads": ["cytoplasm", "overlap"], "base_width": 4,
                                   "depth": 3, "se_reduction": 2, "norm": "group"},
                        "num_instances": 8, "branch_width": 16, "branch_convs": 2,
                        "kernel_dim": 16, "branch_stride": 2})
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    history = []
    for _ in range(150):
        losses = sparse_losses(net(image), targets)
        opt.zero_grad()
        losses["loss"].backward()
        opt.step()
        history.append(losses["loss"].item())
    assert history[-1] <= 0.5 * history[0], (history[0], history[-1])
    net.eval()
    with torch.no_grad():
        out = net(image)
    scores = instance_scores(out.class_logits, out.mask_logits)[0]
    best = scores.argsort(descending=True)[:2]
    masks = out.mask_logits[0, best]
    ious = torch.stack([mask_iou(masks, torch.stack([d, d])) for d in (d1, d2)])  # (disc, pred)
    # each disc is found by one of the two best-scoring predictions, and by a different one
    pair = (ious[0, 0], ious[1, 1]) if ious[0, 0] + ious[1, 1] >= ious[0, 1] + ious[1, 0] \
        else (ious[0, 1], ious[1, 0])
    assert min(pair) > 0.5, ious
