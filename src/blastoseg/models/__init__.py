"""Torch modules of blastoseg (no file I/O, no napari)."""

from blastoseg.models.configs import VQVAEConfig
from blastoseg.models.vqvae import VQVAE, VQVAEOutput

__all__ = ["VQVAE", "VQVAEConfig", "VQVAEOutput"]
