"""Label map -> oocyte image with a trained ``oocyte-translator`` (the S4 pix2pix generator,
trained by :mod:`blastoseg.train.oocyte_translator_task`): the paper's way of making
synthetic oocytes that look like a clinic's own images from random label maps.

The class map goes in one-hot, padded (edge values) to the generator's multiple; dropout
stays on (pix2pix's only noise) and is seeded, so one label map gives varied but reproducible
images. The output [-1, 1] becomes uint8 grey levels.
"""

from __future__ import annotations

import numpy as np
import torch

from blastoseg.errors import BlastosegError
from blastoseg.models.pix2pix import Pix2Pix
from blastoseg.predict.cards import Pix2PixCard
from blastoseg.predict.device import resolve_device
from blastoseg.weights import load_into_model, resolve_model

__all__ = ["KIND", "OocyteTranslator"]

KIND = "oocyte-translator"


class OocyteTranslator:
    """A trained oocyte translator; ``translate(labels, seed)`` -> (H, W) uint8 image."""

    def __init__(self, model: str, device: str = "auto", stochastic: bool = True) -> None:
        from blastoseg.io.oocyte_classes import N_CLASSES

        entry = resolve_model(model, kind=KIND)
        card = Pix2PixCard.from_card(entry.card)
        if card.pix2pix.in_channels != N_CLASSES or card.pix2pix.out_channels != 1:
            raise BlastosegError(f"{entry.name!r} is not an oocyte translator ({N_CLASSES} "
                                 "class channels in, one grey channel out)")
        net = Pix2Pix(card.pix2pix)
        load_into_model(net, entry.weights_path, card=entry.card.to_dict(), expected_kind=KIND)
        self.name = entry.name
        self.device = resolve_device(device)
        self.generator = net.generator.to(self.device).eval()
        self.generator.stochastic = bool(stochastic)

    def translate(self, labels: np.ndarray, seed: int = 0) -> np.ndarray:
        from blastoseg.train.oocyte_translator_task import one_hot

        labels = np.asarray(labels)
        h, w = labels.shape
        m = self.generator.config.multiple
        th, tw = -(-h // m) * m, -(-w // m) * m
        padded = np.pad(labels, ((0, th - h), (0, tw - w)), mode="edge")
        x = torch.from_numpy(one_hot(padded)[None]).to(self.device)
        gen = torch.Generator(device=self.device).manual_seed(int(seed))
        with torch.inference_mode():
            out = self.generator(x, dropout_generator=gen)[0, 0, :h, :w].float().cpu().numpy()
        return np.clip(np.round((out + 1.0) * 127.5), 0, 255).astype(np.uint8)
