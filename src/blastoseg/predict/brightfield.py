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

Model card layout (``card.config``, read by :class:`~blastoseg.predict.cards.BrightfieldCard`)::

    {"model": SparseSEUNetConfig.to_dict(),
     "preprocess": {"percentiles": [1, 99.8], "scale": 1.0},
     "postprocess": {"score_threshold": 0.3, "mask_threshold": 0.5, "mask_nms_iou": 0.8,
                     "largest_component": true},
     "inference": {"max_side": 128, "tile_overlap": 64}}

(older cards, ``brightfield-default`` among them, call the mask-NMS IoU ``nms_iou``; it is
read under either name.)

Post-processing (section 4.5.3): mask probability m = sigmoid(mask logit), binary mask
m >= ``mask_threshold``; score s = class probability x maskness (the mean of m inside the
binary mask), times sigmoid(IoU logit) when the model has the IoU-objectness head
(section 5.7.3; ``use_iou=False`` leaves it out). Predictions scoring under
``score_threshold`` or with an empty mask are dropped. The one-to-one matching makes
duplicates rare, so NMS is optional: with ``mask_nms_iou`` set, a mask whose IoU with a
higher-scoring kept mask exceeds it is dropped (mask NMS,
:func:`blastoseg.predict.mask_nms.mask_nms`; None turns it off). With
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
Memory: the result's masks are full-size (n, H, W) bool arrays, one byte per pixel per
cell; everything before them works per cell on its box (:func:`~blastoseg.predict.
brightfield_post.frame_crops`), so the result is the one allocation that grows with cells x
pixels. A frame whose per-pixel buffers (working frame, head maps, probability maps) cannot
fit in the free memory is refused before the network runs; while a tiled frame runs, the
cells found so far are counted, and once their masks alone could not fit the run stops with
a :class:`~blastoseg.errors.MemoryLimitError` saying so (cut the field into parts), as it
does before the masks are allocated (docs/reliability.md, issue 18 item 15).

Inputs: as :class:`~blastoseg.predict.overlap.OverlapPredictor` (a 2D frame, grey RGB,
(T, Y, X) stacks; any real dtype; at least 8 px per side). It follows the predictor contract
of :mod:`blastoseg.predict.base`: a frame gives FrameInstances, a stack a list of them (one
per frame), ``iter_predict`` streams them; ``done``/``total`` count network passes.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from blastoseg.errors import BlastosegError
from blastoseg.instances import FrameInstances
from blastoseg.io.frames import as_frames
from blastoseg.models.seunet import SEUNetConfig
from blastoseg.models.sparse_seunet import SparseSEUNet
from blastoseg.predict.base import PredictorBase, Step, load_predictor
from blastoseg.predict.brightfield_post import (
    _Candidate,
    _candidates,
    _merge,
    frame_crops,
    paste_crops,
    select_predictions,
)
from blastoseg.predict.cards import BrightfieldCard, check_non_negative_int, check_unit
from blastoseg.predict.memory import check_fits
from blastoseg.predict.overlap import (
    PercentileScaled,
    resize_map,
    working_frame,
    working_shape,
)
from blastoseg.predict.tiling import iter_sliding_window, window_grid

__all__ = ["TILE_MERGE_IOU", "BrightfieldPredictor", "predict_brightfield"]

#: the IoU above which instances of neighbouring windows are the same cell
TILE_MERGE_IOU = 0.5


# --- predictor ---------------------------------------------------------------------------------

class BrightfieldPredictor(PercentileScaled, PredictorBase):
    """A loaded SparseSEU-Net, ready to segment whole cells in brightfield frames.

    Parameters
    ----------
    model
        Registered model name of kind "brightfield" (see ``blastoseg models``), a
        ``.safetensors`` path with its ``.json`` card beside it or a training job folder;
        None: ``brightfield-default``.
    device
        "auto" (CUDA, then MPS, then CPU), "cpu", "cuda", "cuda:N" or "mps".
    score_threshold, mask_threshold, mask_nms_iou
        Override the card's post-processing (0.3, 0.5, 0.8 by default); ``mask_nms_iou=False``
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
    tile_merge_iou
        Two instances from neighbouring windows overlapping more are one cell.
    """

    kind = "brightfield"
    card: BrightfieldCard

    def __init__(self, model: str | None = None, device: str = "auto",
                 score_threshold: float | None = None, mask_threshold: float | None = None,
                 mask_nms_iou: float | bool | None = None, *,
                 largest_component: bool | None = None, max_side: int | None = None,
                 tile_overlap: int | None = None, use_iou: bool = True,
                 tile_merge_iou: float = TILE_MERGE_IOU) -> None:
        super().__init__(model, device)
        card, source = self.card, self.entry.name
        self.score_threshold = check_unit(
            card.score_threshold if score_threshold is None else score_threshold,
            "score_threshold", source)
        self.mask_threshold = check_unit(
            card.mask_threshold if mask_threshold is None else mask_threshold,
            "mask_threshold", source)
        if mask_nms_iou is None:
            mask_nms_iou = card.mask_nms_iou
        self.mask_nms_iou = check_unit(None if mask_nms_iou is False else mask_nms_iou,
                                       "mask_nms_iou", source, allow_none=True)
        if largest_component is None:
            largest_component = card.largest_component
        if not isinstance(largest_component, bool):
            raise BlastosegError(f"largest_component must be true or false, got "
                                 f"{largest_component!r} (model {source})")
        self.largest_component = largest_component
        self.tile_merge_iou = check_unit(tile_merge_iou, "tile_merge_iou")
        self.use_iou = bool(use_iou)
        max_side = check_non_negative_int(card.max_side if max_side is None else max_side,
                                          "max_side")
        tile_overlap = check_non_negative_int(
            card.tile_overlap if tile_overlap is None else tile_overlap, "tile_overlap")
        m = self.seunet.multiple
        if max_side < m:
            raise BlastosegError(f"max_side must be at least {m} for this model (depth "
                                 f"{self.seunet.depth}); got {max_side}")
        self.max_side = max_side
        self.window = self.max_side // m * m
        if tile_overlap >= self.window:
            raise BlastosegError(f"tile_overlap ({tile_overlap}) must be smaller than the "
                                 f"window ({self.window})")
        self.tile_overlap = tile_overlap

    def build_model(self) -> SparseSEUNet:
        return SparseSEUNet(self.card.model)

    @property
    def seunet(self) -> SEUNetConfig:
        """The SE-U-Net part of the network's architecture."""
        return self.card.seunet

    @property
    def heads(self) -> tuple[str, ...]:
        return tuple(self.seunet.heads)

    @property
    def postprocess(self) -> dict:
        return {"score_threshold": self.score_threshold, "mask_threshold": self.mask_threshold,
                "mask_nms_iou": self.mask_nms_iou, "largest_component": self.largest_component}

    # geometry --------------------------------------------------------------------------
    def working_shape(self, shape: tuple[int, int]) -> tuple[int, int]:
        """The size a frame of ``shape`` is resized to before the model sees it."""
        return working_shape(shape, self.scale)

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
        """How many network passes ``predict(image)`` makes (all frames)."""
        frames, _ = as_frames(image)
        return len(frames) * self._passes_per_frame(frames.shape[1:3])

    def _passes_per_frame(self, shape: tuple[int, int]) -> int:
        work = self.working_shape(shape)
        window, overlap = self._tiling(work)
        return len(window_grid(work, window, overlap, self.seunet.multiple)[2])

    # running ---------------------------------------------------------------------------
    def _forward(self, windows: np.ndarray):
        """Network outputs of (B, 1, h, w) windows; mask logits at the branch resolution."""
        x = torch.from_numpy(np.ascontiguousarray(windows, np.float32)).to(self.device)
        if self.seunet.in_channels != x.shape[1]:
            x = x[:, :1].expand(-1, self.seunet.in_channels, -1, -1)
        with self.inference():
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
        stride = max(window - overlap, 1)
        coverage = -(-win_h // stride) * -(-win_w // stride)  # windows over one pixel, at most
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
                    mask_threshold=self.mask_threshold, mask_nms_iou=self.mask_nms_iou,
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
            if tiled:  # stop as soon as the cells found so far cannot fit
                self._check_masks_fit(len(cands) // coverage, shape, "at least ")
            return {k: torch.sigmoid(v.float())[:, 0].cpu().numpy()
                    for k, v in out.heads.items()}

        maps = yield from iter_sliding_window(grey, run, window, overlap, batch=1, multiple=m)
        if tiled:
            cands = _merge(cands, self.tile_merge_iou)
        crops = frame_crops(cands, work_shape, shape, self.mask_threshold,
                            one_piece=self.largest_component)
        keep = [k for k, crop in enumerate(crops) if crop is not None]
        self._check_masks_fit(len(keep), shape)
        masks = paste_crops([crops[k] for k in keep], shape)
        del crops
        maps = {k: (v if work_shape == shape else np.clip(resize_map(v, shape), 0.0, 1.0))
                for k, v in maps.items() if k in ("nuclei", "overlap")}
        return FrameInstances(
            masks=masks,
            class_ids=np.array([cands[k].label + 1 for k in keep], np.int64),
            scores=np.array([cands[k].score for k in keep], np.float32),
            occlusion=maps.get("overlap"),
            meta={**maps, "model": self.entry.name, "scale": self.scale, "tiled": tiled,
                  "device": self.device_name})

    # memory ----------------------------------------------------------------------------
    def frame_bytes(self, shape: tuple[int, int]) -> int:
        """Bytes a frame of ``shape`` needs besides its cells' masks: the float32 working
        frame and its padded copy, the window counts and one running sum per head (and the
        averaged maps), the nuclei/overlap maps at the input size and their resize."""
        wh, ww = self.working_shape(shape)
        work = (wh + 2 * self.window) * (ww + 2 * self.window)
        return 4 * (work * (3 + 2 * len(self.heads)) + 4 * shape[0] * shape[1])

    def _check_masks_fit(self, cells: int, shape: tuple[int, int], at_least: str = "") -> None:
        h, w = shape
        check_fits(cells * h * w, f"a {h} x {w} frame with {at_least}{cells} cells (their "
                   "masks take one byte per pixel per cell)",
                   "segment the field in smaller parts (crop it) and combine the results")

    def run_frames(self, frames: Sequence[np.ndarray]) -> Iterator[Step]:
        """Each frame whole or in windows: one step per network pass (``done``/``total``
        count passes over all frames). A frame whose buffers cannot fit is refused before
        the first pass (:meth:`frame_bytes`)."""
        n = len(frames)
        shape = getattr(frames, "shape", None)  # a stack's (a lazy one is not read here)
        sizes = ([tuple(int(v) for v in shape[1:3])] * n if shape is not None and len(shape) > 2
                 else [tuple(int(v) for v in np.shape(f)[:2]) for f in frames])
        for size in sorted(set(sizes), key=lambda s: -s[0] * s[1])[:1]:
            check_fits(self.frame_bytes(size) + size[0] * size[1],
                       f"brightfield segmentation of a {size[0]} x {size[1]} frame",
                       "segment the field in smaller parts (crop it) and combine the results")
        counts = [self._passes_per_frame(size) for size in sizes]
        total, before = sum(counts), 0
        for t, frame in enumerate(frames):
            grey = working_frame(frame, t if n > 1 else None, self.percentiles, self.scale)
            work = self._frame(grey, sizes[t])
            while True:
                try:
                    done, _ = next(work)
                except StopIteration as stop:
                    result = stop.value
                    break
                if done < counts[t]:  # the frame's last step comes with its result
                    yield before + done, total, []
            before += counts[t]
            yield before, total, [(t, result)]


def predict_brightfield(image: np.ndarray, model: str | None = None, device: str = "auto",
                        progress: Callable[[int, int], None] | None = None, **options
                        ) -> FrameInstances | list[FrameInstances]:
    """One-call brightfield instances of a frame or a (T, Y, X) stack (a list); ``options``
    go to :class:`BrightfieldPredictor`, and the loaded model is kept between calls
    (:func:`~blastoseg.predict.base.load_predictor`)."""
    predictor = load_predictor(model, device, kind="brightfield", **options)
    return predictor.predict(image, progress)
