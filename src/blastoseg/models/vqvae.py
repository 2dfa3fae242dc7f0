"""VQ-VAE shape prior on amodal mask crops (S1: Jang et al., "Learning vector quantized shape
code for amodal blastomere instance segmentation", section 3).

An amodal mask crop (the instance's box resized to S x S) is encoded by strided convolutions
into an M x M grid of D-dim latents ``z_e``; each latent is replaced by its nearest code of a
K-code codebook (``z_q``, straight-through gradient) and decoded back to S x S mask logits.
The trained model is frozen and serves the detector twice: ``encode_indices`` gives the
classification targets of its code classifier (eq. 3) and ``decode_indices`` /
``decode_code_probs`` turn predicted codes back into masks.

Loss (eq. 1 of Jang et al., after van den Oord et al. 2017)::

    L = -log p(x | z_q(x)) + || sg[z_e(x)] - e ||^2 + beta * || z_e(x) - sg[e] ||^2

with the reconstruction term as binary cross-entropy on logits and ``sg`` the stop-gradient.
Options: EMA codebook updates (the codebook term is then replaced by moving averages) and
dead-code restarts (codes unused for a window of steps are re-initialised from encoder
outputs of the batch).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from blastoseg.models.configs import VQVAEConfig

__all__ = ["MaskDecoder", "MaskEncoder", "VQVAE", "VQVAEOutput", "VectorQuantizer"]


class _ResBlock(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReLU(), nn.Conv2d(ch, ch, 3, padding=1),
            nn.ReLU(), nn.Conv2d(ch, ch, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class MaskEncoder(nn.Module):
    """(B, 1, S, S) mask -> (B, D, M, M) latents ``z_e``: one stride-2 conv per halving."""

    def __init__(self, cfg: VQVAEConfig) -> None:
        super().__init__()
        h = cfg.hidden_channels
        layers: list[nn.Module] = [nn.Conv2d(1, h // 2, 3, padding=1), nn.ReLU()]
        ch = h // 2
        for _ in range(cfg.n_down):
            layers += [nn.Conv2d(ch, h, 4, stride=2, padding=1), nn.ReLU()]
            ch = h
        layers += [nn.Conv2d(h, h, 3, padding=1)]
        layers += [_ResBlock(h) for _ in range(cfg.n_res_blocks)]
        layers += [nn.ReLU(), nn.Conv2d(h, cfg.embed_dim, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class MaskDecoder(nn.Module):
    """(B, D, M, M) quantised latents -> (B, 1, S, S) mask logits (mirror of the encoder)."""

    def __init__(self, cfg: VQVAEConfig) -> None:
        super().__init__()
        h = cfg.hidden_channels
        layers: list[nn.Module] = [nn.Conv2d(cfg.embed_dim, h, 3, padding=1)]
        layers += [_ResBlock(h) for _ in range(cfg.n_res_blocks)]
        layers += [nn.ReLU()]
        for i in range(cfg.n_down):
            out = h // 2 if i == cfg.n_down - 1 else h
            layers += [nn.ConvTranspose2d(h, out, 4, stride=2, padding=1), nn.ReLU()]
        layers += [nn.Conv2d(h // 2, 1, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


@dataclass
class QuantizerOutput:
    z_q: torch.Tensor             # (B, D, M, M) straight-through quantised latents
    indices: torch.Tensor         # (B, M, M) int64 code indices
    codebook_loss: torch.Tensor   # || sg[z_e] - e ||^2 (0 with EMA updates)
    commitment_loss: torch.Tensor  # || z_e - sg[e] ||^2 (not yet multiplied by beta)
    perplexity: torch.Tensor      # exp(entropy) of the batch's code histogram


class VectorQuantizer(nn.Module):
    """Nearest-code quantiser with a straight-through estimator.

    ``codebook_update="loss"`` learns the codebook (a parameter) through the codebook term of
    eq. 1; ``"ema"`` keeps it as a buffer updated with exponential moving averages of the
    encoder outputs assigned to each code. With ``dead_code_restart`` the quantiser counts
    code usage over ``restart_every`` training steps and moves every code chosen fewer than
    ``dead_code_threshold`` times onto a random encoder output of the current batch.
    Updates happen only in training mode and never after :meth:`freeze`.
    """

    def __init__(self, cfg: VQVAEConfig) -> None:
        super().__init__()
        k, d = cfg.codebook_size, cfg.embed_dim
        self.cfg = cfg
        init = torch.empty(k, d).uniform_(-1.0 / k, 1.0 / k)
        if cfg.codebook_update == "ema":
            self.register_buffer("embedding", init)
            self.register_buffer("ema_count", torch.ones(k))
            self.register_buffer("ema_sum", init.clone())
        else:
            self.embedding = nn.Parameter(init)
        # usage counted since the last dead-code check, and training steps in the window
        self.register_buffer("window_counts", torch.zeros(k))
        self.register_buffer("window_steps", torch.zeros((), dtype=torch.long))
        self.frozen = False

    @property
    def codebook(self) -> torch.Tensor:
        """(K, D) code vectors."""
        return self.embedding

    def nearest(self, z_e: torch.Tensor) -> torch.Tensor:
        """(B, D, M, M) latents -> (B, M, M) indices of the nearest codes (squared L2)."""
        b, d, m1, m2 = z_e.shape
        flat = z_e.permute(0, 2, 3, 1).reshape(-1, d)
        e = self.embedding
        dist = (flat.pow(2).sum(1, keepdim=True) - 2.0 * flat @ e.t()
                + e.pow(2).sum(1)[None, :])
        return dist.argmin(dim=1).view(b, m1, m2)

    def embed(self, indices: torch.Tensor) -> torch.Tensor:
        """(B, M, M) indices -> (B, D, M, M) code vectors."""
        return self.embedding[indices].permute(0, 3, 1, 2).contiguous()

    def embed_probs(self, probs: torch.Tensor) -> torch.Tensor:
        """(B, K, M, M) code probabilities -> (B, D, M, M) probability-weighted codes."""
        return torch.einsum("bkhw,kd->bdhw", probs, self.embedding.to(probs.dtype))

    @torch.no_grad()
    def _ema_update(self, flat: torch.Tensor, onehot: torch.Tensor) -> None:
        c = self.cfg
        self.ema_count.mul_(c.ema_decay).add_(onehot.sum(0), alpha=1 - c.ema_decay)
        self.ema_sum.mul_(c.ema_decay).add_(onehot.t() @ flat, alpha=1 - c.ema_decay)
        n = self.ema_count.sum()
        # Laplace smoothing keeps counts of unused codes away from zero
        count = (self.ema_count + c.ema_eps) / (n + c.codebook_size * c.ema_eps) * n
        self.embedding.copy_(self.ema_sum / count[:, None])

    @torch.no_grad()
    def restart_dead_codes(self, flat: torch.Tensor) -> int:
        """Re-initialise the codes whose window count is below the threshold.

        Each dead code becomes a random row of ``flat`` ((N, D) encoder outputs) plus a little
        noise; its window count is reset. Returns the number of codes restarted.
        """
        dead = torch.nonzero(self.window_counts < self.cfg.dead_code_threshold).flatten()
        if dead.numel() == 0 or flat.shape[0] == 0:
            return 0
        pick = torch.randint(0, flat.shape[0], (dead.numel(),), device=flat.device)
        scale = flat.std(dim=0, keepdim=True).clamp_min(1e-6) * 0.01
        new = flat[pick] + torch.randn_like(flat[pick]) * scale
        self.embedding.data[dead] = new.to(self.embedding.dtype)
        if self.cfg.codebook_update == "ema":
            self.ema_count[dead] = 1.0
            self.ema_sum[dead] = new
        return int(dead.numel())

    def forward(self, z_e: torch.Tensor) -> QuantizerOutput:
        k = self.cfg.codebook_size
        d = z_e.shape[1]
        flat = z_e.permute(0, 2, 3, 1).reshape(-1, d)
        with torch.no_grad():
            indices = self.nearest(z_e.detach())
            onehot = F.one_hot(indices.flatten(), k).to(flat.dtype)
        updating = self.training and not self.frozen
        if updating:
            with torch.no_grad():
                if self.cfg.codebook_update == "ema":
                    self._ema_update(flat.detach(), onehot)
                if self.cfg.dead_code_restart:
                    self.window_counts.add_(onehot.sum(0))
                    self.window_steps.add_(1)
                    if int(self.window_steps) >= self.cfg.restart_every:
                        self.restart_dead_codes(flat.detach())
                        self.window_counts.zero_()
                        self.window_steps.zero_()
        e = self.embed(indices)  # after any update, so no autograd tensor is modified later
        # eq. 1, second term: || sg[z_e] - e ||^2 moves codes towards the encoder outputs
        if self.cfg.codebook_update == "loss":
            codebook_loss = F.mse_loss(e, z_e.detach())
        else:
            codebook_loss = z_e.new_zeros(())
        # eq. 1, third term (without beta): || z_e - sg[e] ||^2 commits the encoder to codes
        commitment_loss = F.mse_loss(z_e, e.detach())
        # straight-through estimator: forward uses e, backward copies dL/dz_q onto z_e
        z_q = z_e + (e - z_e).detach()
        p = onehot.mean(0)
        perplexity = torch.exp(-(p * torch.log(p + 1e-10)).sum())
        return QuantizerOutput(z_q, indices, codebook_loss, commitment_loss, perplexity)


@dataclass
class VQVAEOutput:
    """Result of :meth:`VQVAE.forward`; ``loss`` is eq. 1 (what training minimises)."""

    logits: torch.Tensor           # (B, 1, S, S) reconstruction logits
    indices: torch.Tensor          # (B, M, M) codes
    z_e: torch.Tensor              # (B, D, M, M) encoder outputs
    loss: torch.Tensor             # recon + codebook + beta * commitment
    recon_loss: torch.Tensor       # BCE on logits, mean over pixels
    codebook_loss: torch.Tensor
    commitment_loss: torch.Tensor  # before multiplication by beta
    perplexity: torch.Tensor


class VQVAE(nn.Module):
    """VQ-VAE over S x S amodal mask crops with an M x M grid of K codes.

    Parameters
    ----------
    config
        :class:`~blastoseg.models.configs.VQVAEConfig`; defaults if None.

    Notes
    -----
    Masks are (B, 1, S, S) (or (B, S, S)) of bool or float in [0, 1]. After :meth:`freeze`
    the parameters take no gradient and the codebook never changes, even if a parent module
    is put into training mode; gradients still flow through the decoder to its inputs (the
    code probabilities of :meth:`decode_code_probs`).
    """

    def __init__(self, config: VQVAEConfig | None = None) -> None:
        super().__init__()
        self.config = config if config is not None else VQVAEConfig()
        self.encoder = MaskEncoder(self.config)
        self.quantizer = VectorQuantizer(self.config)
        self.decoder = MaskDecoder(self.config)

    # --- helpers ----------------------------------------------------------------------
    @property
    def codebook(self) -> torch.Tensor:
        """(K, D) code vectors."""
        return self.quantizer.codebook

    @property
    def frozen(self) -> bool:
        return self.quantizer.frozen

    def _as_masks(self, masks: torch.Tensor) -> torch.Tensor:
        s = self.config.mask_size
        if masks.ndim == 3:
            masks = masks[:, None]
        if masks.ndim != 4 or masks.shape[1] != 1 or tuple(masks.shape[-2:]) != (s, s):
            raise ValueError(f"masks must be (B, 1, {s}, {s}) or (B, {s}, {s}); "
                             f"got {tuple(masks.shape)}")
        p = next(self.parameters())
        return masks.to(device=p.device, dtype=p.dtype)

    def _check_grid(self, x: torch.Tensor, what: str, lead: int | None) -> None:
        m = self.config.grid_size
        ok = x.shape[-2:] == (m, m) and (lead is None or (x.ndim == 4 and x.shape[1] == lead))
        if not ok or x.ndim != (3 if lead is None else 4):
            dims = f"(B, {m}, {m})" if lead is None else f"(B, {lead}, {m}, {m})"
            raise ValueError(f"{what} must be {dims}; got {tuple(x.shape)}")

    # --- training ----------------------------------------------------------------------
    def forward(self, masks: torch.Tensor) -> VQVAEOutput:
        """Encode, quantise and decode ``masks``; return logits and the loss of eq. 1."""
        x = self._as_masks(masks)
        z_e = self.encoder(x)
        q = self.quantizer(z_e)
        logits = self.decoder(q.z_q)
        # eq. 1, first term: -log p(x | z_q(x)), a per-pixel Bernoulli likelihood
        recon = F.binary_cross_entropy_with_logits(logits, x)
        loss = recon + q.codebook_loss + self.config.beta * q.commitment_loss
        return VQVAEOutput(logits, q.indices, z_e, loss, recon, q.codebook_loss,
                           q.commitment_loss, q.perplexity)

    # --- the detector's interface --------------------------------------------------------
    def encode(self, masks: torch.Tensor) -> torch.Tensor:
        """(B, 1, S, S) masks -> (B, D, M, M) continuous encoder outputs ``z_e``."""
        return self.encoder(self._as_masks(masks))

    @torch.no_grad()
    def encode_indices(self, masks: torch.Tensor) -> torch.Tensor:
        """(B, 1, S, S) masks -> (B, M, M) int64 nearest-code indices (targets of eq. 3).

        Never updates the codebook, whatever the training mode.
        """
        return self.quantizer.nearest(self.encode(masks))

    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """(B, M, M) code indices -> (B, 1, S, S) mask logits."""
        self._check_grid(indices, "indices", None)
        return self.decoder(self.quantizer.embed(indices.long()))

    def decode_code_probs(self, probs: torch.Tensor) -> torch.Tensor:
        """(B, K, M, M) code probabilities -> (B, 1, S, S) mask logits.

        Soft decode: each latent is the probability-weighted mean of the codebook, so the
        result is differentiable in ``probs`` (one-hot probs give :meth:`decode_indices`).
        """
        self._check_grid(probs, "probs", self.config.codebook_size)
        return self.decoder(self.quantizer.embed_probs(probs))

    def freeze(self) -> VQVAE:
        """Stop all learning: no parameter gradients, eval mode, no codebook updates."""
        for p in self.parameters():
            p.requires_grad_(False)
        self.quantizer.frozen = True
        self.eval()
        return self

    def train(self, mode: bool = True) -> VQVAE:
        # a frozen shape prior stays in eval mode inside a detector that is being trained
        return super().train(mode and not self.frozen)
