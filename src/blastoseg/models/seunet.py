"""SE-U-Net with decoupled decoder heads (S4, Prytula 2023, sections 4.2-4.2.3).

A U-Net (Ronneberger et al.) whose encoder and decoder convolution blocks each end in a
squeeze-and-excitation block (Hu et al.: global average pool -> FC (C/r) -> ReLU -> FC (C)
-> sigmoid -> channel-wise rescaling). One encoder is shared; every configured head
(``cytoplasm``, ``nuclei``, ``border``, ``background``, ``overlap``) has its own decoder
(section 4.2.2, "decoupled" heads) ending in a 1 x 1 convolution that gives one logit map.
Configuring a subset of :data:`HEADS` gives the 1/2/3/4-head variants of Table 5.1 and the
overlap head variants of Tables 5.2-5.3.

Interpretation (the thesis text is not available here; see the module docstrings of
``predict/overlap.py`` and ``train/overlap_losses.py`` for the rest of S4):

- a block is conv3x3-norm-ReLU-conv3x3-norm-ReLU followed by the SE block, in the encoder
  and in every decoder level;
- down-sampling is 2 x 2 max pooling, up-sampling a 2 x 2 stride-2 transposed convolution,
  skip connections are concatenated (classic U-Net);
- the decoders may be narrower than the encoder (``decoder_width``) so five decoders stay
  cheap enough for CPU training and inference;
- the overlap head's bias starts at ``logit(overlap_prior)`` (as RetinaNet does for rare
  foreground), so an untrained or lightly trained model predicts few overlaps rather than
  a grey 0.5 map; the other heads start at 0.

This module is torch only (no file I/O); :class:`SEUNetConfig` is stored in model cards.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from blastoseg.errors import BlastosegError, InvalidImageError
from blastoseg.models.configs import CardConfig

__all__ = [
    "HEADS",
    "SEBlock",
    "SEUNet",
    "SEUNetConfig",
    "SEUNetConfigError",
    "SEUNetOutput",
]

#: every head the SE-U-Net knows, in the fixed order used everywhere in S4
HEADS: tuple[str, ...] = ("cytoplasm", "nuclei", "border", "background", "overlap")
NORMS = ("batch", "group", "none")


class SEUNetConfigError(BlastosegError, ValueError):
    """An SE-U-Net configuration (e.g. from a model card) has an unknown key or a bad value."""


@dataclass
class SEUNetConfig(CardConfig):
    """Everything needed to rebuild :class:`SEUNet`.

    Attributes
    ----------
    in_channels
        Input channels (1: one grey brightfield / embryo frame in [0, 1]).
    base_width
        Channels of the first encoder level; level ``i`` has ``base_width * 2**i``.
    depth
        Number of 2x down-samplings; inputs must be a multiple of ``2**depth`` per side (the
        predictor pads to that).
    heads
        The decoders to build, any non-empty subset of :data:`HEADS` without repeats; their
        order is kept (outputs are dicts in this order).
    se_reduction
        r, the squeeze-and-excitation reduction ratio (hidden units = max(C // r, 2)).
    decoder_width
        Channels of a decoder level relative to the encoder level it joins (1.0 = classic
        U-Net; 0.5 halves every decoder, which with five heads is most of the cost).
    norm
        ``"batch"`` (BatchNorm2d, per-pixel affine at inference, so tiling stays exact up to
        the SE pooling), ``"group"`` (GroupNorm, for batches of 1) or ``"none"``.
    overlap_prior
        Initial overlap probability everywhere (the overlap head's bias is its logit).
    """

    in_channels: int = 1
    base_width: int = 16
    depth: int = 4
    heads: tuple[str, ...] = HEADS
    se_reduction: int = 8
    decoder_width: float = 0.5
    norm: str = "batch"
    overlap_prior: float = 0.05

    config_error = SEUNetConfigError

    def __post_init__(self) -> None:
        errors: list[str] = []
        heads = self.heads
        if isinstance(heads, str):
            heads = (heads,)
        try:
            heads = tuple(heads)
        except TypeError:
            errors.append(f"heads must be a list of head names, got {self.heads!r}")
            heads = ()
        unknown = [h for h in heads if h not in HEADS]
        if unknown:
            errors.append(f"unknown head(s) {unknown}; choose from {list(HEADS)}")
        elif not heads and not errors:
            errors.append(f"heads must name at least one of {list(HEADS)}")
        elif len(set(heads)) != len(heads):
            errors.append(f"heads are repeated: {list(heads)}")
        self.heads = heads
        for name, lo, hi in (("in_channels", 1, 16), ("base_width", 2, 256), ("depth", 1, 7),
                             ("se_reduction", 1, 1024)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                errors.append(f"{name} must be an integer in {lo}..{hi}, got {value!r}")
        if (isinstance(self.decoder_width, bool)
                or not isinstance(self.decoder_width, (int, float))
                or not 0.0 < float(self.decoder_width) <= 4.0):
            errors.append(f"decoder_width must be a number in (0, 4], got {self.decoder_width!r}")
        if self.norm not in NORMS:
            errors.append(f"norm must be one of {list(NORMS)}, got {self.norm!r}")
        if (isinstance(self.overlap_prior, bool)
                or not isinstance(self.overlap_prior, (int, float))
                or not 0.0 < float(self.overlap_prior) < 1.0):
            errors.append(f"overlap_prior must be in (0, 1), got {self.overlap_prior!r}")
        if errors:
            raise SEUNetConfigError("invalid SEUNetConfig: " + "; ".join(errors))
        self.decoder_width = float(self.decoder_width)
        self.overlap_prior = float(self.overlap_prior)

    @property
    def multiple(self) -> int:
        """Input height and width must be multiples of this (``2**depth``)."""
        return 2 ** self.depth

    def encoder_channels(self) -> list[int]:
        """Channels of encoder levels 0..depth (the last one is the bottleneck)."""
        return [self.base_width * 2 ** i for i in range(self.depth + 1)]

    def decoder_channels(self) -> list[int]:
        """Channels of the decoder levels, coarse -> fine (levels depth-1 .. 0)."""
        enc = self.encoder_channels()
        return [max(4, round(enc[i] * self.decoder_width)) for i in range(self.depth - 1, -1, -1)]


# --- building blocks --------------------------------------------------------------------------

def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        groups = math.gcd(channels, 8)
        return nn.GroupNorm(groups, channels)
    return nn.Identity()


class SEBlock(nn.Module):
    """Squeeze-and-excitation (Hu et al. 2018): rescale each channel by a gate in (0, 1)
    computed from the globally average-pooled features."""

    def __init__(self, channels: int, reduction: int = 8) -> None:
        super().__init__()
        hidden = max(channels // reduction, 2)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, channels, 1)
        # a small positive bias keeps the few hidden ReLUs of a narrow block alive at the start
        # (with 2 hidden units both can start dead, and the gate then never learns)
        nn.init.constant_(self.fc1.bias, 0.1)

    def gates(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, 1, 1) channel weights in (0, 1)."""
        s = x.mean(dim=(2, 3), keepdim=True)  # squeeze
        return torch.sigmoid(self.fc2(torch.relu(self.fc1(s))))  # excitation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gates(x)


class SEConvBlock(nn.Module):
    """conv3x3-norm-ReLU x 2, then squeeze-and-excitation."""

    def __init__(self, cin: int, cout: int, norm: str, reduction: int) -> None:
        super().__init__()
        bias = norm == "none"
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1, bias=bias), _norm(norm, cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=bias), _norm(norm, cout),
            nn.ReLU(inplace=True),
        )
        self.se = SEBlock(cout, reduction)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.se(self.body(x))


class Decoder(nn.Module):
    """One head's decoder: up-sample, concatenate the encoder skip, SE conv block; repeated
    ``depth`` times, then a 1 x 1 convolution to one logit map."""

    def __init__(self, cfg: SEUNetConfig) -> None:
        super().__init__()
        enc = cfg.encoder_channels()
        dec = cfg.decoder_channels()
        self.ups = nn.ModuleList()
        self.blocks = nn.ModuleList()
        prev = enc[-1]
        for k, level in enumerate(range(cfg.depth - 1, -1, -1)):
            self.ups.append(nn.ConvTranspose2d(prev, dec[k], 2, stride=2))
            self.blocks.append(SEConvBlock(dec[k] + enc[level], dec[k], cfg.norm,
                                           cfg.se_reduction))
            prev = dec[k]
        self.out = nn.Conv2d(prev, 1, 1)

    def forward(self, bottleneck: torch.Tensor, skips: list[torch.Tensor]
                ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = bottleneck
        feats = []
        for up, block, skip in zip(self.ups, self.blocks, reversed(skips), strict=True):
            x = block(torch.cat([up(x), skip], dim=1))
            feats.append(x)
        return self.out(x), feats


@dataclass
class SEUNetOutput:
    """Output of :meth:`SEUNet.forward`.

    Attributes
    ----------
    logits
        Head name -> (B, 1, H, W) logits, in the configured head order (apply a sigmoid for
        probabilities).
    features
        Head name -> that head's decoder features, coarse -> fine: ``depth`` tensors of
        (B, C_k, H / 2**(depth-1-k), W / 2**(depth-1-k)).
    """

    logits: dict[str, torch.Tensor]
    features: dict[str, list[torch.Tensor]]

    def probabilities(self) -> dict[str, torch.Tensor]:
        """Head name -> (B, 1, H, W) sigmoid probabilities."""
        return {k: torch.sigmoid(v) for k, v in self.logits.items()}


class SEUNet(nn.Module):
    """SE-U-Net: shared SE encoder, one SE decoder per configured head (sections 4.2-4.2.3).

    >>> net = SEUNet(SEUNetConfig(heads=("cytoplasm", "overlap")))
    >>> out = net(torch.zeros(2, 1, 128, 128))
    >>> out.logits["overlap"].shape
    torch.Size([2, 1, 128, 128])
    """

    def __init__(self, config: SEUNetConfig | dict | None = None) -> None:
        super().__init__()
        if config is None:
            config = SEUNetConfig()
        elif isinstance(config, dict):
            config = SEUNetConfig.from_dict(config)
        self.config = config
        enc = config.encoder_channels()
        self.encoder = nn.ModuleList()
        cin = config.in_channels
        for ch in enc:
            self.encoder.append(SEConvBlock(cin, ch, config.norm, config.se_reduction))
            cin = ch
        self.pool = nn.MaxPool2d(2)
        self.decoders = nn.ModuleDict({h: Decoder(config) for h in config.heads})
        for name, decoder in self.decoders.items():
            p = config.overlap_prior
            nn.init.constant_(decoder.out.bias, math.log(p / (1.0 - p)) if name == "overlap"
                              else 0.0)

    @property
    def heads(self) -> tuple[str, ...]:
        return tuple(self.config.heads)

    def check_input(self, x: torch.Tensor) -> None:
        """Raise :class:`InvalidImageError` unless x is (B, in_channels, H, W) with H and W
        positive multiples of ``2**depth``."""
        cfg = self.config
        if not isinstance(x, torch.Tensor) or x.ndim != 4:
            shape = tuple(x.shape) if hasattr(x, "shape") else type(x).__name__
            raise InvalidImageError(f"SEUNet expects a (B, {cfg.in_channels}, H, W) tensor; "
                                    f"got {shape}")
        if x.shape[1] != cfg.in_channels:
            raise InvalidImageError(f"SEUNet was built for {cfg.in_channels} input channel(s); "
                                    f"got a tensor of shape {tuple(x.shape)}")
        h, w = x.shape[-2:]
        m = cfg.multiple
        if h < m or w < m or h % m or w % m:
            raise InvalidImageError(
                f"SEUNet with depth {cfg.depth} needs height and width that are multiples of "
                f"{m}; got {h} x {w}. Pad the input (blastoseg.predict.tiling does) to "
                f"{-(-h // m) * m} x {-(-w // m) * m}.")
        if not x.is_floating_point():
            raise InvalidImageError(f"SEUNet expects floating-point input; got {x.dtype}")

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Shared encoder: (bottleneck, skips fine -> coarse)."""
        skips = []
        for i, block in enumerate(self.encoder):
            if i:
                x = self.pool(x)
            x = block(x)
            skips.append(x)
        return skips[-1], skips[:-1]

    def forward(self, x: torch.Tensor) -> SEUNetOutput:
        self.check_input(x)
        bottleneck, skips = self.encode(x)
        logits: dict[str, torch.Tensor] = {}
        features: dict[str, list[torch.Tensor]] = {}
        for name, decoder in self.decoders.items():
            logits[name], features[name] = decoder(bottleneck, skips)
        return SEUNetOutput(logits=logits, features=features)
