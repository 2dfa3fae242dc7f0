"""VQ-VAE shape prior (S1) and its amodal-crop dataset."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from blastoseg.models import VQVAE, VQVAEConfig
from blastoseg.train.shape_prior_data import (
    CropAugment,
    MaskCropDataset,
    crop_mask,
    random_blob_masks,
)

S, M = 28, 7


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(n)


def _blobs(n: int, seed: int = 0) -> torch.Tensor:
    return MaskCropDataset.from_masks(random_blob_masks(n, seed, canvas=48)).tensor()


def _iou(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    p, t = logits > 0, x > 0.5
    inter = (p & t).flatten(1).sum(1).float()
    return inter / (p | t).flatten(1).sum(1).float().clamp_min(1)


def test_shapes_of_encode_and_decode():
    cfg = VQVAEConfig(codebook_size=32)
    model = VQVAE(cfg)
    assert sum(p.numel() for p in model.parameters()) < 300_000
    x = _blobs(5)
    assert x.shape == (5, 1, S, S)
    idx = model.encode_indices(x)
    assert idx.shape == (5, M, M) and idx.dtype == torch.int64
    assert int(idx.min()) >= 0 and int(idx.max()) < 32
    assert model.encode_indices(x[:, 0]).equal(idx)  # (B, S, S) is accepted too
    assert model.decode_indices(idx).shape == (5, 1, S, S)
    probs = torch.softmax(torch.randn(5, 32, M, M), dim=1)
    assert model.decode_code_probs(probs).shape == (5, 1, S, S)
    out = model(x)
    assert out.logits.shape == (5, 1, S, S) and out.indices.shape == (5, M, M)
    with pytest.raises(ValueError, match="masks must be"):
        model.encode_indices(torch.zeros(2, 1, 32, 32))
    with pytest.raises(ValueError, match="probs must be"):
        model.decode_code_probs(torch.zeros(2, 31, M, M))


def test_other_sizes_and_bad_config():
    model = VQVAE(VQVAEConfig(mask_size=32, grid_size=8, codebook_size=16))
    assert model.encode_indices(torch.zeros(1, 1, 32, 32)).shape == (1, 8, 8)
    with pytest.raises(ValueError, match="power of two"):
        VQVAEConfig(mask_size=28, grid_size=5)
    with pytest.raises(ValueError, match="codebook_update"):
        VQVAEConfig(codebook_update="kmeans")
    cfg = VQVAEConfig(codebook_size=8)
    assert VQVAEConfig.from_dict(cfg.to_dict()) == cfg


def test_straight_through_gradient_reaches_the_encoder():
    model = VQVAE(VQVAEConfig(codebook_size=16, dead_code_restart=False))
    out = model(_blobs(4))
    out.recon_loss.backward()  # the reconstruction term alone reaches z_e only via the STE
    g = model.encoder.net[0].weight.grad
    assert g is not None and g.abs().sum() > 0
    assert model.quantizer.embedding.grad is None  # recon does not train the codebook


@pytest.mark.parametrize("update", ["loss", "ema"])
def test_loss_terms_of_eq1(update):
    cfg = VQVAEConfig(codebook_size=8, embed_dim=4, beta=0.25, codebook_update=update,
                      dead_code_restart=False)
    model = VQVAE(cfg)
    x = _blobs(2)
    z_e = model.encode(x).detach()
    # commitment = mean squared distance of each latent to its nearest code
    vecs = z_e.permute(0, 2, 3, 1).reshape(-1, 4)[:8].clone()
    model.quantizer.embedding.data.copy_(vecs)
    model.eval()
    out = model(x)
    z1 = z_e.permute(0, 2, 3, 1).reshape(-1, 4)
    d = torch.cdist(z1, vecs).min(1).values.pow(2).sum() / z1.numel()
    assert out.commitment_loss.item() == pytest.approx(d.item(), rel=1e-4, abs=1e-7)
    # a hand-made case: every code at the origin, so e = 0 and both terms = mean(z_e^2)
    model.quantizer.embedding.data.zero_()
    out = model(x)
    expected = z_e.pow(2).mean()
    assert out.commitment_loss.item() == pytest.approx(expected.item(), rel=1e-5)
    if update == "loss":
        assert out.codebook_loss.item() == pytest.approx(expected.item(), rel=1e-5)
    else:
        assert out.codebook_loss.item() == 0.0
    recon = F.binary_cross_entropy_with_logits(out.logits, x)
    total = recon + out.codebook_loss + 0.25 * out.commitment_loss
    assert out.recon_loss.item() == pytest.approx(recon.item(), rel=1e-6)
    assert out.loss.item() == pytest.approx(total.item(), rel=1e-6)


def test_zero_vq_terms_when_codes_equal_latents():
    cfg = VQVAEConfig(codebook_size=49, embed_dim=4, dead_code_restart=False)
    model = VQVAE(cfg).eval()
    x = _blobs(1)
    z_e = model.encode(x).detach()
    model.quantizer.embedding.data.copy_(z_e.permute(0, 2, 3, 1).reshape(-1, 4))
    out = model(x)
    assert out.codebook_loss.item() == pytest.approx(0.0, abs=1e-10)
    assert out.commitment_loss.item() == pytest.approx(0.0, abs=1e-10)


def test_one_hot_probs_decode_like_indices():
    model = VQVAE(VQVAEConfig(codebook_size=16)).freeze()
    idx = torch.randint(0, 16, (3, M, M))
    probs = F.one_hot(idx, 16).permute(0, 3, 1, 2).float()
    torch.testing.assert_close(model.decode_code_probs(probs), model.decode_indices(idx),
                               rtol=1e-5, atol=1e-5)
    # soft decoding is differentiable in the probabilities, even when frozen
    logits = torch.randn(1, 16, M, M, requires_grad=True)
    model.decode_code_probs(logits.softmax(1)).sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_freeze_stops_all_updates():
    model = VQVAE(VQVAEConfig(codebook_size=8, codebook_update="ema", restart_every=1))
    model.freeze()
    before = model.codebook.clone()
    parent = torch.nn.Sequential(model)
    parent.train()
    assert not model.training and all(not p.requires_grad for p in model.parameters())
    model(_blobs(3))
    assert torch.equal(model.codebook, before)


def test_dead_code_restart_revives_unused_codes():
    cfg = VQVAEConfig(codebook_size=16, embed_dim=4, dead_code_restart=True, restart_every=3)
    model = VQVAE(cfg).train()
    x = _blobs(8)
    with torch.no_grad():
        model.quantizer.embedding.data[:] = 100.0  # far from every latent ...
        model.quantizer.embedding.data[0] = 0.0    # ... except code 0
    for _ in range(2):
        assert model(x).indices.unique().tolist() == [0]
    model(x)  # third step closes the window: 15 dead codes move onto encoder outputs
    assert model.quantizer.embedding.data.abs().max() < 100.0
    used = model.encode_indices(x).unique()
    assert len(used) > 4


@pytest.mark.parametrize("update", ["loss", "ema"])
def test_short_training_beats_the_mean_mask(update):
    cfg = VQVAEConfig(codebook_size=32, hidden_channels=16, codebook_update=update,
                      dead_code_restart=True, restart_every=20)
    train = MaskCropDataset.from_masks(random_blob_masks(200, 1, canvas=48),
                                       augment=CropAugment())
    test = _blobs(64, seed=2)
    baseline = _iou(torch.logit(train.tensor().mean(0, keepdim=True).clamp(1e-3, 1 - 1e-3))
                    .expand_as(test), test).mean().item()
    model = VQVAE(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    x_all = train.tensor()
    for _ in range(120):
        x = x_all[torch.randint(0, len(x_all), (32,))]
        loss = model(x).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.freeze()
    got = _iou(model.decode_indices(model.encode_indices(test)), test).mean().item()
    print(f"{update}: baseline {baseline:.3f} trained {got:.3f}")
    assert got > 0.85 and got > baseline + 0.05


def test_dataset_crops_are_binary_square_and_non_empty():
    masks = np.zeros((3, 60, 80), dtype=bool)
    masks[0, 5:25, 10:50] = True
    masks[1, 30:59, 40:79] = True
    masks[2, 0:2, 0:2] = True  # a speck below min_area: skipped
    for aug in (None, CropAugment()):
        ds = MaskCropDataset.from_masks([masks], size=S, augment=aug)
        assert len(ds) == 2
        for i in range(len(ds)):
            c = ds[i]
            assert c.shape == (1, S, S) and c.dtype == torch.float32
            assert set(c.unique().tolist()) <= {0.0, 1.0}
            assert c.sum() > 0.5 * S * S  # a rectangle fills (most of) its box
    exact = MaskCropDataset.from_masks([masks], size=S)[0]
    assert exact.all()  # without augmentation a filled box crop is all foreground
    # an off-centre box: outside of the mask is background
    half = crop_mask(masks[0], (10, 5, 90, 25), S)
    assert half[:, : S // 2].all() and not half[:, S // 2 + 1:].any()


def test_dataset_from_folder_and_synthetic(tmp_path):
    from blastoseg.instances import FrameInstances
    from blastoseg.io.dataset import Sample, write_dataset

    masks = np.stack(random_blob_masks(3, 5, canvas=64))
    write_dataset(tmp_path / "ds", [Sample(np.zeros((64, 64), np.uint8),
                                           FrameInstances(masks))])
    ds = MaskCropDataset.from_dataset(tmp_path / "ds", augment=CropAugment())
    assert len(ds) == 3 and ds.tensor().shape == (3, 1, S, S)
    sd = MaskCropDataset.from_synthetic(1, seed=3, n_cells=(2, 2))
    assert len(sd) == 2
    x = sd.tensor()
    assert set(x.unique().tolist()) == {0.0, 1.0} and (x.flatten(1).sum(1) > 0).all()
