"""Importing torch inside napari without crashing it (shared by every widget that runs a model).

Widgets call :func:`import_predictor_safely` on the GUI thread before starting a worker that
uses torch, so the import happens once, guarded, and never first inside a worker thread.
"""

from __future__ import annotations

import sys

__all__ = ["import_predictor_safely"]


def import_predictor_safely() -> None:
    """Import torch/torchvision (via the predictor) on the GUI thread, without triton.

    torchvision imports torch._dynamo, which imports triton when it is installed (CUDA wheels on
    Linux). triton's libtriton bundles LLVM and segfaults on import once an OpenGL context runs
    on Mesa's LLVM-based drivers (llvmpipe under Xvfb, radeonsi): exactly napari's situation.
    The predictor never uses triton (no torch.compile), so it is hidden while torch is
    imported; torch caches "no triton" and nothing else changes.
    """
    if "blastoseg.predict.amodal" in sys.modules:
        return
    hide = "triton" not in sys.modules
    if hide:
        sys.modules["triton"] = None  # type: ignore[assignment]  # import triton -> ImportError
    try:
        import blastoseg.predict.amodal  # noqa: F401
    finally:
        if hide and sys.modules.get("triton", 0) is None:
            del sys.modules["triton"]
