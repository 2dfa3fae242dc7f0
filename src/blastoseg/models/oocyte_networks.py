"""The networks an ``oocyte`` model can be: SMANet (S3, the default) or, for the comparison
the issue asks for, the SE-U-Net of S4 with a softmax classifier over the oocyte classes.

A model card's ``config`` says which: ``{"model": SMANetConfig}`` (SMANet; cards without an
``architecture`` key are SMANets) or ``{"architecture": "seunet", "seunet": SEUNetConfig,
"working_size": 256}``. :func:`oocyte_network_config` reads either, :func:`build_oocyte_network`
builds it; the training task and the predictor share both.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from blastoseg.models.seunet import SEUNet, SEUNetConfig
from blastoseg.models.smanet import SMANet, SMANetConfig

__all__ = ["ARCHITECTURES", "OocyteNetworkConfig", "SEUNetClasses", "build_oocyte_network",
           "oocyte_network_config"]

ARCHITECTURES = ("smanet", "seunet")


class SEUNetClasses(nn.Module):
    """The S4 SE-U-Net (shared SE encoder, one SE decoder) whose finest decoder features go
    to a 1x1 classifier over ``n_classes``: ``(B, 1, H, W)`` -> ``(B, n_classes, H, W)``."""

    def __init__(self, config: SEUNetConfig, n_classes: int) -> None:
        super().__init__()
        self.config = replace(config, heads=("cytoplasm",))  # one decoder; its name is moot
        self.seunet = SEUNet(self.config)
        self.classifier = nn.Conv2d(self.config.decoder_channels()[-1], int(n_classes), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seunet.check_input(x)
        bottleneck, skips = self.seunet.encode(x)
        _, features = self.seunet.decoders["cytoplasm"](bottleneck, skips)
        return self.classifier(features[-1])


@dataclass(frozen=True)
class OocyteNetworkConfig:
    """Which network and its config; ``working_size`` is the side frames are resized to."""

    architecture: str
    smanet: SMANetConfig | None = None
    seunet: SEUNetConfig | None = None
    working_size: int = 256
    n_classes: int = 7

    def to_card(self) -> dict[str, Any]:
        """The card's ``config`` entries of this network."""
        if self.architecture == "smanet":
            return {"model": self.smanet.to_dict()}
        return {"architecture": "seunet", "seunet": self.seunet.to_dict(),
                "working_size": self.working_size}


def oocyte_network_config(config: Mapping[str, Any]) -> OocyteNetworkConfig:
    """Read a card's or a job's ``config``; ValueError / TypeError for a bad one."""
    arch = config.get("architecture", "smanet")
    if arch not in ARCHITECTURES:
        raise ValueError(f"architecture must be one of {ARCHITECTURES}, got {arch!r}")
    if arch == "smanet":
        sma = SMANetConfig.from_dict(dict(config.get("model") or {}))
        return OocyteNetworkConfig("smanet", smanet=sma, working_size=sma.working_size,
                                   n_classes=sma.n_classes)
    seu = SEUNetConfig.from_dict(dict(config.get("seunet") or {}))
    size = int(config.get("working_size", 256))
    if size < seu.multiple or size % seu.multiple:
        raise ValueError(f"working_size {size} must be a multiple of {seu.multiple} "
                         f"(2 ** seunet.depth)")
    return OocyteNetworkConfig("seunet", seunet=seu, working_size=size)


def build_oocyte_network(cfg: OocyteNetworkConfig) -> nn.Module:
    if cfg.architecture == "smanet":
        return SMANet(cfg.smanet)
    return SEUNetClasses(cfg.seunet, cfg.n_classes)
