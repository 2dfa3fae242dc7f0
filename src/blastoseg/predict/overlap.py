"""Overlap maps: SE-U-Net weights + normalisation + sliding windows -> per-head probabilities.

:class:`OverlapPredictor` loads a registered model of kind ``"overlap"`` (an
:class:`~blastoseg.models.seunet.SEUNet`), normalises each frame to [0, 1] with its own
percentiles (1, 99.8 by default), runs 512 px windows overlapping by 256 px (section 5.3,
:mod:`blastoseg.predict.tiling`) and returns, per head, the averaged sigmoid probability
maps, plus the overlap mask thresholded at 0.3 (the thesis's threshold for the overlap head).

Model card layout (``card.config``)::

    {"seunet": SEUNetConfig.to_dict(),
     "preprocess": {"percentiles": [1, 99.8]},
     "threshold": {"overlap": 0.3, "cytoplasm": 0.5, "nuclei": 0.5}}

Heads without a threshold in the card use 0.5. Inputs: a 2D frame, (H, W, 1), grey RGB(A)
(H, W, 3/4) (channels are averaged), a (T, Y, X) stack or a (T, Y, X, C) colour stack, any
real dtype, at least 8 px per side and no upper size limit (large frames are tiled). A
constant frame is normalised to zeros rather than refused (an empty field of view is valid
input: it must just give low maps). A model with more than one input channel gets the grey
frame repeated on every channel.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field

import numpy as np
import torch

from blastoseg.errors import BlastosegError, InvalidImageError
from blastoseg.models.seunet import SEUNet, SEUNetConfig, SEUNetConfigError
from blastoseg.predict.device import describe_device, resolve_device
from blastoseg.predict.tiling import count_windows, iter_sliding_window
from blastoseg.progress import run_with_progress
from blastoseg.weights import ModelEntry, WeightsError, load_into_model, resolve_model

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_PERCENTILES",
    "DEFAULT_THRESHOLDS",
    "MIN_SIDE",
    "OverlapPredictor",
    "OverlapResult",
    "normalise_percentiles",
    "predict_overlap",
    "split_frames",
]

DEFAULT_MODEL = "overlap-default"
DEFAULT_PERCENTILES = (1.0, 99.8)
#: the thesis thresholds the overlap head at 0.3; the other heads at 0.5
DEFAULT_THRESHOLDS = {"overlap": 0.3, "cytoplasm": 0.5, "nuclei": 0.5}
MIN_SIDE = 8


# --- input handling ---------------------------------------------------------------------------

def _check_dtype(arr: np.ndarray) -> None:
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.integer)
                                 or np.issubdtype(arr.dtype, np.floating)):
        raise InvalidImageError(f"expected an image of integer or floating-point pixels; got "
                                f"dtype {arr.dtype}")


def split_frames(image: np.ndarray) -> tuple[np.ndarray, bool]:
    """Check an input and view it as frames: returns (frames, was_a_stack).

    ``frames`` is (T, H, W) or (T, H, W, C) (colour, C = 3 or 4, or 1); nothing is copied.

    Raises
    ------
    InvalidImageError
        Empty, non-numeric, (T, Z, Y, X), more than 4 axes, or sides under 8 px.
    """
    arr = np.asarray(image)
    if arr.size == 0:
        raise InvalidImageError(f"the image is empty (shape {arr.shape}); expected a 2D frame or "
                                "a (T, Y, X) stack with pixels")
    _check_dtype(arr)
    if arr.ndim == 2:
        frames, stack = arr[None], False
    elif arr.ndim == 3 and arr.shape[-1] == 1:
        frames, stack = arr[None], False
    elif arr.ndim == 3 and arr.shape[-1] in (3, 4) and arr.shape[0] > 4:
        frames, stack = arr[None], False  # (Y, X, C) colour frame
    elif arr.ndim == 3:
        frames, stack = arr, True
    elif arr.ndim == 4 and arr.shape[-1] in (1, 3, 4):
        frames, stack = arr, True  # (T, Y, X, C)
    elif arr.ndim == 4:
        raise InvalidImageError(
            f"got a (T, Z, Y, X) stack of shape {arr.shape}: choose one focal plane first "
            "(e.g. image[:, z]); overlap maps are computed on 2D frames")
    else:
        raise InvalidImageError(f"expected a 2D frame, grey RGB (H, W, 3) or a (T, Y, X) stack; "
                                f"got shape {arr.shape}")
    h, w = frames.shape[1:3]
    if min(h, w) < MIN_SIDE:
        raise InvalidImageError(f"frames must be at least {MIN_SIDE} pixels per side; got "
                                f"{h} x {w} (shape {arr.shape})")
    return frames, stack


def _grey(frame: np.ndarray, index: int, stack: bool) -> np.ndarray:
    a = frame
    if a.ndim == 3:
        a = a[..., 0] if a.shape[-1] == 1 else a[..., :3].astype(np.float32).mean(axis=-1)
    a = a.astype(np.float32, copy=False)
    finite = np.isfinite(a)
    if not finite.all():
        where = f"frame {index} has" if stack else "the image has"
        raise InvalidImageError(f"{where} {int((~finite).sum())} NaN or infinite pixels; "
                                "expected finite values (replace or mask them first)")
    return a


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


# --- predictor --------------------------------------------------------------------------------

def _card_numbers(value, what: str, source: str) -> tuple[float, ...]:
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise WeightsError(f"model card of {source}: {what} must be a list of numbers, got "
                           f"{value!r}") from None
    return out


def card_preprocess(config: dict, source: str) -> tuple[tuple[float, float], float]:
    """``(percentiles, scale)`` from a model card's ``preprocess`` block, checked (shared by
    the overlap and brightfield predictors, whose cards use the same block)."""
    pre = config.get("preprocess", {}) or {}
    percentiles = _card_numbers(pre.get("percentiles", DEFAULT_PERCENTILES),
                                "preprocess.percentiles", source)
    if len(percentiles) != 2 or not 0.0 <= percentiles[0] < percentiles[1] <= 100.0:
        raise WeightsError(f"model card of {source}: preprocess.percentiles must be two "
                           f"increasing numbers in 0..100, got {list(percentiles)}")
    scale = _card_numbers([pre.get("scale", 1.0)], "preprocess.scale", source)[0]
    if not 0.05 <= scale <= 4.0:
        raise WeightsError(f"model card of {source}: preprocess.scale must be in [0.05, 4], "
                           f"got {scale}")
    return (percentiles[0], percentiles[1]), scale


class OverlapPredictor:
    """A loaded SE-U-Net overlap model, ready to compute probability maps.

    Parameters
    ----------
    model
        Registered model name of kind "overlap" (see ``blastoseg models``) or a
        ``.safetensors`` path with its ``.json`` card beside it.
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

    def __init__(self, model: str = DEFAULT_MODEL, device: str = "auto", window: int = 512,
                 overlap: int = 256, batch_size: int = 4,
                 overlap_threshold: float | None = None) -> None:
        self.entry: ModelEntry = resolve_model(model, kind="overlap")
        source = self.entry.name
        config = self.entry.card.config or {}
        try:
            self.config = SEUNetConfig.from_dict(config.get("seunet", {}))
        except SEUNetConfigError as exc:
            raise WeightsError(f"model card of {source}: {exc}") from None
        #: the model works at ``scale`` x the image's pixel size (a CPU-sized model trained on
        #: half-resolution images); maps are resized back to the input's size
        self.percentiles, self.scale = card_preprocess(config, source)
        thresholds = {**DEFAULT_THRESHOLDS, **(config.get("threshold", {}) or {})}
        if overlap_threshold is not None:
            thresholds["overlap"] = overlap_threshold
        self.thresholds: dict[str, float] = {}
        for head in self.config.heads:
            value = thresholds.get(head, 0.5)
            if (isinstance(value, bool) or not isinstance(value, (int, float))
                    or not 0.0 <= float(value) <= 1.0):
                raise BlastosegError(f"the {head} threshold must be a number in [0, 1], got "
                                     f"{value!r} (model {source})")
            self.thresholds[head] = float(value)
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
        self.device = resolve_device(device)
        self.device_name = describe_device(self.device)
        net = SEUNet(self.config)
        load_into_model(net, self.entry.weights_path, card=self.entry.card.to_dict(),
                        expected_kind="overlap")
        self.model = net.to(self.device).eval()

    @property
    def heads(self) -> tuple[str, ...]:
        return tuple(self.config.heads)

    def _run_windows(self, windows: np.ndarray) -> dict[str, np.ndarray]:
        """(B, 1, h, w) normalised windows -> head -> (B, h, w) probabilities."""
        x = torch.from_numpy(windows).to(self.device)
        if self.config.in_channels != x.shape[1]:
            x = x[:, :1].expand(-1, self.config.in_channels, -1, -1)
        amp = (torch.autocast("cuda", dtype=torch.float16) if self.device.type == "cuda"
               else nullcontext())
        with torch.inference_mode(), amp:
            out = self.model(x)
        return {k: torch.sigmoid(v.float())[:, 0].cpu().numpy() for k, v in out.logits.items()}

    def count_windows(self, image: np.ndarray) -> int:
        """How many windows :meth:`iter_predict` runs for this input (all frames)."""
        frames, _ = split_frames(image)
        return len(frames) * count_windows(self.working_shape(frames.shape[1:3]), self.window,
                                           self.overlap, self.config.multiple)

    def working_shape(self, shape: tuple[int, int]) -> tuple[int, int]:
        """The size a frame of ``shape`` is resized to before the model sees it."""
        if self.scale == 1.0:
            return int(shape[0]), int(shape[1])
        return (max(round(shape[0] * self.scale), MIN_SIDE),
                max(round(shape[1] * self.scale), MIN_SIDE))

    def iter_predict(self, image: np.ndarray
                     ) -> Generator[tuple[int, int], None, OverlapResult]:
        """Probability maps of a frame or a (T, Y, X) stack, yielding (done, total) over all
        windows of all frames (so a GUI worker can show progress and cancel between
        batches); returns an :class:`OverlapResult`."""
        frames, stack = split_frames(image)
        n, (h, w) = len(frames), frames.shape[1:3]
        work_shape = self.working_shape((h, w))
        per_frame = count_windows(work_shape, self.window, self.overlap, self.config.multiple)
        total = n * per_frame
        probs = {head: np.zeros((n, h, w), np.float32) for head in self.heads}
        for t, frame in enumerate(frames):
            grey = normalise_percentiles(_grey(frame, t, stack), self.percentiles)
            if work_shape != (h, w):
                grey = resize_map(grey, work_shape)
            work = iter_sliding_window(grey, self._run_windows, self.window, self.overlap,
                                       batch=self.batch_size, multiple=self.config.multiple)
            while True:
                try:
                    done, _ = next(work)
                except StopIteration as stop:
                    maps = stop.value
                    break
                yield t * per_frame + done, total
            for head in self.heads:
                probs[head][t] = (maps[head] if work_shape == (h, w)
                                  else np.clip(resize_map(maps[head], (h, w)), 0.0, 1.0))
        if not stack:
            probs = {k: v[0] for k, v in probs.items()}
        overlap_mask = (probs["overlap"] >= self.thresholds["overlap"]
                        if "overlap" in probs else None)
        return OverlapResult(probabilities=probs, overlap_mask=overlap_mask,
                             thresholds=dict(self.thresholds), device_name=self.device_name,
                             model=self.entry.name, is_stack=stack,
                             meta={"window": self.window, "overlap": self.overlap,
                                   "scale": self.scale,
                                   "percentiles": list(self.percentiles)})

    def predict(self, image: np.ndarray, progress: Callable[[int, int], None] | None = None
                ) -> OverlapResult:
        """Probability maps of a frame or a stack (``progress(done, total)`` per batch)."""
        return run_with_progress(self.iter_predict(image), progress)


def predict_overlap(image: np.ndarray, model: str = DEFAULT_MODEL, device: str = "auto",
                    window: int = 512, overlap: int = 256, batch_size: int = 4,
                    progress: Callable[[int, int], None] | None = None) -> OverlapResult:
    """One-call overlap maps of a frame or a (T, Y, X) stack (see :class:`OverlapPredictor`)."""
    predictor = OverlapPredictor(model, device=device, window=window, overlap=overlap,
                                 batch_size=batch_size)
    return predictor.predict(image, progress=progress)
