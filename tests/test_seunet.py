"""SE-U-Net (S4, sections 4.2-4.2.3): config, head subsets, SE blocks, decoupled decoders."""

from __future__ import annotations

import json
import math

import pytest
import torch

from blastoseg.errors import BlastosegError, InvalidImageError
from blastoseg.models.seunet import (
    HEADS,
    SEBlock,
    SEUNet,
    SEUNetConfig,
    SEUNetConfigError,
    SEUNetOutput,
)

TINY = {"base_width": 4, "depth": 2, "se_reduction": 2, "decoder_width": 1.0}


def test_config_defaults_and_roundtrip():
    cfg = SEUNetConfig()
    assert (cfg.in_channels, cfg.base_width, cfg.depth, cfg.se_reduction) == (1, 16, 4, 8)
    assert cfg.heads == HEADS == ("cytoplasm", "nuclei", "border", "background", "overlap")
    assert cfg.multiple == 16
    d = json.loads(json.dumps(cfg.to_dict()))  # JSON-safe, as in a model card
    assert d["heads"] == list(HEADS)
    again = SEUNetConfig.from_dict(d)
    assert again == cfg
    sub = SEUNetConfig.from_dict({"heads": ["overlap", "cytoplasm"], **TINY})
    assert sub.heads == ("overlap", "cytoplasm")  # order kept
    assert SEUNetConfig.from_dict(None) == SEUNetConfig()


@pytest.mark.parametrize("bad, words", [
    ({"heads": ["cytoplasm", "membrane"]}, "unknown head"),
    ({"heads": []}, "at least one"),
    ({"heads": ["nuclei", "nuclei"]}, "repeated"),
    ({"depth": 0}, "depth"),
    ({"base_width": 1.5}, "base_width"),
    ({"decoder_width": -1}, "decoder_width"),
    ({"norm": "layer"}, "norm"),
    ({"overlap_prior": 1.0}, "overlap_prior"),
    ({"in_channels": True}, "in_channels"),
])
def test_config_bad_values_raise_clear_errors(bad, words):
    with pytest.raises(SEUNetConfigError, match=words) as info:
        SEUNetConfig.from_dict(bad)
    assert isinstance(info.value, BlastosegError) and isinstance(info.value, ValueError)


def test_config_unknown_key_lists_known_keys():
    with pytest.raises(SEUNetConfigError, match="unknown SEUNetConfig key.*'widht'.*base_width"):
        SEUNetConfig.from_dict({"widht": 8})
    with pytest.raises(SEUNetConfigError, match="needs a dict"):
        SEUNetConfig.from_dict(["heads"])


@pytest.mark.parametrize("heads", [("cytoplasm",), ("cytoplasm", "nuclei"),
                                   ("overlap", "border", "cytoplasm"), HEADS])
def test_forward_shapes_per_head_subset(heads):
    torch.manual_seed(0)
    net = SEUNet(SEUNetConfig(heads=heads, **TINY))
    x = torch.rand(2, 1, 32, 48)
    out = net(x)
    assert isinstance(out, SEUNetOutput)
    assert tuple(out.logits) == heads == net.heads
    assert tuple(out.features) == heads
    for h in heads:
        assert out.logits[h].shape == (2, 1, 32, 48)
        feats = out.features[h]
        assert len(feats) == 2  # depth decoder levels, coarse -> fine
        assert [tuple(f.shape[-2:]) for f in feats] == [(16, 24), (32, 48)]
        assert [f.shape[1] for f in feats] == SEUNetConfig(**TINY).decoder_channels()
    probs = {k: v.detach() for k, v in out.probabilities().items()}
    assert all(0 <= float(p.min()) and float(p.max()) <= 1 for p in probs.values())
    # only the configured decoders exist
    assert set(net.decoders) == set(heads)


def test_default_config_forward_and_decoder_width():
    cfg = SEUNetConfig()
    assert cfg.encoder_channels() == [16, 32, 64, 128, 256]
    assert cfg.decoder_channels() == [64, 32, 16, 8]
    net = SEUNet(cfg).eval()
    with torch.inference_mode():
        out = net(torch.rand(1, 1, 64, 64))
    assert [f.shape[1] for f in out.features["overlap"]] == [64, 32, 16, 8]
    assert out.logits["border"].shape == (1, 1, 64, 64)
    narrow = SEUNet(SEUNetConfig(decoder_width=0.25))
    wide = SEUNet(SEUNetConfig(decoder_width=1.0))
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(narrow) < count(net) < count(wide)


def test_se_block_reweights_channels():
    torch.manual_seed(1)
    se = SEBlock(8, reduction=2)
    with torch.no_grad():
        se.fc1.weight.normal_(0, 1.0)
        se.fc2.weight.normal_(0, 1.0)
    x = torch.rand(2, 8, 10, 12) + 0.1
    with torch.no_grad():
        y = se(x)
        gates = se.gates(x)
    ratio = y / x
    assert gates.shape == (2, 8, 1, 1)
    assert float(gates.min()) > 0 and float(gates.max()) < 1
    # one weight per channel, the same over the whole map ...
    torch.testing.assert_close(ratio, gates.expand_as(ratio))
    # ... that differs between channels and depends on the input (excitation is adaptive)
    assert float(gates[0].std()) > 1e-3
    assert not torch.allclose(gates[0], gates[1])
    assert not torch.allclose(y, x)


def test_se_blocks_in_encoder_and_every_decoder():
    net = SEUNet(SEUNetConfig(heads=("cytoplasm", "overlap"), **TINY))
    ses = [n for n, m in net.named_modules() if isinstance(m, SEBlock)]
    assert sum(n.startswith("encoder.") for n in ses) == 3  # depth + 1 levels
    assert sum(n.startswith("decoders.cytoplasm.") for n in ses) == 2
    assert sum(n.startswith("decoders.overlap.") for n in ses) == 2


def test_decoders_are_decoupled_encoder_is_shared():
    torch.manual_seed(0)
    net = SEUNet(SEUNetConfig(heads=("cytoplasm", "nuclei", "overlap"), **TINY))
    out = net(torch.rand(2, 1, 16, 16))
    out.logits["nuclei"].sum().backward()
    grads = {n: p.grad for n, p in net.named_parameters()}
    assert all(g is None for n, g in grads.items() if n.startswith("decoders.cytoplasm."))
    assert all(g is None for n, g in grads.items() if n.startswith("decoders.overlap."))
    assert any(g is not None and float(g.abs().sum()) > 0
               for n, g in grads.items() if n.startswith("decoders.nuclei."))
    assert any(g is not None and float(g.abs().sum()) > 0
               for n, g in grads.items() if n.startswith("encoder."))


def test_overlap_head_starts_at_its_prior():
    net = SEUNet(SEUNetConfig(overlap_prior=0.05, **TINY))
    bias = float(net.decoders["overlap"].out.bias.detach())
    assert bias == pytest.approx(math.log(0.05 / 0.95))
    assert float(net.decoders["cytoplasm"].out.bias.detach()) == 0.0


@pytest.mark.parametrize("norm", ["batch", "group", "none"])
def test_norms_train_step(norm):
    torch.manual_seed(0)
    net = SEUNet(SEUNetConfig(heads=("cytoplasm",), norm=norm, **TINY))
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    x = torch.rand(2, 1, 16, 16)
    target = (x > 0.5).float()
    loss0 = None
    for _ in range(5):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            net(x).logits["cytoplasm"], target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        loss0 = loss.item() if loss0 is None else loss0
    assert math.isfinite(loss.item()) and loss.item() < loss0


def test_bad_input_raises_clear_errors():
    net = SEUNet(SEUNetConfig(**TINY))
    with pytest.raises(InvalidImageError, match="multiples of 4.*30 x 32.*32 x 32"):
        net(torch.rand(1, 1, 30, 32))
    with pytest.raises(InvalidImageError, match="1 input channel"):
        net(torch.rand(1, 3, 32, 32))
    with pytest.raises(InvalidImageError, match=r"\(B, 1, H, W\)"):
        net(torch.rand(32, 32))
    with pytest.raises(InvalidImageError, match="floating-point"):
        net(torch.zeros(1, 1, 32, 32, dtype=torch.uint8))
    # dict config accepted, bad dict config refused
    assert SEUNet(dict(TINY)).config.depth == 2
    with pytest.raises(SEUNetConfigError):
        SEUNet({"heads": ["cell"]})
