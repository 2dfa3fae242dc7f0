"""Overlap maps: SE-U-Net weights + normalisation + sliding windows -> per-head probabilities.

:class:`OverlapPredictor` loads a registered model of kind ``"overlap"`` (an
:class:`~blastoseg.models.seunet.SEUNet`), normalises each frame to [0, 1] with its own
percentiles (1, 99.8 by default), runs 512 px windows overlapping by 256 px (section 5.3,
:mod:`blastoseg.predict.tiling`) and returns, per frame, an :class:`OverlapResult`: per
head, the averaged sigmoid probability maps, plus the overlap mask thresholded at 0.3 (the
thesis's threshold for the overlap head).

It follows the predictor contract of :mod:`blastoseg.predict.base` like every kind: a 2D
frame gives one OverlapResult, a (T, Y, X) stack a list of them (one per frame), and
``iter_predict`` streams them; ``done``/``total`` count network windows over all frames.
Where one result for the whole stack is wanted ((T, H, W) maps, e.g. to write one TIFF per
head), :meth:`OverlapResult.from_frames` stacks the per-frame results.

Model card layout (``card.config``, read by :class:`~blastoseg.predict.cards.OverlapCard`)::

    {"seunet": SEUNetConfig.to_dict(),
     "preprocess": {"percentiles": [1, 99.8], "scale": 1.0},
     "threshold": {"overlap": 0.3, "cytoplasm": 0.5, "nuclei": 0.5}}

Heads without a threshold in the card use 0.5. Inputs: a 2D frame, (H, W, 1), grey RGB(A)
(H, W, 3/4) (channels are averaged), a (T, Y, X) stack or a (T, Y, X, C) colour stack, any
real dtype, at least 8 px per side and no upper size limit (large frames are tiled)
(:mod:`blastoseg.io.frames`). A constant frame is normalised to zeros rather than refused (an
empty field of view is valid input: it must just give low maps). A model with more than one
input channel gets the grey frame repeated on every channel.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from blastoseg.errors import BlastosegError
from blastoseg.io.frames import MIN_SIDE, as_frames, grey_frame
from blastoseg.models.seunet import SEUNet, SEUNetConfig
from blastoseg.predict.base import PredictorBase, Step, load_predictor
from blastoseg.predict.cards import DEFAULT_PERCENTILES, OverlapCard, check_unit
from blastoseg.predict.tiling import count_windows, iter_sliding_window

__all__ = [
    "OverlapPredictor",
    "OverlapResult",
    "normalise_percentiles",
    "predict_overlap",
    "resize_map",
]


def normalise_percentiles(frame: np.ndarray, percentiles: tuple[float, float] = DEFAULT_PERCENTILES
                          ) -> np.ndarray:
    """float32 (H, W) with the low / high percentiles at 0 / 1, clipped to [0, 1].

    Falls back to min / max when the percentiles coincide; a constant frame gives zeros.
    """
    a = np.asarray(frame, dtype=np.float32)
    lo, hi = (float(v) for v in np.percentile(a, percentiles))
    if hi <= lo:
        lo, hi = float(a.min()), float(a.max())
    if hi <= lo:
        return np.zeros(a.shape, np.float32)
    return np.clip((a - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def resize_map(a: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a float (H, W) map (anti-aliased when shrinking)."""
    from skimage.transform import resize

    shrink = shape[0] < a.shape[0] or shape[1] < a.shape[1]
    return resize(a, shape, order=1, mode="reflect", anti_aliasing=shrink,
                  preserve_range=True).astype(np.float32)


# --- result -----------------------------------------------------------------------------------

@dataclass
class OverlapResult:
    """Per-head probability maps of one frame or a stack.

    Attributes
    ----------
    probabilities
        Head name -> float32 (H, W) for a frame or (T, H, W) for a stack, in the model's head
        order.
    overlap_mask
        bool, same shape: ``probabilities["overlap"] >= thresholds["overlap"]`` (None when the
        model has no overlap head).
    thresholds
        Head name -> threshold (from the model card; 0.3 for overlap by default).
    device_name
        Where it ran, e.g. "CPU (2 threads)".
    model
        The model's registry name.
    is_stack
        True when the input was a (T, Y, X) stack.
    """

    probabilities: dict[str, np.ndarray]
    overlap_mask: np.ndarray | None
    thresholds: dict[str, float]
    device_name: str
    model: str = ""
    is_stack: bool = False
    meta: dict = field(default_factory=dict)

    @property
    def heads(self) -> tuple[str, ...]:
        return tuple(self.probabilities)

    @property
    def shape(self) -> tuple[int, ...]:
        return next(iter(self.probabilities.values())).shape

    def mask(self, head: str) -> np.ndarray:
        """A head's probability map thresholded at its threshold (bool)."""
        if head not in self.probabilities:
            raise KeyError(f"no {head!r} map in this result; heads: {list(self.heads)}")
        return self.probabilities[head] >= self.thresholds.get(head, 0.5)

    def frame(self, index: int) -> OverlapResult:
        """One frame of a stack as a single-frame result (a frame result returns itself)."""
        if not self.is_stack:
            if index not in (0, -1):
                raise IndexError(f"a single-frame result has no frame {index}")
            return self
        return OverlapResult(
            probabilities={k: v[index] for k, v in self.probabilities.items()},
            overlap_mask=None if self.overlap_mask is None else self.overlap_mask[index],
            thresholds=dict(self.thresholds), device_name=self.device_name, model=self.model,
            is_stack=False, meta={**self.meta, "frame": index})

    def frames(self) -> Iterator[OverlapResult]:
        """Single-frame results, one per frame (just itself for a frame)."""
        if not self.is_stack:
            yield self
            return
        for t in range(self.shape[0]):
            yield self.frame(t)

    @classmethod
    def from_frames(cls, results: OverlapResult | Sequence[OverlapResult]) -> OverlapResult:
        """One result for a stack from its per-frame results ((T, H, W) maps; what
        ``predict`` of a stack returns, as a list); a single frame's result is returned as it
        is."""
        if isinstance(results, OverlapResult):
            return results
        results = list(results)
        if not results:
            raise BlastosegError("no overlap results to stack")
        first = results[0]
        shapes = {r.shape for r in results}
        if len(shapes) > 1 or any(r.is_stack for r in results):
            raise BlastosegError(f"only single-frame results of one size stack; got shapes "
                                 f"{sorted(shapes)}")
        masks = [r.overlap_mask for r in results]
        return cls(
            probabilities={h: np.stack([r.probabilities[h] for r in results])
                           for h in first.heads},
            overlap_mask=None if masks[0] is None else np.stack(masks),
            thresholds=dict(first.thresholds), device_name=first.device_name,
            model=first.model, is_stack=True,
            meta={k: v for k, v in first.meta.items() if k != "frame"})


# --- predictor --------------------------------------------------------------------------------

def working_shape(shape: tuple[int, int], scale: float) -> tuple[int, int]:
    """The size a frame of ``shape`` is resized to for a model working at ``scale`` x its
    pixel size (shared by the SE-U-Net kinds)."""
    if scale == 1.0:
        return int(shape[0]), int(shape[1])
    return (max(round(shape[0] * scale), MIN_SIDE), max(round(shape[1] * scale), MIN_SIDE))


def working_frame(frame: np.ndarray, index: int | None, percentiles: tuple[float, float],
                  scale: float) -> np.ndarray:
    """One frame as the SE-U-Net kinds feed it: grey (:func:`~blastoseg.io.frames.grey_frame`),
    normalised with its own percentiles, resized to :func:`working_shape`."""
    grey = normalise_percentiles(grey_frame(frame, index), percentiles)
    work = working_shape(grey.shape, scale)
    return grey if work == grey.shape else resize_map(grey, work)


class PercentileScaled:
    """What the SE-U-Net kinds (overlap, brightfield) read from their typed card to prepare a
    frame: normalisation percentiles and the working scale."""

    card: object

    @property
    def percentiles(self) -> tuple[float, float]:
        return self.card.percentiles

    @property
    def scale(self) -> float:
        """The model works at ``scale`` x the image's pixel size; outputs are resized back."""
        return self.card.scale


class OverlapPredictor(PercentileScaled, PredictorBase):
    """A loaded SE-U-Net overlap model, ready to compute probability maps.

    Parameters
    ----------
    model
        Registered model name of kind "overlap" (see ``blastoseg models``), a
        ``.safetensors`` path with its ``.json`` card beside it or a training job folder;
        None: ``overlap-default``.
    device
        "auto" (CUDA, then MPS, then CPU), "cpu", "cuda", "cuda:N" or "mps".
    window, overlap
        Sliding-window side and overlap in pixels (thesis: 512 and 256). ``window`` must be a
        multiple of ``2**depth`` of the network (16 for the default depth 4).
    batch_size
        Windows per forward pass.
    overlap_threshold
        Overrides the card's overlap threshold (default 0.3).
    """

    kind = "overlap"
    card: OverlapCard

    def __init__(self, model: str | None = None, device: str = "auto", window: int = 512,
                 overlap: int = 256, batch_size: int = 4,
                 overlap_threshold: float | None = None) -> None:
        super().__init__(model, device)
        self.thresholds: dict[str, float] = dict(self.card.thresholds)
        if overlap_threshold is not None:
            self.thresholds["overlap"] = check_unit(overlap_threshold, "the overlap threshold",
                                                    self.entry.name)
        m = self.config.multiple
        for name, value in (("window", window), ("overlap", overlap), ("batch_size", batch_size)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise BlastosegError(f"{name} must be a non-negative integer, got {value!r}")
        if window < m or window % m:
            raise BlastosegError(f"window must be a positive multiple of {m} for this model "
                                 f"(depth {self.config.depth}); got {window}")
        if overlap >= window:
            raise BlastosegError(f"overlap ({overlap}) must be smaller than the window ({window})")
        self.window, self.overlap = int(window), int(overlap)
        self.batch_size = max(int(batch_size), 1)

    def build_model(self) -> SEUNet:
        return SEUNet(self.card.seunet)

    @property
    def config(self) -> SEUNetConfig:
        """The network's architecture."""
        return self.card.seunet

    @property
    def heads(self) -> tuple[str, ...]:
        return tuple(self.config.heads)

    def _run_windows(self, windows: np.ndarray) -> dict[str, np.ndarray]:
        """(B, 1, h, w) normalised windows -> head -> (B, h, w) probabilities."""
        x = torch.from_numpy(windows).to(self.device)
        if self.config.in_channels != x.shape[1]:
            x = x[:, :1].expand(-1, self.config.in_channels, -1, -1)
        with self.inference():
            out = self.model(x)
        return {k: torch.sigmoid(v.float())[:, 0].cpu().numpy() for k, v in out.logits.items()}

    def count_windows(self, image: np.ndarray) -> int:
        """How many windows ``predict(image)`` runs (all frames)."""
        frames, _ = as_frames(image)
        return len(frames) * self._windows_per_frame(frames.shape[1:3])

    def _windows_per_frame(self, shape: tuple[int, int]) -> int:
        return count_windows(self.working_shape(shape), self.window, self.overlap,
                             self.config.multiple)

    def working_shape(self, shape: tuple[int, int]) -> tuple[int, int]:
        """The size a frame of ``shape`` is resized to before the model sees it."""
        return working_shape(shape, self.scale)

    def run_frames(self, frames: Sequence[np.ndarray]) -> Iterator[Step]:
        """Each frame in windows: one step per batch of windows (``done``/``total`` count
        windows over all frames; frames of different sizes are counted as they come)."""
        n = len(frames)
        sizes = [tuple(np.shape(f)[:2]) for f in frames]
        counts = [self._windows_per_frame(size) for size in sizes]
        total, before = sum(counts), 0
        for t, frame in enumerate(frames):
            grey = working_frame(frame, t if n > 1 else None, self.percentiles, self.scale)
            work = iter_sliding_window(grey, self._run_windows, self.window, self.overlap,
                                       batch=self.batch_size, multiple=self.config.multiple)
            while True:
                try:
                    done, _ = next(work)
                except StopIteration as stop:
                    maps = stop.value
                    break
                if done < counts[t]:  # the frame's last step comes with its result
                    yield before + done, total, []
            before += counts[t]
            yield before, total, [(t, self._result(maps, sizes[t]))]

    def _result(self, maps: dict[str, np.ndarray], shape: tuple[int, int]) -> OverlapResult:
        probs = {head: (maps[head] if maps[head].shape == shape
                        else np.clip(resize_map(maps[head], shape), 0.0, 1.0))
                 for head in self.heads}
        overlap_mask = (probs["overlap"] >= self.thresholds["overlap"]
                        if "overlap" in probs else None)
        return OverlapResult(probabilities=probs, overlap_mask=overlap_mask,
                             thresholds=dict(self.thresholds), device_name=self.device_name,
                             model=self.entry.name, is_stack=False,
                             meta={"window": self.window, "overlap": self.overlap,
                                   "scale": self.scale, "percentiles": list(self.percentiles)})


def predict_overlap(image: np.ndarray, model: str | None = None, device: str = "auto",
                    window: int = 512, overlap: int = 256, batch_size: int = 4,
                    progress: Callable[[int, int], None] | None = None
                    ) -> OverlapResult | list[OverlapResult]:
    """One-call overlap maps of a frame (one result) or a (T, Y, X) stack (a list, see
    :meth:`OverlapResult.from_frames`); the loaded model is kept between calls
    (:func:`~blastoseg.predict.base.load_predictor`)."""
    predictor = load_predictor(model, device, kind="overlap", window=window, overlap=overlap,
                               batch_size=batch_size)
    return predictor.predict(image, progress=progress)
