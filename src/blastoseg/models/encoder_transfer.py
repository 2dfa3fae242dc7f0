"""Start Cell-Net's ResNet encoder from a trained amodal detector's backbone.

Why: the paper starts Cell-Net's encoder from a pretrained ResNet (S2 section III.B); we may
download nothing, and from random initialisation a Cell-Net trained for an hour on this 2-core
CPU does not learn to count (the ``count-ab-*`` runs of docs/models/count.md predict 5-6 cells
on every frame). The shipped ``amodal-default`` detector's body *is* a one-channel ResNet-18
(stem, ``layer1``-``layer3``) trained on the same framed synthetic embryos, so its first stages
are a ready-made encoder for Cell-Net's ``resnet18`` configuration. Only the encoder is
copied; the pyramid, the decoder and the head start as before.

Cell-Net's encoder is ``nn.Sequential(conv1, bn1, relu, maxpool, layer1, layer2[, layer3])``
(:func:`blastoseg.models.cellnet._resnet_encoder`), so ``backbone.body.conv1`` becomes
``encoder.0``, ``bn1`` ``encoder.1``, ``layer1`` ``encoder.4`` and so on.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from blastoseg.weights.registry import resolve_model
from blastoseg.weights.safetensors_io import WeightsError, load_weights

__all__ = ["AMODAL_BODY", "amodal_encoder_state", "init_encoder_from_amodal"]

#: where the amodal detector keeps its ResNet body (torchvision's BackboneWithFPN)
AMODAL_BODY = "backbone.body."
#: amodal body module -> index in Cell-Net's encoder Sequential
_BODY_TO_ENCODER = {"conv1": "0", "bn1": "1", "layer1": "4", "layer2": "5", "layer3": "6"}


def amodal_encoder_state(amodal_state: dict[str, torch.Tensor], stages: int
                         ) -> dict[str, torch.Tensor]:
    """The part of an amodal detector's state dict that fills a Cell-Net encoder with
    ``stages`` ResNet stages after the stem, with Cell-Net's key names (``0.weight`` ...)."""
    wanted = ["conv1", "bn1"] + [f"layer{i}" for i in range(1, stages + 1)]
    out = {}
    for key, value in amodal_state.items():
        if not key.startswith(AMODAL_BODY):
            continue
        rest = key[len(AMODAL_BODY):]
        module, _, tail = rest.partition(".")
        if module in wanted:
            out[f"{_BODY_TO_ENCODER[module]}.{tail}"] = value.float() if value.is_floating_point() \
                else value
    return out


def init_encoder_from_amodal(model: nn.Module, name_or_path: str | os.PathLike) -> int:
    """Copy an amodal model's ResNet body into ``model.encoder`` (a Cell-Net); returns the
    number of tensors copied.

    Raises
    ------
    WeightsError
        ``name_or_path`` is not an amodal model, or its body does not fit the encoder (a
        ``resnet34`` Cell-Net, or a detector with another backbone).
    """
    entry = resolve_model(name_or_path, kind="amodal")
    stages = int(model.config.encoder_stages)
    state = amodal_encoder_state(load_weights(entry.weights_path), stages)
    target = model.encoder.state_dict()
    missing = sorted(set(target) - set(state))
    wrong = sorted(k for k in set(target) & set(state) if target[k].shape != state[k].shape)
    if missing or wrong:
        raise WeightsError(
            f"the body of {entry.name!r} does not fit this Cell-Net encoder "
            f"({model.config.encoder}, {stages} stages): "
            f"{len(missing)} tensor(s) missing, {len(wrong)} of another shape "
            f"(e.g. {(missing + wrong)[0]}); encoder initialisation needs a resnet18 Cell-Net")
    model.encoder.load_state_dict({k: state[k] for k in target})
    return len(target)
