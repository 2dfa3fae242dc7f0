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
     "postprocess": {"score_threshold": 0.3, "mask_threshold": 0.5, "nms_iou": 0.8,
                     "largest_component": true}}

Post-processing (section 4.5.3): mask probability m = sigmoid(mask logit), binary mask
m >= ``mask_threshold``; score s = class probability x maskness (the mean of m inside the
binary mask), times sigmoid(IoU logit) when the model has the IoU-objectness head
(section 5.7.3; ``use_iou=False`` leaves it out). Predictions scoring under
``score_threshold`` or with an empty mask are dropped. The one-to-one matching makes
duplicates rare, so NMS is optional: with ``nms_iou`` set, a mask whose IoU with a
higher-scoring kept mask exceeds it is dropped (mask NMS; None turns it off). With
``largest_component`` (our addition, on by default; measured in docs/benchmarks.md) each
mask keeps only its largest connected piece: a cell is one piece, and the dot-product masks
can leave small specks on other cells.

Image size: a frame whose working size (after ``scale``) is at most ``max_side`` px per side
(the card's ``inference.max_side``, else 1024) runs whole, in one pass (reflect-padded to the network's multiple). A larger frame
is cut into ``max_side`` windows overlapping by ``tile_overlap`` px (card
``inference.tile_overlap``, else 256)
(:mod:`blastoseg.predict.tiling`): the head maps are averaged where windows overlap, and the
instances come from the windows, merged by mask NMS - an instance cut by a window edge that
lies inside the image is set aside while whole instances are kept (best score first; one is
dropped when its IoU with a kept one exceeds ``tile_merge_iou``, 0.5, a duplicate from a
neighbouring window), then a set-aside one is added only if at most half of it is covered by
instances already kept (so a cell larger than the overlap, cut in every window, still comes
out, as its largest part). Make ``tile_overlap`` larger than the biggest cell.

Why the card sets the window: the N instance activation maps are learnt on frames of the
training crop's size (with coordinate channels normalised to the frame), so each map
"covers" a share of a frame holding a handful of cells. On a frame four times larger, each
share holds four times as many cells and most are missed: ``brightfield-default``
(trained on 128 px working frames) found 8 of 21 cells per 1024 px scene run whole (mAP
0.169) and 20 of 21 in 128 px windows overlapping by 64 (mAP 0.469; docs/benchmarks.md).
The training task therefore writes ``inference = {"max_side": crop, "tile_overlap":
crop // 2}`` into new cards.
The masks of a large frame are full-size arrays, so memory grows with pixels x cells.

Inputs: as :class:`~blastoseg.predict.overlap.OverlapPredictor` (a 2D frame, grey RGB,
(T, Y, X) stacks; any real dtype; at least 8 px per side). A stack gives a list of
FrameInstances, one per frame.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from contextlib import nullcontext

import numpy as np
import torch
import torch.nn.functional as F

from blastoseg.errors import BlastosegError
from blastoseg.instances import FrameInstances
from blastoseg.models.seunet import SEUNetConfig
from blastoseg.predict.brightfield_post import (
    _Candidate,
    _candidates,
    _merge,
    _to_frame,
    decode_instances,
    select_predictions,
)
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
DEFAULT_POSTPROCESS = {"score_threshold": 0.3, "mask_threshold": 0.5, "nms_iou": 0.8,
                       "largest_component": True}
#: frames up to this working size (px per side) run whole; larger ones are tiled
MAX_SIDE = 1024
#: overlap of the windows of a tiled frame (working px) when the card sets none
DEFAULT_TILE_OVERLAP = 256
#: the IoU above which instances of neighbouring windows are the same cell
TILE_MERGE_IOU = 0.5


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
    largest_component
        Override the card's ``largest_component`` (default True): keep only each mask's
        largest connected piece.
    max_side
        Frames up to this working size per side run whole; larger ones are tiled in windows
        of this size (rounded down to the network's multiple). None: the card's
        ``inference.max_side`` (the training crop), else 1024.
    tile_overlap
        Overlap of the windows of a tiled frame in working pixels (larger than a cell).
        None: the card's ``inference.tile_overlap``, else 256.
    use_iou
        Multiply the score by the IoU-objectness when the model has that head.
    """

    def __init__(self, model: str = DEFAULT_MODEL, device: str = "auto",
                 score_threshold: float | None = None, mask_threshold: float | None = None,
                 nms_iou: float | bool | None = None, *,
                 largest_component: bool | None = None, max_side: int | None = None,
                 tile_overlap: int | None = None, use_iou: bool = True,
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
        if largest_component is not None:
            post["largest_component"] = largest_component
        if not isinstance(post["largest_component"], bool):
            raise BlastosegError(f"largest_component must be true or false, got "
                                 f"{post['largest_component']!r} (model {source})")
        self.largest_component = post["largest_component"]
        self.score_threshold = _unit(post["score_threshold"], "score_threshold", source)
        self.mask_threshold = _unit(post["mask_threshold"], "mask_threshold", source)
        self.nms_iou = _unit(post["nms_iou"], "nms_iou", source, allow_none=True)
        self.tile_merge_iou = _unit(tile_merge_iou, "tile_merge_iou")
        self.use_iou = bool(use_iou)
        inference = config.get("inference", {}) or {}
        if max_side is None:
            max_side = inference.get("max_side", MAX_SIDE)
        if tile_overlap is None:
            tile_overlap = inference.get("tile_overlap", DEFAULT_TILE_OVERLAP)
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
                "nms_iou": self.nms_iou, "largest_component": self.largest_component}

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
        masks = _to_frame(cands, work_shape, shape, self.mask_threshold,
                          one_piece=self.largest_component)
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
