"""Torch modules of blastoseg (no file I/O, no napari)."""

from blastoseg.models.configs import VQVAEConfig
from blastoseg.models.seunet import HEADS, SEUNet, SEUNetConfig, SEUNetConfigError, SEUNetOutput
from blastoseg.models.vqvae import VQVAE, VQVAEOutput

__all__ = ["HEADS", "VQVAE", "SEUNet", "SEUNetConfig", "SEUNetConfigError", "SEUNetOutput",
           "VQVAEConfig", "VQVAEOutput"]
