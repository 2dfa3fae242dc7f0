"""Phase -> brightfield translation with a trained pix2pix model (thesis section 4.4.2).

The copy-paste module (section 4.4.1) builds new scenes in the phase domain; a pix2pix model
trained on renderer pairs (``blastoseg train pix2pix``, kind ``"pix2pix"``) turns each phase
scene into the two defocused brightfield focal planes. Dropout stays on at inference, so one
phase scene gives varied brightfield images; the variety is seeded by the caller's
``numpy.random.Generator``.

Intensity conventions (shared by training, :mod:`blastoseg.train.pix2pix_task`, and inference;
stored in the model card's ``config["preprocess"]``):

* generator input  ``x = phase / phase_scale`` (phase in radians, background 0; clipped to
  +-``input_clip``);
* generator target ``t = clip((plane / background - 1) / bf_span, -1, 1)`` where
  ``background`` is the plane's background level (training: the median of the plane outside
  every instance mask, dilated by 3 px) - so the absolute scale the dataset's uint16 files were
  written at does not matter;
* translator output ``plane = background * (1 + bf_span * t)``: float32 planes in grey levels
  (uint16 range), the convention of the renderer's planes
  (:func:`blastoseg.synth.brightfield.optics.form_planes`); ``background`` is the empty
  slide's grey level, drawn per call from ``BrightfieldConfig.background_level`` with the
  caller's rng unless fixed (``background=1.0`` gives relative planes). Optionally the
  renderer's camera noise (shot + read noise) is added.

``phase_scale`` and ``bf_span`` are estimated from the training data when the job's config
does not fix them (see :func:`estimate_preprocess`).
"""

from __future__ import annotations

from collections.abc import Generator, Mapping
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch

from blastoseg.errors import BlastosegError, InvalidImageError
from blastoseg.models.pix2pix import Pix2Pix, Pix2PixConfig
from blastoseg.predict.device import resolve_device
from blastoseg.progress import run_with_progress
from blastoseg.synth.brightfield.config import BrightfieldConfig
from blastoseg.weights import ModelEntry, load_into_model, resolve_model

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_PREPROCESS",
    "PhaseTranslator",
    "background_level",
    "estimate_preprocess",
    "output_to_planes",
    "pad_reflect",
    "phase_to_input",
    "planes_to_target",
]

DEFAULT_MODEL = "pix2pix-brightfield"
#: intensity conventions (see the module docstring); None = estimate from the training data
DEFAULT_PREPROCESS: dict[str, Any] = {"phase_scale": None, "bf_span": None, "input_clip": 4.0}
_FALLBACK = {"phase_scale": 1.0, "bf_span": 0.5, "input_clip": 4.0}


# --- intensity conventions ------------------------------------------------------------------

def _pre(preprocess: Mapping[str, Any] | None) -> dict[str, float]:
    merged = {**_FALLBACK, **{k: v for k, v in dict(preprocess or {}).items() if v is not None}}
    return {k: float(merged[k]) for k in _FALLBACK}


def phase_to_input(phase: np.ndarray, preprocess: Mapping[str, Any] | None = None) -> np.ndarray:
    """Phase image (radians, background 0) -> generator input, float32."""
    p = _pre(preprocess)
    x = np.asarray(phase, dtype=np.float32) / p["phase_scale"]
    return np.clip(x, -p["input_clip"], p["input_clip"]).astype(np.float32)


def planes_to_target(planes: np.ndarray, background: float | np.ndarray,
                     preprocess: Mapping[str, Any] | None = None) -> np.ndarray:
    """Brightfield planes (any scale) and their background level(s) -> targets in [-1, 1].

    ``background`` is a scalar or one value per plane (shape (P,) for (P, H, W) planes).
    """
    p = _pre(preprocess)
    planes = np.asarray(planes, dtype=np.float32)
    bg = np.asarray(background, dtype=np.float32)
    if bg.ndim == 1 and planes.ndim == 3:
        bg = bg[:, None, None]
    bg = np.where(bg > 0, bg, 1.0).astype(np.float32)
    return np.clip((planes / bg - 1.0) / p["bf_span"], -1.0, 1.0).astype(np.float32)


def output_to_planes(t: np.ndarray, preprocess: Mapping[str, Any] | None = None) -> np.ndarray:
    """Generator output in [-1, 1] -> relative planes (background 1.0), float32."""
    p = _pre(preprocess)
    return (1.0 + p["bf_span"] * np.asarray(t, dtype=np.float32)).astype(np.float32)


def background_level(plane: np.ndarray, cells: np.ndarray | None = None) -> float:
    """A plane's background intensity: the median outside ``cells`` (a bool mask, dilated by
    3 px), or of the whole plane when there is no such pixel."""
    plane = np.asarray(plane, dtype=np.float32)
    if cells is not None and np.any(cells):
        from scipy import ndimage as ndi

        outside = ~ndi.binary_dilation(cells, iterations=3)
        if outside.sum() >= 16:
            return float(np.median(plane[outside]))
    return float(np.median(plane))


def estimate_preprocess(phases: list[np.ndarray], targets: list[np.ndarray]) -> dict[str, float]:
    """``phase_scale`` and ``bf_span`` from training scenes.

    ``phase_scale`` = the 99.5th percentile of |phase|, so cells map to about [-1, 1];
    ``bf_span`` = 1.2 x the 99.9th percentile of |plane / background - 1| (``targets`` are the
    background-divided planes), so the Tanh output covers the contrast without saturating.
    """
    out = dict(_FALLBACK)
    if phases:
        v = float(np.percentile(np.abs(np.concatenate([np.ravel(p) for p in phases])), 99.5))
        if np.isfinite(v) and v > 1e-6:
            out["phase_scale"] = round(v, 6)
    if targets:
        v = float(np.percentile(np.abs(np.concatenate([np.ravel(t) - 1.0 for t in targets])),
                                99.9))
        if np.isfinite(v) and v > 1e-6:
            out["bf_span"] = round(max(1.2 * v, 0.02), 6)
    return out


def pad_reflect(array: np.ndarray, height: int, width: int) -> np.ndarray:
    """Pad the last two axes at the bottom/right up to (height, width): reflection where the
    image is large enough, else edge values."""
    h, w = array.shape[-2:]
    if (h, w) == (height, width):
        return array
    pad = [(0, 0)] * (array.ndim - 2) + [(0, height - h), (0, width - w)]
    mode = "reflect" if height - h < h and width - w < w and h > 1 and w > 1 else "edge"
    return np.pad(array, pad, mode=mode)


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def _starts(length: int, tile: int, step: int) -> list[int]:
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, step))
    starts.append(length - tile)
    return starts


def _ramp(tile: int, overlap: int) -> np.ndarray:
    """1D blending weights: linear ramps over ``overlap`` pixels at both ends."""
    i = np.arange(tile, dtype=np.float32)
    ramp = np.minimum(i + 1, tile - i) / max(overlap, 1)
    return np.clip(ramp, 1e-3, 1.0)


# --- the translator -------------------------------------------------------------------------

class PhaseTranslator:
    """A trained pix2pix generator turning phase scenes into two brightfield focal planes.

    Parameters
    ----------
    model
        Registered model name (kind ``"pix2pix"``) or a ``.safetensors`` path with its card.
    device
        "auto", "cpu", "cuda", "cuda:N" or "mps".
    stochastic
        Keep dropout on at inference (pix2pix / thesis: variety); False gives the
        deterministic mean-field output.
    tile
        Images larger than this (px, rounded to the generator's multiple) run in overlapping
        tiles, blended linearly over ``overlap`` px.
    overlap
        Tile overlap in px.
    background
        Grey level of the empty slide in the output: a number, a ``(lo, hi)`` range sampled
        per call with the caller's rng, or None for ``render_config.background_level``.
    camera_noise
        Add the renderer's shot and read noise (photons and read noise drawn from
        ``render_config``).
    render_config
        The renderer's :class:`~blastoseg.synth.brightfield.config.BrightfieldConfig` whose
        ranges are used (default: its defaults).
    """

    def __init__(self, model: str = DEFAULT_MODEL, device: str = "auto", *,
                 stochastic: bool = True, tile: int = 512, overlap: int = 64,
                 background: float | tuple[float, float] | None = None,
                 camera_noise: bool = False,
                 render_config: BrightfieldConfig | None = None) -> None:
        entry: ModelEntry = resolve_model(model, kind="pix2pix")
        try:
            config = Pix2PixConfig.from_dict(dict(entry.card.config.get("pix2pix", {})))
        except (TypeError, ValueError) as exc:
            raise BlastosegError(f"the model card of {entry.name!r} does not describe a "
                                 f"pix2pix model: {exc}") from None
        net = Pix2Pix(config)
        load_into_model(net, entry.weights_path, card=entry.card.to_dict(),
                        expected_kind="pix2pix")
        self.entry: ModelEntry | None = entry
        self._setup(net, entry.card.config.get("preprocess", {}), device, stochastic, tile,
                    overlap, background, camera_noise, render_config)

    @classmethod
    def from_module(cls, net: Pix2Pix, preprocess: Mapping[str, Any] | None = None,
                    device: str = "auto", *, stochastic: bool = True, tile: int = 512,
                    overlap: int = 64, background: float | tuple[float, float] | None = None,
                    camera_noise: bool = False, render_config: BrightfieldConfig | None = None
                    ) -> PhaseTranslator:
        """A translator around an in-memory :class:`Pix2Pix` (no registry)."""
        self = cls.__new__(cls)
        self.entry = None
        self._setup(net, preprocess, device, stochastic, tile, overlap, background,
                    camera_noise, render_config)
        return self

    def _setup(self, net: Pix2Pix, preprocess, device, stochastic, tile, overlap, background,
               camera_noise, render_config) -> None:
        self.render_config = render_config if render_config is not None else BrightfieldConfig()
        if background is None:
            background = self.render_config.background_level
        if isinstance(background, (int, float)):
            background = (float(background), float(background))
        lo, hi = (float(v) for v in background)
        if not 0 < lo <= hi or not np.isfinite(hi):
            raise BlastosegError(f"background must be a positive grey level or a range "
                                 f"lo <= hi; got {background!r}")
        self.background = (lo, hi)
        self.camera_noise = bool(camera_noise)
        self.config: Pix2PixConfig = net.config
        self.preprocess = _pre(preprocess)
        self.device = resolve_device(device)
        self.generator = net.generator.to(self.device).eval()
        self.generator.stochastic = bool(stochastic)
        m = self.config.multiple
        self.tile = max(m, _round_up(int(tile), m))
        self.overlap = int(np.clip(overlap, 0, self.tile // 2))

    @property
    def stochastic(self) -> bool:
        return self.generator.stochastic

    @stochastic.setter
    def stochastic(self, value: bool) -> None:
        self.generator.stochastic = bool(value)

    def _run(self, x: np.ndarray, gen: torch.Generator) -> np.ndarray:
        t = torch.from_numpy(np.ascontiguousarray(x))[None, None].to(self.device)
        amp = (torch.autocast("cuda", dtype=torch.float16) if self.device.type == "cuda"
               else nullcontext())
        with torch.inference_mode(), amp:
            y = self.generator(t, dropout_generator=gen if self.stochastic else None)
        return y[0].float().cpu().numpy()

    def iter_translate(self, phase: np.ndarray, rng: np.random.Generator
                       ) -> Generator[tuple[int, int], None, np.ndarray]:
        """Translate one phase image, yielding (done, total) tiles; returns float32
        (out_channels, H, W) brightfield planes in grey levels (see the class)."""
        phase = np.asarray(phase)
        if phase.ndim != 2 or min(phase.shape) < 1:
            raise InvalidImageError(f"the phase image must be 2D (H, W); got shape "
                                    f"{phase.shape}")
        if not np.issubdtype(phase.dtype, np.number) or np.issubdtype(phase.dtype,
                                                                      np.complexfloating):
            raise InvalidImageError(f"the phase image must be real numbers, got {phase.dtype}")
        if not np.all(np.isfinite(phase)):
            raise InvalidImageError("the phase image holds NaN or infinite values")
        seed = int(rng.integers(0, 2 ** 63 - 1))
        gen = torch.Generator(device=self.device).manual_seed(seed)
        background = float(rng.uniform(*self.background))
        x = phase_to_input(phase, self.preprocess)
        h, w = x.shape
        m = self.config.multiple
        if h <= self.tile and w <= self.tile:
            xp = pad_reflect(x, _round_up(h, m), _round_up(w, m))
            yield 0, 1
            out = self._run(xp, gen)[:, :h, :w]
            yield 1, 1
            return self._finish(out, background, rng)
        # a side shorter than the tile is padded only to the generator's multiple
        size_y, size_x = min(self.tile, _round_up(h, m)), min(self.tile, _round_up(w, m))
        ph, pw = max(_round_up(h, m), size_y), max(_round_up(w, m), size_x)
        xp = pad_reflect(x, ph, pw)
        step_y = max(size_y - self.overlap, m)
        step_x = max(size_x - self.overlap, m)
        ys, xs = _starts(ph, size_y, step_y), _starts(pw, size_x, step_x)
        acc = np.zeros((self.config.out_channels, ph, pw), np.float32)
        weight = np.zeros((ph, pw), np.float32)
        win = _ramp(size_y, self.overlap)[:, None] * _ramp(size_x, self.overlap)[None, :]
        total, done = len(ys) * len(xs), 0
        yield 0, total
        for y0 in ys:
            for x0 in xs:
                y = self._run(xp[y0:y0 + size_y, x0:x0 + size_x], gen)
                acc[:, y0:y0 + size_y, x0:x0 + size_x] += y * win
                weight[y0:y0 + size_y, x0:x0 + size_x] += win
                done += 1
                yield done, total
        out = (acc / np.maximum(weight, 1e-6))[:, :h, :w]
        return self._finish(out, background, rng)

    def _finish(self, out: np.ndarray, background: float, rng: np.random.Generator
                ) -> np.ndarray:
        planes = background * output_to_planes(out, self.preprocess)
        if self.camera_noise:
            from blastoseg.synth.brightfield.optics import camera_noise

            cfg = self.render_config
            photons = float(rng.uniform(*cfg.photons))
            read = float(rng.uniform(*cfg.read_noise))
            planes = camera_noise(planes, rng, background / photons, read)
        return np.clip(planes, 0.0, None).astype(np.float32)

    def __call__(self, phase: np.ndarray, rng: np.random.Generator | None = None,
                 progress=None) -> np.ndarray:
        """float32 (H, W) phase (radians) -> float32 (2, H, W) brightfield planes in grey
        levels, like the renderer's (:class:`~blastoseg.synth.brightfield.scene.Translator`).

        ``rng`` seeds the dropout, the background level and the noise (same seed, same
        output); None draws a fresh seed.
        """
        rng = rng if rng is not None else np.random.default_rng()
        return run_with_progress(self.iter_translate(phase, rng), progress)
