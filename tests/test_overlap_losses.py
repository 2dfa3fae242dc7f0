"""SE-U-Net losses: hand-computed values on a 2x2 case, per-sample skipping of missing
targets (eq. 4.2), the probability-map weighted overlap losses (eq. 4.5, eq. 5.1)."""

from __future__ import annotations

import math

import pytest
import torch

from blastoseg.errors import BlastosegError
from blastoseg.train.overlap_losses import OVERLAP_LOSSES, overlap_head_loss, seunet_loss

LN2, LN43 = math.log(2), math.log(4 / 3)


@pytest.fixture
def case():
    """logits giving p = [[.5, .75], [.25, .5]], target [[1, 1], [0, 0]], P [[1, .5], [.1, 1]]."""
    ln3 = math.log(3)
    logits = torch.tensor([[[[0.0, ln3], [-ln3, 0.0]]]], dtype=torch.float64)
    target = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]]], dtype=torch.float64)
    prob = torch.tensor([[[[1.0, 0.5], [0.1, 1.0]]]], dtype=torch.float64)
    return logits, target, prob


def test_hand_computed_values(case):
    logits, target, prob = case
    # per-pixel BCE: [ln2, ln 4/3, ln 4/3, ln2]; p_t = [.5, .75, .75, .5]
    bce = [LN2, LN43, LN43, LN2]
    mod = [0.25, 0.0625, 0.0625, 0.25]  # (1 - p_t)^2
    alpha_t = [0.25, 0.25, 0.75, 0.75]
    pm = [1.0, 0.5, 0.1, 1.0]
    cases = {
        ("bce", None): sum(bce) / 4,
        ("focal", None): sum(m * b for m, b in zip(mod, bce, strict=True)) / 4,
        ("focal", 0.25): sum(a * m * b for a, m, b in zip(alpha_t, mod, bce, strict=True)) / 4,
        ("focal_reweighted", None): sum(w * m * b for w, m, b in zip(pm, mod, bce, strict=True))
        / 4,
        ("focal_reweighted", 0.25): sum(w * a * m * b for w, a, m, b
                                        in zip(pm, alpha_t, mod, bce, strict=True)) / 4,
        ("eq5_1", None): sum(w * b for w, b in zip(pm, bce, strict=True)) / 4,
    }
    for (kind, alpha), want in cases.items():
        got = overlap_head_loss(logits, target, prob, kind, gamma=2.0, alpha=alpha)
        assert got.item() == pytest.approx(want, rel=1e-12), (kind, alpha)
    # literal eq. 4.5 soft target y' = y (1 - P) = [[0, .5], [0, 0]]
    p = [0.5, 0.75, 0.25, 0.5]
    ys = [0.0, 0.5, 0.0, 0.0]
    want = 0.0
    for pi, yi in zip(p, ys, strict=True):
        b = -(yi * math.log(pi) + (1 - yi) * math.log(1 - pi))
        pt = pi * yi + (1 - pi) * (1 - yi)
        want += (1 - pt) ** 2 * b
    got = overlap_head_loss(logits, target, prob, "focal_soft_target", alpha=None)
    assert got.item() == pytest.approx(want / 4, rel=1e-12)


def test_reductions_and_unit_map(case):
    logits, target, _ = case
    ones = torch.ones_like(target)
    per_pixel = overlap_head_loss(logits, target, None, "bce", reduction="none")
    assert per_pixel.shape == logits.shape
    assert per_pixel[0, 0, 0, 0].item() == pytest.approx(LN2)
    assert overlap_head_loss(logits, target, None, "bce", reduction="sample").shape == (1,)
    # P = 1 everywhere (variant "none"): the weighted kinds equal their plain counterparts
    assert torch.allclose(overlap_head_loss(logits, target, ones, "focal_reweighted"),
                          overlap_head_loss(logits, target, None, "focal"))
    assert torch.allclose(overlap_head_loss(logits, target, ones, "eq5_1"),
                          overlap_head_loss(logits, target, None, "bce"))
    # (B, H, W) targets and maps are accepted
    assert torch.allclose(overlap_head_loss(logits, target[:, 0], ones[:, 0], "eq5_1"),
                          overlap_head_loss(logits, target, ones, "eq5_1"))


def test_probability_map_weights_the_gradient():
    logits = torch.zeros(1, 1, 1, 2, requires_grad=True)
    target = torch.ones(1, 1, 1, 2)
    prob = torch.tensor([[[[1.0, 0.1]]]])
    for kind in ("eq5_1", "focal_reweighted"):
        logits.grad = None
        overlap_head_loss(logits, target, prob, kind).backward()
        g = logits.grad.flatten()
        assert g[0] < 0 and g[1] < 0  # both pushed towards the positive target
        assert g[0].item() == pytest.approx(10 * g[1].item())  # border pixel counts 10x


def test_overlap_loss_errors(case):
    logits, target, prob = case
    with pytest.raises(BlastosegError, match="unknown overlap loss"):
        overlap_head_loss(logits, target, prob, "dice")
    with pytest.raises(BlastosegError, match="needs a probability map"):
        overlap_head_loss(logits, target, None, "eq5_1")
    with pytest.raises(BlastosegError, match="shape"):
        overlap_head_loss(logits, target[..., :1], None, "bce")
    with pytest.raises(BlastosegError, match="reduction"):
        overlap_head_loss(logits, target, None, "bce", reduction="sum")
    assert set(OVERLAP_LOSSES) >= {"bce", "focal", "focal_reweighted", "eq5_1"}


def _batch(seed=0, heads=("cytoplasm", "nuclei", "border", "background", "overlap")):
    g = torch.Generator().manual_seed(seed)
    logits = {h: torch.randn(2, 1, 4, 4, generator=g, requires_grad=True) for h in heads}
    targets = {h: (torch.rand(2, 1, 4, 4, generator=g) > 0.5).float() for h in heads}
    prob = 0.1 + 0.9 * torch.rand(2, 1, 4, 4, generator=g)
    return logits, targets, prob


def _bce(logit, target):
    return torch.nn.functional.binary_cross_entropy_with_logits(logit, target)


def test_eq_4_2_weighted_sum():
    logits, targets, prob = _batch()
    weights = {"cytoplasm": 1.0, "nuclei": 2.0, "border": 0.5, "background": 0.25,
               "overlap": 3.0}
    out = seunet_loss(logits, targets, None, prob, weights, overlap_loss="eq5_1")
    assert set(out) == {"loss", *logits}
    for h in ("cytoplasm", "nuclei", "border", "background"):
        assert out[h].item() == pytest.approx(_bce(logits[h], targets[h]).item(), rel=1e-6)
    want_overlap = (prob * torch.nn.functional.binary_cross_entropy_with_logits(
        logits["overlap"], targets["overlap"], reduction="none")).mean()
    assert out["overlap"].item() == pytest.approx(want_overlap.item(), rel=1e-6)
    total = sum(weights[h] * out[h] for h in logits)
    assert out["loss"].item() == pytest.approx(total.item(), rel=1e-6)
    out["loss"].backward()
    for h in logits:  # gradient reaches every head
        assert logits[h].grad is not None and logits[h].grad.abs().sum() > 0


def test_missing_targets_are_skipped_per_sample():
    logits, targets, prob = _batch(1)
    targets["nuclei"][1] = float("nan")  # sample 1 has no nucleus mask
    present = {"nuclei": torch.tensor([True, False])}
    out = seunet_loss(logits, targets, present, prob, None, overlap_loss="focal_reweighted")
    want = _bce(logits["nuclei"][:1], targets["nuclei"][:1])
    assert out["nuclei"].item() == pytest.approx(want.item(), rel=1e-6)
    out["loss"].backward()
    grad = logits["nuclei"].grad
    assert torch.isfinite(grad).all()
    assert grad[1].abs().sum() == 0 and grad[0].abs().sum() > 0
    # no sample has the target: the term is 0 and the total still backpropagates
    logits, targets, prob = _batch(2)
    out = seunet_loss(logits, targets, {"nuclei": [False, False]}, prob)
    assert out["nuclei"].item() == 0.0
    out["loss"].backward()
    assert logits["nuclei"].grad.abs().sum() == 0
    # a head without any target (not in targets) is skipped entirely
    logits, targets, prob = _batch(3)
    del targets["border"]
    out = seunet_loss(logits, targets, None, prob)
    assert out["border"].item() == 0.0
    partial = sum(out[h] for h in logits if h != "border")
    assert out["loss"].item() == pytest.approx(partial.item(), rel=1e-6)


def test_head_subsets_and_errors():
    logits, targets, prob = _batch(4, heads=("cytoplasm", "overlap"))
    out = seunet_loss(logits, targets, None, prob, {"overlap": 2.0}, overlap_loss="focal")
    assert set(out) == {"loss", "cytoplasm", "overlap"}
    with pytest.raises(BlastosegError, match="entries"):
        seunet_loss(logits, targets, {"cytoplasm": torch.tensor([True])}, prob)
    with pytest.raises(BlastosegError, match="needs a probability map"):
        seunet_loss(logits, targets, None, None, overlap_loss="eq5_1")
    with pytest.raises(BlastosegError, match="at least one head"):
        seunet_loss({}, targets)
