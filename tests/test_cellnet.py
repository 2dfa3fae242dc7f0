"""Cell-Net (S2 section III.B): the cascaded RIAP, the PUC decoder, the ablation switches."""

from __future__ import annotations

import pytest
import torch

from blastoseg.models.cellnet import (
    RIAP_RATES,
    CellNet,
    CellNetConfig,
    CellNetConfigError,
    ParallelAtrousPyramid,
    ResidualIncrementalAtrousPyramid,
)

TINY = {"working_size": 64, "pyramid_channels": 8, "puc_width": 1}


def _dilations(pyramid) -> list[int]:
    return [level[0].dilation[0] for level in pyramid.levels]


def test_riap_is_a_cascade_of_five_dilated_convs_with_rates_2_to_the_i():
    net = CellNet(CellNetConfig(**TINY))
    assert isinstance(net.pyramid, ResidualIncrementalAtrousPyramid)
    assert RIAP_RATES == (1, 2, 4, 8, 16)
    assert _dilations(net.pyramid) == [1, 2, 4, 8, 16]
    assert all(level[0].kernel_size == (3, 3) for level in net.pyramid.levels)
    # cascaded: the second level sees the first level's output, so changing the first level
    # changes what reaches the second (in a parallel pyramid it would not)
    pyr = net.pyramid.eval()
    x = torch.randn(1, net.config.encoder_channels, 8, 8)
    seen = []
    hook = pyr.levels[1].register_forward_hook(lambda m, i, o: seen.append(i[0].clone()))
    pyr(x)
    with torch.no_grad():
        pyr.levels[0][0].weight.mul_(2.0)
    pyr(x)
    hook.remove()
    assert not torch.allclose(seen[0], seen[1])


def test_the_parallel_pyramid_ablation_feeds_every_rate_the_same_input():
    net = CellNet(CellNetConfig(**TINY, riap=False))
    assert isinstance(net.pyramid, ParallelAtrousPyramid)
    assert _dilations(net.pyramid) == [1, 2, 4, 8, 16]
    pyr = net.pyramid.eval()
    x = torch.randn(1, net.config.encoder_channels, 8, 8)
    seen = []
    hook = pyr.levels[1].register_forward_hook(lambda m, i, o: seen.append(i[0].clone()))
    pyr(x)
    with torch.no_grad():
        pyr.levels[0][0].weight.mul_(2.0)
    pyr(x)
    hook.remove()
    assert torch.allclose(seen[0], seen[1])


def test_puc_upsamples_step_by_step_with_exponentially_more_kernels():
    net = CellNet(CellNetConfig(**TINY))
    steps = list(net.decoder.steps)
    assert len(steps) == 3  # stride 8 = three x2 sub-pixel steps
    assert [s.shuffle.upscale_factor for s in steps] == [2, 2, 2]
    assert [s.kernels for s in steps] == [4, 16, 64]
    one = CellNet(CellNetConfig(**TINY, puc=False))
    assert len(one.decoder.steps) == 1 and one.decoder.steps[0].shuffle.upscale_factor == 8


@pytest.mark.parametrize("switches", [{}, {"riap": False}, {"puc": False}])
def test_output_is_a_non_negative_map_of_the_input_size(switches):
    net = CellNet(CellNetConfig(**TINY, **switches)).eval()
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        y = net(x)
    assert y.shape == (2, 1, 64, 64)
    assert torch.all(y >= 0) and torch.isfinite(y).all()
    y.sum()


def test_bad_input_and_bad_config_are_clear_errors():
    net = CellNet(CellNetConfig(**TINY))
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        net(torch.zeros(1, 3, 64, 64))
    with pytest.raises(ValueError, match="multiples of 8"):
        net(torch.zeros(1, 1, 60, 60))
    with pytest.raises(CellNetConfigError, match="unknown CellNetConfig"):
        CellNetConfig.from_dict({"nope": 1})
    with pytest.raises(CellNetConfigError, match="encoder"):
        CellNetConfig(encoder="vgg")
    cfg = CellNetConfig(**TINY, riap=False)
    assert CellNetConfig.from_dict(cfg.to_dict()) == cfg
