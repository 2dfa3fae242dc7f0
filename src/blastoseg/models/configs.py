"""Configuration dataclasses of the package's models, and :class:`CardConfig`, the card
round trip they share.

Each config is plain data: it is stored in a model card (``to_dict``) and rebuilt from it
(``from_dict``), so a weights file and its card fully describe a model.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar, Literal

__all__ = ["CardConfig", "VQVAEConfig", "check_positive_ints"]


class CardConfig:
    """Mixed into a model's config dataclass: ``to_dict`` gives JSON-safe values (tuples as
    lists) and ``from_dict`` rebuilds the config from a card's dict (None: the defaults; a
    config: itself), refusing anything but a dict and keys the config does not know, named
    with the known ones (a misspelt key in a card would otherwise be dropped silently).
    Errors are the class's ``config_error``; checking the values is the dataclass's
    ``__post_init__``."""

    #: what a bad dict raises (a subclass sets its own, e.g. ``CellNetConfigError``)
    config_error: ClassVar[type[Exception]] = ValueError

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None):
        """From a dict (e.g. a model card's ``config["model"]``); unknown keys are an error
        that lists the known ones."""
        if d is None:
            return cls()
        if isinstance(d, cls):
            return d
        if not isinstance(d, dict):
            raise cls.config_error(f"{cls.__name__} needs a dict, got {type(d).__name__}")
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise cls.config_error(f"unknown {cls.__name__} key(s) {unknown}; known keys: "
                                   f"{known}")
        return cls(**d)


def check_positive_ints(config, names: Iterable[str], error: type[Exception]) -> None:
    """Raise ``error`` for the first of ``names`` whose value is not an integer >= 1 (a
    bool is not one, though Python counts it as an int)."""
    for name in names:
        v = getattr(config, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise error(f"{name} must be a positive integer, got {v!r}")


@dataclass
class VQVAEConfig(CardConfig):
    """VQ-VAE shape prior on amodal mask crops (S1, Jang et al., section 3).

    Attributes
    ----------
    mask_size
        S: masks are S x S crops of an instance's box. 28 matches the mask resolution of
        torchvision's Mask R-CNN mask head (RoIAlign of the targets to 28 x 28), so the
        detector can take code targets and decoded masks at the size it already uses.
    grid_size
        M: the encoder yields an M x M grid of latents; ``mask_size / grid_size`` must be a
        power of two (one stride-2 conv per halving). 7 = 28 / 4 matches the 7 x 7 RoI
        features of the box head and the 14 x 14 mask-head features after one stride 2.
    codebook_size
        K, number of codes (the classes of the detector's code classifier, eq. 3).
    embed_dim
        D, dimension of a latent / code.
    hidden_channels
        Width of the convolutions (the first layer has half of it).
    n_res_blocks
        Residual blocks at the M x M grid, in the encoder and in the decoder.
    beta
        Weight of the commitment term of eq. 1 (0.25, as in van den Oord et al. and Jang et al.).
    codebook_update
        ``"loss"``: the codebook is learnt by the ``||sg[z_e] - e||^2`` term of eq. 1;
        ``"ema"``: codes are exponential moving averages of their assigned encoder outputs
        (the codebook term is then not needed and is reported as 0).
    ema_decay, ema_eps
        Decay and Laplace smoothing of the EMA update.
    dead_code_restart
        Re-initialise codes that were (almost) never chosen during the last
        ``restart_every`` training steps from random encoder outputs of the current batch.
    restart_every
        Length, in training steps, of the window over which code usage is counted.
    dead_code_threshold
        A code chosen fewer than this many times in the window is dead.
    """

    mask_size: int = 28
    grid_size: int = 7
    codebook_size: int = 64
    embed_dim: int = 16
    hidden_channels: int = 32
    n_res_blocks: int = 1
    beta: float = 0.25
    codebook_update: Literal["loss", "ema"] = "loss"
    ema_decay: float = 0.99
    ema_eps: float = 1e-5
    dead_code_restart: bool = True
    restart_every: int = 50
    dead_code_threshold: float = 1.0

    def __post_init__(self) -> None:
        ratio = self.mask_size // max(self.grid_size, 1)
        if (self.grid_size < 1 or self.mask_size % self.grid_size or ratio < 2
                or ratio & (ratio - 1)):
            raise ValueError(f"mask_size / grid_size must be a power of two >= 2; got "
                             f"mask_size={self.mask_size}, grid_size={self.grid_size}")
        if self.codebook_update not in ("loss", "ema"):
            raise ValueError(f"codebook_update must be 'loss' or 'ema', "
                             f"got {self.codebook_update!r}")
        if self.codebook_size < 2 or self.embed_dim < 1 or self.hidden_channels < 2:
            raise ValueError("codebook_size >= 2, embed_dim >= 1 and hidden_channels >= 2 "
                             "are required")
        if not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1), got {self.ema_decay}")
        if self.restart_every < 1:
            raise ValueError(f"restart_every must be >= 1, got {self.restart_every}")

    @property
    def n_down(self) -> int:
        """Number of stride-2 stages between the mask and the latent grid."""
        return (self.mask_size // self.grid_size).bit_length() - 1
