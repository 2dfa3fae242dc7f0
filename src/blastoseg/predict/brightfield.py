"""Brightfield cell instances: SparseSEU-Net weights + normalisation -> overlapping whole-cell
masks (S4, Prytula 2023, sections 4.5.1-4.5.4).

:class:`BrightfieldPredictor` loads a registered model of kind ``"brightfield"`` (a
:class:`~blastoseg.models.sparse_seunet.SparseSEUNet`), normalises each frame to [0, 1]
with its own percentiles (1, 99.8), resizes it by the card's ``preprocess.scale`` (the
working resolution the model was trained at), runs the network and returns a
:class:`~blastoseg.instances.FrameInstances` per frame: AMODAL masks at the input's size
(they overlap where cells overlap), scores, ``class_ids`` (class index + 1; 1 = cell),
``occlusion`` = the overlap head's probability map and ``meta["nuclei"]`` /
``meta["overlap"]`` = the nuclei / overlap probability maps when the model has those heads.

Model card layout (``card.config``)::

    {"model": SparseSEUNetConfig.to_dict(),
     "preprocess": {"percentiles": [1, 99.8], "scale": 1.0},
     "postprocess": {"score_threshold": 0.3, "mask_threshold": 0.5, "nms_iou": 0.8}}

Post-processing (section 4.5.3): mask probability m = sigmoid(mask logit), binary mask
m >= ``mask_threshold``; score s = class probability x maskness (the mean of m inside the
binary mask), times sigmoid(IoU logit) when the model has the IoU-objectness head
(section 5.7.3; ``use_iou=False`` leaves it out). Predictions scoring under
``score_threshold`` or with an empty mask are dropped. The one-to-one matching makes
duplicates rare, so NMS is optional: with ``nms_iou`` set, a mask whose IoU with a
higher-scoring kept mask exceeds it is dropped (mask NMS; None turns it off).

Image size: a frame whose working size (after ``scale``) is at most ``max_side`` (1024) px
per side runs whole, in one pass (reflect-padded to the network's multiple). A larger frame
is cut into ``max_side`` windows overlapping by ``tile_overlap`` px
(:mod:`blastoseg.predict.tiling`): the head maps are averaged where windows overlap, and the
instances come from the windows, merged by mask NMS - an instance cut by a window edge that
lies inside the image is set aside while whole instances are kept (best score first; one is
dropped when its IoU with a kept one exceeds ``tile_merge_iou``, 0.5, a duplicate from a
neighbouring window), then a set-aside one is added only if at most half of it is covered by
instances already kept (so a cell larger than the overlap, cut in every window, still comes
out, as its largest part). Make ``tile_overlap`` larger than the biggest cell.
The masks of a large frame are full-size arrays, so memory grows with pixels x cells.

Inputs: as :class:`~blastoseg.predict.overlap.OverlapPredictor` (a 2D frame, grey RGB,
(T, Y, X) stacks; any real dtype; at least 8 px per side). A stack gives a list of
FrameInstances, one per frame.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from blastoseg.errors import BlastosegError
from blastoseg.instances import FrameInstances
from blastoseg.models.seunet import SEUNetConfig
from blastoseg.predict.device import describe_device, resolve_device
from blastoseg.predict.overlap import (
    MIN_SIDE,
    _grey,
    card_preprocess,
    normalise_percentiles,
    resize_map,
    split_frames,
)
from blastoseg.predict.tiling import iter_sliding_window, window_grid
from blastoseg.progress import run_with_progress
from blastoseg.weights import ModelEntry, WeightsError, load_into_model, resolve_model

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_POSTPROCESS",
    "KIND",
    "MAX_SIDE",
    "BrightfieldPredictor",
    "decode_instances",
    "predict_brightfield",
    "select_predictions",
]

KIND = "brightfield"
DEFAULT_MODEL = "brightfield-default"
DEFAULT_POSTPROCESS = {"score_threshold": 0.3, "mask_threshold": 0.5, "nms_iou": 0.8}
#: frames up to this working size (px per side) run whole; larger ones are tiled
MAX_SIDE = 1024
#: the IoU above which instances of neighbouring windows are the same cell
TILE_MERGE_IOU = 0.5
_MARGIN = 2  # working px kept around a mask's box (bilinear resize reaches 1 px beyond it)


def seunet_config_of(config) -> SEUNetConfig:
    """The SE-U-Net config inside a SparseSEUNetConfig (stored as an object or a dict)."""
    if isinstance(getattr(config, "seunet_config", None), SEUNetConfig):
        return config.seunet_config
    s = getattr(config, "seunet", None)
    if isinstance(s, SEUNetConfig):
        return s
    return SEUNetConfig.from_dict(dict(s or {}))


def _unit(value, name: str, source: str = "", *, allow_none: bool = False) -> float | None:
    if value is None and allow_none:
        return None
    if (isinstance(value, bool) or not isinstance(value, (int, float, np.floating))
            or not 0.0 <= float(value) <= 1.0):
        where = f" (model {source})" if source else ""
        none = " or None" if allow_none else ""
        raise BlastosegError(f"{name} must be a number in [0, 1]{none}, got {value!r}{where}")
    return float(value)


# --- post-processing ---------------------------------------------------------------------------

def _nms_order(binary: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy mask NMS on (n, h, w) bool masks already sorted by score: kept indices."""
    n = binary.shape[0]
    if n <= 1:
        return torch.arange(n, device=binary.device)
    flat = binary.reshape(n, -1).float()
    inter = flat @ flat.T
    area = flat.sum(dim=1)
    iou = inter / (area[:, None] + area[None, :] - inter).clamp_min(1.0)
    keep = torch.ones(n, dtype=torch.bool, device=binary.device)
    for i in range(n):
        if keep[i]:
            later = iou[i] > iou_threshold
            later[: i + 1] = False
            keep &= ~later
    return torch.nonzero(keep).flatten()


def select_predictions(class_logits: torch.Tensor, mask_logits: torch.Tensor,
                       iou_logits: torch.Tensor | None = None, *,
                       score_threshold: float = 0.3, mask_threshold: float = 0.5,
                       nms_iou: float | None = 0.8, use_iou: bool = True
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The predictions of ONE image that pass the post-processing (module docstring).

    Parameters
    ----------
    class_logits
        (N, K) class logits (sigmoid, focal-loss style: no background column).
    mask_logits
        (N, h, w) mask logits at any resolution (the predictor scores them at the
        branch resolution and up-samples only the kept ones).
    iou_logits
        (N,) IoU-objectness logits or None.

    Returns
    -------
    indices (n,) into the N predictions, scores (n,), labels (n,) int64 (0-based class
    index); best score first.
    """
    cls_score, labels = torch.sigmoid(class_logits.float()).max(dim=-1)
    prob = torch.sigmoid(mask_logits.float())
    binary = prob >= mask_threshold
    area = binary.flatten(1).sum(dim=1)
    maskness = (prob * binary).flatten(1).sum(dim=1) / area.clamp_min(1)
    scores = cls_score * maskness
    if iou_logits is not None and use_iou:
        scores = scores * torch.sigmoid(iou_logits.float().reshape(-1))
    keep = torch.nonzero((scores >= score_threshold) & (area > 0)).flatten()
    keep = keep[torch.argsort(scores[keep], descending=True)]
    if nms_iou is not None and len(keep) > 1:
        keep = keep[_nms_order(binary[keep], float(nms_iou))]
    return keep, scores[keep], labels[keep]


def decode_instances(class_logits: torch.Tensor, mask_logits: torch.Tensor,
                     iou_logits: torch.Tensor | None = None, *, score_threshold: float = 0.3,
                     mask_threshold: float = 0.5, nms_iou: float | None = 0.8,
                     use_iou: bool = True) -> FrameInstances:
    """:func:`select_predictions` as FrameInstances at the logits' resolution (binary masks
    ``sigmoid(logit) >= mask_threshold``, ``class_ids`` = class index + 1)."""
    keep, scores, labels = select_predictions(
        class_logits, mask_logits, iou_logits, score_threshold=score_threshold,
        mask_threshold=mask_threshold, nms_iou=nms_iou, use_iou=use_iou)
    masks = torch.sigmoid(mask_logits[keep].float()) >= mask_threshold
    return FrameInstances(masks=masks.cpu().numpy(), class_ids=(labels + 1).cpu().numpy(),
                          scores=scores.cpu().numpy())


# --- candidates in frame coordinates ----------------------------------------------------------

@dataclass
class _Candidate:
    """One predicted instance: its mask probability on a box of the working frame."""

    score: float
    label: int
    y0: int
    x0: int
    prob: np.ndarray  # (h, w) float32 on rows y0.., cols x0.. of the working frame
    binary: np.ndarray  # prob >= mask threshold
    truncated: bool = False

    def overlap(self, other: _Candidate) -> int:
        ya, yb = max(self.y0, other.y0), min(self.y0 + self.binary.shape[0],
                                              other.y0 + other.binary.shape[0])
        xa, xb = max(self.x0, other.x0), min(self.x0 + self.binary.shape[1],
                                              other.x0 + other.binary.shape[1])
        if ya >= yb or xa >= xb:
            return 0
        a = self.binary[ya - self.y0:yb - self.y0, xa - self.x0:xb - self.x0]
        b = other.binary[ya - other.y0:yb - other.y0, xa - other.x0:xb - other.x0]
        return int(np.count_nonzero(a & b))

    @property
    def area(self) -> int:
        return int(np.count_nonzero(self.binary))


def _candidates(scores, labels, prob: torch.Tensor, threshold: float, oy: int, ox: int,
                edges: tuple[bool, bool, bool, bool] = (False, False, False, False)
                ) -> list[_Candidate]:
    """Box-cropped candidates of one window; ``edges`` = (top, bottom, left, right) window
    sides that lie inside the frame (an instance touching one is ``truncated``)."""
    out = []
    probs = prob.cpu().numpy()
    h, w = probs.shape[1:]
    for s, lab, p in zip(scores.tolist(), labels.tolist(), probs, strict=True):
        b = p >= threshold
        rows, cols = np.flatnonzero(b.any(axis=1)), np.flatnonzero(b.any(axis=0))
        if not len(rows):
            continue
        y0, y1 = max(rows[0] - _MARGIN, 0), min(rows[-1] + 1 + _MARGIN, h)
        x0, x1 = max(cols[0] - _MARGIN, 0), min(cols[-1] + 1 + _MARGIN, w)
        top, bottom, left, right = edges
        truncated = ((top and rows[0] == 0) or (bottom and rows[-1] == h - 1)
                     or (left and cols[0] == 0) or (right and cols[-1] == w - 1))
        out.append(_Candidate(float(s), int(lab), int(y0 + oy), int(x0 + ox),
                              np.ascontiguousarray(p[y0:y1, x0:x1]),
                              np.ascontiguousarray(b[y0:y1, x0:x1]), bool(truncated)))
    return out


def _merge(cands: list[_Candidate], merge_iou: float) -> list[_Candidate]:
    """Tiled frames: whole instances by mask NMS, then cut ones not already covered."""
    whole = sorted((c for c in cands if not c.truncated), key=lambda c: -c.score)
    cut = sorted((c for c in cands if c.truncated), key=lambda c: (-c.area, -c.score))
    kept: list[_Candidate] = []
    for c in whole:
        area = c.area
        if all(c.overlap(k) / max(area + k.area - c.overlap(k), 1) <= merge_iou for k in kept):
            kept.append(c)
    for c in cut:
        area = max(c.area, 1)
        covered = sum(c.overlap(k) for k in kept)  # upper bound of the covered pixels
        if covered / area <= 0.5:
            kept.append(c)
    return sorted(kept, key=lambda c: -c.score)


def _to_frame(cands: list[_Candidate], work_shape: tuple[int, int], shape: tuple[int, int],
              threshold: float) -> np.ndarray:
    """(n, H, W) bool masks at the input size from candidates on the working frame."""
    h, w = shape
    masks = np.zeros((len(cands), h, w), bool)
    if work_shape == shape:
        for k, c in enumerate(cands):
            ch, cw = c.binary.shape
            masks[k, c.y0:c.y0 + ch, c.x0:c.x0 + cw] = c.binary
        return masks
    sy, sx = work_shape[0] / h, work_shape[1] / w
    for k, c in enumerate(cands):
        ch, cw = c.prob.shape
        # input pixel Y sits at working coordinate (Y + 0.5) * sy - 0.5 (pixel centres);
        # a box at the frame's edge extends to the edge (nearest value beyond the centres)
        y_lo = 0 if c.y0 == 0 else max(int(np.ceil((c.y0 + 0.5) / sy - 0.5)), 0)
        y_hi = h if c.y0 + ch >= work_shape[0] else \
            min(int(np.floor((c.y0 + ch - 0.5) / sy - 0.5)) + 1, h)
        x_lo = 0 if c.x0 == 0 else max(int(np.ceil((c.x0 + 0.5) / sx - 0.5)), 0)
        x_hi = w if c.x0 + cw >= work_shape[1] else \
            min(int(np.floor((c.x0 + cw - 0.5) / sx - 0.5)) + 1, w)
        if y_lo >= y_hi or x_lo >= x_hi:
            continue
        yy = (np.arange(y_lo, y_hi) + 0.5) * sy - 0.5 - c.y0
        xx = (np.arange(x_lo, x_hi) + 0.5) * sx - 0.5 - c.x0
        grid = np.meshgrid(yy, xx, indexing="ij")
        values = ndimage.map_coordinates(c.prob, grid, order=1, mode="nearest")
        masks[k, y_lo:y_hi, x_lo:x_hi] = values >= threshold
    return masks


# --- predictor ---------------------------------------------------------------------------------

class BrightfieldPredictor:
    """A loaded SparseSEU-Net, ready to segment whole cells in brightfield frames.

    Parameters
    ----------
    model
        Registered model name of kind "brightfield" (see ``blastoseg models``) or a
        ``.safetensors`` path with its ``.json`` card beside it.
    device
        "auto" (CUDA, then MPS, then CPU), "cpu", "cuda", "cuda:N" or "mps".
    score_threshold, mask_threshold, nms_iou
        Override the card's post-processing (0.3, 0.5, 0.8 by default); ``nms_iou=False``
        turns mask NMS off.
    max_side
        Frames up to this working size per side run whole; larger ones are tiled in windows
        of this size (rounded down to the network's multiple).
    tile_overlap
        Overlap of the windows of a tiled frame in working pixels (larger than a cell).
    use_iou
        Multiply the score by the IoU-objectness when the model has that head.
    """

    def __init__(self, model: str = DEFAULT_MODEL, device: str = "auto",
                 score_threshold: float | None = None, mask_threshold: float | None = None,
                 nms_iou: float | bool | None = None, *, max_side: int = MAX_SIDE,
                 tile_overlap: int = 256, use_iou: bool = True,
                 tile_merge_iou: float = TILE_MERGE_IOU) -> None:
        from blastoseg.models.sparse_seunet import SparseSEUNet, SparseSEUNetConfig

        self.entry: ModelEntry = resolve_model(model, kind=KIND)
        source = self.entry.name
        config = self.entry.card.config or {}
        try:
            self.config = SparseSEUNetConfig.from_dict(dict(config.get("model", {}) or {}))
            self.seunet = seunet_config_of(self.config)
        except (BlastosegError, TypeError, ValueError) as exc:
            raise WeightsError(f"model card of {source}: {exc}") from None
        self.percentiles, self.scale = card_preprocess(config, source)
        post = {**DEFAULT_POSTPROCESS, **(config.get("postprocess", {}) or {})}
        if score_threshold is not None:
            post["score_threshold"] = score_threshold
        if mask_threshold is not None:
            post["mask_threshold"] = mask_threshold
        if nms_iou is not None:
            post["nms_iou"] = None if nms_iou is False else nms_iou
        self.score_threshold = _unit(post["score_threshold"], "score_threshold", source)
        self.mask_threshold = _unit(post["mask_threshold"], "mask_threshold", source)
        self.nms_iou = _unit(post["nms_iou"], "nms_iou", source, allow_none=True)
        self.tile_merge_iou = _unit(tile_merge_iou, "tile_merge_iou")
        self.use_iou = bool(use_iou)
        m = self.seunet.multiple
        for name, value in (("max_side", max_side), ("tile_overlap", tile_overlap)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise BlastosegError(f"{name} must be a non-negative integer, got {value!r}")
        if max_side < m:
            raise BlastosegError(f"max_side must be at least {m} for this model (depth "
                                 f"{self.seunet.depth}); got {max_side}")
        self.max_side = int(max_side)
        self.window = self.max_side // m * m
        if tile_overlap >= self.window:
            raise BlastosegError(f"tile_overlap ({tile_overlap}) must be smaller than the "
                                 f"window ({self.window})")
        self.tile_overlap = int(tile_overlap)
        self.device = resolve_device(device)
        self.device_name = describe_device(self.device)
        net = SparseSEUNet(self.config)
        load_into_model(net, self.entry.weights_path, card=self.entry.card.to_dict(),
                        expected_kind=KIND)
        self.model = net.to(self.device).eval()

    @property
    def heads(self) -> tuple[str, ...]:
        return tuple(self.seunet.heads)

    @property
    def postprocess(self) -> dict:
        return {"score_threshold": self.score_threshold, "mask_threshold": self.mask_threshold,
                "nms_iou": self.nms_iou}

    # geometry --------------------------------------------------------------------------
    def working_shape(self, shape: tuple[int, int]) -> tuple[int, int]:
        """The size a frame of ``shape`` is resized to before the model sees it."""
        if self.scale == 1.0:
            return int(shape[0]), int(shape[1])
        return (max(round(shape[0] * self.scale), MIN_SIDE),
                max(round(shape[1] * self.scale), MIN_SIDE))

    def _tiling(self, work_shape: tuple[int, int]) -> tuple[int, int]:
        """(window, overlap) for a working frame: one window covering it, or tiles."""
        m = self.seunet.multiple
        if max(work_shape) <= self.max_side:
            return -(-max(work_shape) // m) * m, 0
        return self.window, self.tile_overlap

    def is_tiled(self, shape: tuple[int, int]) -> bool:
        """Whether a frame of ``shape`` (input pixels) is cut into windows."""
        return max(self.working_shape(shape)) > self.max_side

    def count_windows(self, image: np.ndarray) -> int:
        """How many network passes :meth:`iter_predict` makes for this input (all frames)."""
        frames, _ = split_frames(image)
        work = self.working_shape(frames.shape[1:3])
        window, overlap = self._tiling(work)
        return len(frames) * len(window_grid(work, window, overlap, self.seunet.multiple)[2])

    # running ---------------------------------------------------------------------------
    def _forward(self, windows: np.ndarray):
        """Network outputs of (B, 1, h, w) windows; mask logits at the branch resolution."""
        x = torch.from_numpy(np.ascontiguousarray(windows, np.float32)).to(self.device)
        if self.seunet.in_channels != x.shape[1]:
            x = x[:, :1].expand(-1, self.seunet.in_channels, -1, -1)
        amp = (torch.autocast("cuda", dtype=torch.float16) if self.device.type == "cuda"
               else nullcontext())
        with torch.inference_mode(), amp:
            return self.model(x, upsample_masks=False)

    def _frame(self, grey: np.ndarray, shape: tuple[int, int]
               ) -> Generator[tuple[int, int], None, FrameInstances]:
        """One normalised working frame -> FrameInstances at ``shape``."""
        work_shape = grey.shape
        h, w = work_shape
        m = self.seunet.multiple
        window, overlap = self._tiling(work_shape)
        (win_h, win_w), (pad_h, pad_w), starts = window_grid(work_shape, window, overlap, m)
        before_y, before_x = (pad_h - h) // 2, (pad_w - w) // 2
        tiled = len(starts) > 1
        cands: list[_Candidate] = []
        seen = [0]

        def run(windows: np.ndarray) -> dict[str, np.ndarray]:
            out = self._forward(windows)
            iou = getattr(out, "iou_logits", None)
            stride = int(getattr(out, "mask_stride", 1))
            for b in range(windows.shape[0]):
                y, x = starts[seen[0]]
                seen[0] += 1
                # the window's part inside the frame (windows cover padding only when the
                # frame is smaller than a window)
                vy0, vy1 = max(before_y - y, 0), min(before_y + h - y, win_h)
                vx0, vx1 = max(before_x - x, 0), min(before_x + w - x, win_w)
                # score at the branch resolution, up-sample only the kept masks
                keep, scores, labels = select_predictions(
                    out.class_logits[b], out.mask_logits[b],
                    None if iou is None else iou[b], score_threshold=self.score_threshold,
                    mask_threshold=self.mask_threshold, nms_iou=self.nms_iou,
                    use_iou=self.use_iou)
                logits = out.mask_logits[b, keep].float()
                if stride > 1 and len(keep):
                    logits = F.interpolate(logits[None], size=(win_h, win_w), mode="bilinear",
                                           align_corners=False)[0]
                prob = torch.sigmoid(logits[:, vy0:vy1, vx0:vx1])
                edges = (y > 0, y + win_h < pad_h, x > 0, x + win_w < pad_w) if tiled \
                    else (False, False, False, False)
                cands.extend(_candidates(scores, labels, prob, self.mask_threshold,
                                         y + vy0 - before_y, x + vx0 - before_x, edges))
            return {k: torch.sigmoid(v.float())[:, 0].cpu().numpy()
                    for k, v in out.heads.items()}

        maps = yield from iter_sliding_window(grey, run, window, overlap, batch=1, multiple=m)
        if tiled:
            cands = _merge(cands, self.tile_merge_iou)
        masks = _to_frame(cands, work_shape, shape, self.mask_threshold)
        nonempty = masks.reshape(len(masks), -1).any(axis=1) if len(masks) else \
            np.zeros(0, bool)
        maps = {k: (v if work_shape == shape else np.clip(resize_map(v, shape), 0.0, 1.0))
                for k, v in maps.items() if k in ("nuclei", "overlap")}
        keep = np.flatnonzero(nonempty)
        return FrameInstances(
            masks=masks[keep],
            class_ids=np.array([cands[k].label + 1 for k in keep], np.int64),
            scores=np.array([cands[k].score for k in keep], np.float32),
            occlusion=maps.get("overlap"),
            meta={**maps, "model": self.entry.name, "scale": self.scale, "tiled": tiled,
                  "device": self.device_name})

    def iter_predict(self, image: np.ndarray) -> Generator[
            tuple[int, int], None, FrameInstances | list[FrameInstances]]:
        """Instances of a frame or a (T, Y, X) stack, yielding (done, total) over the network
        passes of all frames (a GUI worker can show progress and cancel between them);
        returns FrameInstances for a frame, a list of them for a stack."""
        frames, stack = split_frames(image)
        shape = tuple(int(v) for v in frames.shape[1:3])
        work_shape = self.working_shape(shape)
        window, overlap = self._tiling(work_shape)
        per_frame = len(window_grid(work_shape, window, overlap, self.seunet.multiple)[2])
        total = len(frames) * per_frame
        results = []
        for t, frame in enumerate(frames):
            grey = normalise_percentiles(_grey(frame, t, stack), self.percentiles)
            if work_shape != shape:
                grey = resize_map(grey, work_shape)
            work = self._frame(grey, shape)
            while True:
                try:
                    done, _ = next(work)
                except StopIteration as stop:
                    result = stop.value
                    break
                yield t * per_frame + done, total
            if stack:
                result.meta["frame"] = t
            results.append(result)
        return results if stack else results[0]

    def predict(self, image: np.ndarray, progress: Callable[[int, int], None] | None = None
                ) -> FrameInstances | list[FrameInstances]:
        """Instances of a frame or a stack (``progress(done, total)`` per network pass)."""
        return run_with_progress(self.iter_predict(image), progress)


def predict_brightfield(image: np.ndarray, model: str = DEFAULT_MODEL, device: str = "auto",
                        progress: Callable[[int, int], None] | None = None, **kwargs
                        ) -> FrameInstances | list[FrameInstances]:
    """One-call brightfield instances (see :class:`BrightfieldPredictor`)."""
    return BrightfieldPredictor(model, device=device, **kwargs).predict(image, progress)
