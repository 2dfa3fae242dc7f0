"""blastoseg: amodal segmentation of human IVF embryos, as a library, a CLI and a napari plugin."""

from blastoseg.errors import BlastosegError
from blastoseg.instances import FrameInstances

__version__ = "0.1.0"

__all__ = ["BlastosegError", "FrameInstances", "__version__"]
