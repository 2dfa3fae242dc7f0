"""blastoseg: amodal segmentation of human IVF embryos, as a library, a CLI and a napari plugin."""

from blastoseg.errors import BlastosegError
from blastoseg.instances import FrameInstances

__version__ = "0.1.0"

__all__ = ["BlastosegError", "FrameInstances", "__version__", "segment_amodal"]


def __getattr__(name: str):
    # torch-heavy entry points load on first use, so `import blastoseg` stays light
    if name == "segment_amodal":
        from blastoseg.predict.amodal import segment_amodal

        return segment_amodal
    raise AttributeError(f"module 'blastoseg' has no attribute {name!r}")
