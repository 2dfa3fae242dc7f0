"""pix2pix (Isola et al. 2017) for the phase -> brightfield translation of S4 (thesis section 4.4.2).

Copy-pasted synthetic scenes exist only in the phase domain (section 4.4.1); a conditional GAN
trained on renderer pairs (phase image -> two defocused brightfield focal planes) turns them
into brightfield images. The architecture follows pix2pix:

* **Generator**: a U-Net, i.e. an encoder-decoder with skip connections between mirrored
  levels. Encoder blocks ``Ck`` = Conv(4x4, stride 2) - Norm - LeakyReLU(0.2) (no norm in the
  first block, none at the innermost 1 x 1-ish bottleneck, as in the reference code); decoder
  blocks = ReLU - ConvTranspose(4x4, stride 2) - Norm - Dropout(0.5) for the first
  ``n_dropout`` (innermost) decoder blocks; output Tanh, so targets live in [-1, 1]. pix2pix
  gives the generator no noise input: the only stochasticity is this dropout, kept ON at test
  time ("we apply dropout at test time", section 3.1 of Isola et al.; the thesis keeps it for
  variety of the synthetic brightfield images): :attr:`Pix2PixGenerator.stochastic`.
* **Discriminator**: the 70 x 70 PatchGAN ``C64-C128-C256-C512`` (4x4 convolutions, stride 2
  for the first three, stride 1 for C512 and for the final 1-channel convolution; no norm on
  C64; LeakyReLU 0.2). It sees the input concatenated with a real or generated output
  (conditional GAN), and each logit of its output map judges one 70 x 70 patch (receptive
  field: 70 px for ``disc_layers=3``, see :meth:`Pix2PixDiscriminator.receptive_field`).

Interpretations and our sizes (CPU-friendly defaults, written down here):

* Widths are ``gen_width`` / ``disc_width`` (16; pix2pix uses 64) times 1, 2, 4, 8, capped at
  8x. ``gen_depth`` (default 7) stride-2 levels: inputs must be a multiple of
  ``2 ** gen_depth`` = 128, so 128 px training crops reach a 1 x 1 bottleneck exactly like the
  256 px / 8 levels of pix2pix, and 256 px crops a 2 x 2 one. The translator pads any image.
* Normalisation: ``"instance"`` by default. pix2pix trains with batch size 1 and uses batch
  statistics at test time, which is instance normalisation; ``"batch"`` (running statistics
  in eval mode) and ``"none"`` are available.
* Seeded dropout: :meth:`Pix2PixGenerator.forward` takes an optional ``torch.Generator`` so a
  caller (the translator) can make stochastic outputs reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from blastoseg.models.configs import CardConfig

__all__ = ["Pix2Pix", "Pix2PixConfig", "Pix2PixDiscriminator", "Pix2PixGenerator",
           "Pix2PixLosses"]

_NORMS = ("instance", "batch", "none")


@dataclass
class Pix2PixConfig(CardConfig):
    """Architecture of the pix2pix phase -> brightfield translator.

    Attributes
    ----------
    in_channels
        Input channels (1: the phase image).
    out_channels
        Output channels (2: the two defocused brightfield focal planes).
    gen_width
        Channels of the generator's first encoder block (pix2pix: 64).
    gen_depth
        Number of stride-2 encoder levels (pix2pix: 8 for 256 px); inputs must be multiples of
        ``2 ** gen_depth`` (:attr:`multiple`).
    max_width_factor
        Channel widths double per level up to ``max_width_factor`` times the first width.
    dropout
        Dropout probability in the first ``n_dropout`` decoder blocks (pix2pix: 0.5, 3).
    n_dropout
        How many decoder blocks (innermost first) have dropout.
    disc_width
        Channels of the discriminator's first block (pix2pix: 64, the "C64").
    disc_layers
        Stride-2 blocks of the PatchGAN (3 gives C64-C128-C256 then the stride-1 C512 and the
        output convolution: the 70 x 70 PatchGAN).
    norm
        ``"instance"``, ``"batch"`` or ``"none"`` (both networks).
    """

    in_channels: int = 1
    out_channels: int = 2
    gen_width: int = 16
    gen_depth: int = 7
    max_width_factor: int = 8
    dropout: float = 0.5
    n_dropout: int = 3
    disc_width: int = 16
    disc_layers: int = 3
    norm: str = "instance"

    def __post_init__(self) -> None:
        for name in ("in_channels", "out_channels", "gen_width", "gen_depth",
                     "max_width_factor", "disc_width", "disc_layers"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"Pix2PixConfig.{name} must be a positive integer, "
                                 f"got {value!r}")
        if self.gen_depth < 2:
            raise ValueError(f"Pix2PixConfig.gen_depth must be >= 2, got {self.gen_depth}")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ValueError(f"Pix2PixConfig.dropout must be in [0, 1), got {self.dropout}")
        if not isinstance(self.n_dropout, int) or not 0 <= self.n_dropout <= self.gen_depth - 1:
            raise ValueError(f"Pix2PixConfig.n_dropout must be in [0, gen_depth - 1 = "
                             f"{self.gen_depth - 1}], got {self.n_dropout!r}")
        if self.norm not in _NORMS:
            raise ValueError(f"Pix2PixConfig.norm must be one of {_NORMS}, got {self.norm!r}")

    @property
    def multiple(self) -> int:
        """Image sides the generator accepts are multiples of this (``2 ** gen_depth``)."""
        return 2 ** self.gen_depth


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    return nn.Identity()


def _dropout(x: torch.Tensor, p: float, active: bool,
             generator: torch.Generator | None) -> torch.Tensor:
    """Inverted dropout; with ``generator`` the mask is drawn from it (reproducible)."""
    if not active or p <= 0.0:
        return x
    if generator is None:
        return F.dropout(x, p, training=True)
    keep = torch.rand(x.shape, generator=generator, device=generator.device) >= p
    return x * keep.to(device=x.device, dtype=x.dtype) / (1.0 - p)


class Pix2PixGenerator(nn.Module):
    """U-Net generator: ``(B, in, H, W)`` -> ``(B, out, H, W)`` in [-1, 1] (Tanh).

    ``H`` and ``W`` must be multiples of ``config.multiple``. Dropout is active in training
    mode and, when :attr:`stochastic` is True, in eval mode too (pix2pix's test-time dropout).
    """

    def __init__(self, config: Pix2PixConfig) -> None:
        super().__init__()
        self.config = c = config
        #: keep dropout on in eval mode (varied outputs for the same input)
        self.stochastic = False
        widths = [c.gen_width * min(2 ** i, c.max_width_factor) for i in range(c.gen_depth)]
        self.widths = widths
        last = c.gen_depth - 1
        self.down = nn.ModuleList()
        prev = c.in_channels
        for i, w in enumerate(widths):
            # no norm on the first block (C64) nor at the innermost bottleneck (pix2pix code)
            norm = "none" if i in (0, last) else c.norm
            self.down.append(nn.Sequential(
                nn.Conv2d(prev, w, 4, stride=2, padding=1, bias=norm != "batch"),
                _norm(norm, w),
            ))
            prev = w
        # decoder level j (innermost first) maps to the resolution of encoder level last-1-j
        self.up = nn.ModuleList()
        for j in range(last):
            enc = last - 1 - j  # the skip it is concatenated with
            c_in = widths[last] if j == 0 else 2 * widths[enc + 1]
            self.up.append(nn.Sequential(
                nn.ConvTranspose2d(c_in, widths[enc], 4, stride=2, padding=1,
                                   bias=c.norm != "batch"),
                _norm(c.norm, widths[enc]),
            ))
        self.outermost = nn.ConvTranspose2d(2 * widths[0], c.out_channels, 4, stride=2,
                                            padding=1)

    def forward(self, x: torch.Tensor, *, dropout_generator: torch.Generator | None = None
                ) -> torch.Tensor:
        m = self.config.multiple
        if x.dim() != 4 or x.shape[1] != self.config.in_channels:
            raise ValueError(f"expected (B, {self.config.in_channels}, H, W), got "
                             f"{tuple(x.shape)}")
        if x.shape[-2] % m or x.shape[-1] % m:
            raise ValueError(f"H and W must be multiples of {m} (2 ** gen_depth), got "
                             f"{tuple(x.shape[-2:])}; pad the image first")
        skips = []
        h = x
        for i, block in enumerate(self.down):
            if i > 0:
                h = F.leaky_relu(h, 0.2)
            h = block(h)
            skips.append(h)
        active = self.training or self.stochastic
        p = float(self.config.dropout)
        for j, block in enumerate(self.up):
            h = block(F.relu(h))
            if j < self.config.n_dropout:
                h = _dropout(h, p, active, dropout_generator)
            h = torch.cat([h, skips[len(skips) - 2 - j]], dim=1)
        return torch.tanh(self.outermost(F.relu(h)))


class Pix2PixDiscriminator(nn.Module):
    """Conditional PatchGAN: ``(input (B, in, H, W), output (B, out, H, W))`` -> logits
    ``(B, 1, h, w)``, one per overlapping patch of :meth:`receptive_field` pixels."""

    def __init__(self, config: Pix2PixConfig) -> None:
        super().__init__()
        self.config = c = config
        layers: list[nn.Module] = []
        prev = c.in_channels + c.out_channels
        for i in range(c.disc_layers + 1):  # C64, C128, C256 (stride 2), then C512 (stride 1)
            w = c.disc_width * min(2 ** i, c.max_width_factor)
            stride = 2 if i < c.disc_layers else 1
            norm = "none" if i == 0 else c.norm
            layers += [nn.Conv2d(prev, w, 4, stride=stride, padding=1, bias=norm != "batch"),
                       _norm(norm, w), nn.LeakyReLU(0.2)]
            prev = w
        layers.append(nn.Conv2d(prev, 1, 4, stride=1, padding=1))
        self.net = nn.Sequential(*layers)

    def receptive_field(self) -> int:
        """Side of the input patch one output logit sees (70 for ``disc_layers=3``)."""
        rf = 4  # the output convolution
        rf += 3  # the stride-1 C512
        for _ in range(self.config.disc_layers):
            rf = 2 * rf + 2  # a 4x4 stride-2 convolution: (rf - 1) * 2 + 4
        return rf

    def forward(self, condition: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([condition, output], dim=1))


@dataclass
class Pix2PixLosses:
    """The terms of one pix2pix step (all scalars)."""

    loss: torch.Tensor  # what is back-propagated: gen_adv + l1_weight * l1 + disc
    gen_adv: torch.Tensor  # generator's adversarial term (D with detached parameters)
    l1: torch.Tensor  # mean |G(x) - y|
    disc: torch.Tensor  # discriminator loss, halved as in pix2pix
    d_real: torch.Tensor  # mean sigmoid(D(x, y)) (diagnostic)
    d_fake: torch.Tensor  # mean sigmoid(D(x, G(x))) (diagnostic)
    fake: torch.Tensor  # G(x)


class Pix2Pix(nn.Module):
    """Generator and discriminator in one module (the training engine has one optimizer).

    ``forward(x)`` runs the generator; :meth:`losses` computes the whole pix2pix objective
    (eq. 4 of Isola et al.) so that ONE backward pass updates both networks correctly:

    * generator term: the discriminator is applied with its parameters (and buffers) detached
      (``torch.func.functional_call``), so ``gen_adv`` back-propagates into the generator only,
      through the fake image; ``l1`` touches the generator only;
    * discriminator term: evaluated on the real pair and on ``fake.detach()``, so it
      back-propagates into the discriminator only.

    The generator minimises ``-log D(x, G(x))`` (the non-saturating form pix2pix uses) and the
    discriminator ``(-log D(x, y) - log(1 - D(x, G(x)))) / 2``. Both steps see the same
    discriminator parameters (simultaneous gradient descent, where pix2pix alternates D then
    G); the gradients never mix.
    """

    def __init__(self, config: Pix2PixConfig | None = None) -> None:
        super().__init__()
        self.config = config or Pix2PixConfig()
        self.generator = Pix2PixGenerator(self.config)
        self.discriminator = Pix2PixDiscriminator(self.config)

    def forward(self, x: torch.Tensor, *, dropout_generator: torch.Generator | None = None
                ) -> torch.Tensor:
        return self.generator(x, dropout_generator=dropout_generator)

    def discriminate_frozen(self, condition: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        """The discriminator's logits with its parameters and buffers detached: gradients
        flow to the inputs only."""
        frozen = {k: v.detach() for k, v in self.discriminator.named_parameters()}
        frozen.update({k: v.detach() for k, v in self.discriminator.named_buffers()})
        return torch.func.functional_call(self.discriminator, frozen, (condition, output))

    def losses(self, x: torch.Tensor, target: torch.Tensor, l1_weight: float = 100.0
               ) -> Pix2PixLosses:
        bce = F.binary_cross_entropy_with_logits
        fake = self.generator(x)
        # generator: fool a frozen discriminator + stay close to the target (lambda = 100)
        logits_g = self.discriminate_frozen(x, fake)
        gen_adv = bce(logits_g, torch.ones_like(logits_g))
        l1 = (fake - target).abs().mean()
        # discriminator: real pairs -> 1, generated pairs (no gradient to G) -> 0
        logits_real = self.discriminator(x, target)
        logits_fake = self.discriminator(x, fake.detach())
        disc = 0.5 * (bce(logits_real, torch.ones_like(logits_real))
                      + bce(logits_fake, torch.zeros_like(logits_fake)))
        loss = gen_adv + float(l1_weight) * l1 + disc
        return Pix2PixLosses(
            loss=loss, gen_adv=gen_adv, l1=l1, disc=disc,
            d_real=torch.sigmoid(logits_real.detach()).mean(),
            d_fake=torch.sigmoid(logits_fake.detach()).mean(), fake=fake,
        )
