"""Amodal blastomere segmentation: weights + framing + model -> FrameInstances.

Each frame is normalised, the embryo is located and cropped to the model's working
resolution (the same framing training used), the detector runs batched under
``torch.inference_mode`` (mixed precision on CUDA), and masks, scores and the occlusion map
are mapped back to the original frame. Visible (modal) masks are derived from the amodal
ones: a pixel covered by several cells goes to the cell with the highest mask probability
there (ties: the higher score) - an approximation, since the detector predicts no depth order.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from contextlib import nullcontext

import numpy as np
import torch

from blastoseg.errors import InvalidImageError
from blastoseg.instances import FrameInstances
from blastoseg.models.amodal_config import AmodalConfig
from blastoseg.models.amodal_rcnn import AmodalMaskRCNN
from blastoseg.predict.device import describe_device, resolve_device
from blastoseg.predict.framing import DEFAULT_MARGIN, Framing, frame_for_model, to_grey
from blastoseg.predict.localise import choose_embryo_box
from blastoseg.progress import run_with_progress
from blastoseg.weights import ModelEntry, load_into_model, resolve_model

DEFAULT_MODEL = "amodal-default"


def frames_of(image: np.ndarray) -> tuple[list[np.ndarray], bool]:
    """Split an input into 2D frames; returns (frames, was_a_stack)."""
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[-1] in (3, 4) and arr.shape[0] > 4:
        return [arr], False  # (Y, X, C): one colour frame, to_grey makes it grey
    if arr.ndim == 2:
        return [arr], False
    if arr.ndim == 3:
        return list(arr), True
    if arr.ndim == 4:
        raise InvalidImageError(
            f"got a (T, Z, Y, X) stack of shape {arr.shape}: choose one focal plane first "
            "(e.g. image[:, z]) - the segmentation works on 2D frames")
    raise InvalidImageError(f"expected a 2D frame or a (T, Y, X) stack; got shape {arr.shape}")


def mask_nms(probs: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Indices kept by greedy non-maximum suppression on mask IoU (highest score first).

    Box NMS must stay lenient for amodal blastomeres (two stacked cells can share 90 % of
    their box), so duplicates of one cell are removed here, on the masks themselves.
    """
    if len(scores) == 0 or iou_threshold >= 1.0:
        return torch.arange(len(scores))
    binary = (probs >= 0.5).flatten(1).float()
    inter = binary @ binary.T
    area = binary.sum(1)
    iou = inter / (area[:, None] + area[None, :] - inter).clamp(min=1.0)
    order = torch.argsort(scores, descending=True)
    keep: list[int] = []
    for i in order.tolist():
        if all(float(iou[i, j]) <= iou_threshold for j in keep):
            keep.append(i)
    return torch.tensor(keep, dtype=torch.long)


def visible_from_amodal(probs: np.ndarray, scores: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Disjoint visible masks: each covered pixel goes to its most probable instance."""
    if len(masks) == 0:
        return masks.copy()
    key = np.where(masks, probs + 1e-3 * scores[:, None, None], -1.0)
    owner = key.argmax(axis=0)
    covered = masks.any(axis=0)
    return np.stack([(owner == i) & covered for i in range(len(masks))])


class AmodalPredictor:
    """A loaded amodal model, ready to segment frames.

    Parameters
    ----------
    model
        Registered model name (see ``blastoseg models``) or a ``.safetensors`` path with its
        ``.json`` card beside it.
    device
        "auto" (CUDA, then MPS, then CPU), "cpu", "cuda", "cuda:N" or "mps".
    score_threshold
        Detections below this score are dropped; None takes the model card's calibrated
        value (``postprocess.score_threshold``, else 0.5).
    mask_nms_iou
        Of two detections whose masks overlap more than this IoU, the lower-scored one is
        dropped; None takes the model card's value (``postprocess.mask_nms_iou``, else 0.8).
    batch_size
        Frames per forward pass.
    """

    def __init__(self, model: str = DEFAULT_MODEL, device: str = "auto",
                 score_threshold: float | None = None, batch_size: int = 4,
                 mask_nms_iou: float | None = None) -> None:
        self.entry: ModelEntry = resolve_model(model, kind="amodal")
        post = self.entry.card.config.get("postprocess", {})
        self.config = AmodalConfig.from_dict(self.entry.card.config.get("model", {}))
        self.device = resolve_device(device)
        self.device_name = describe_device(self.device)
        net = AmodalMaskRCNN(self.config)
        load_into_model(net, self.entry.weights_path, card=self.entry.card.to_dict(),
                        expected_kind="amodal")
        self.model = net.to(self.device).eval()
        #: the model card's calibrated cell threshold (what counting should use)
        self.calibrated_threshold = float(post.get("score_threshold", 0.5))
        self.score_threshold = float(score_threshold if score_threshold is not None
                                     else self.calibrated_threshold)
        self.mask_nms_iou = float(mask_nms_iou if mask_nms_iou is not None
                                  else post.get("mask_nms_iou", 0.8))
        self.batch_size = max(int(batch_size), 1)
        framing = self.entry.card.config.get("framing", {})
        self.use_localisation = bool(framing.get("use_localisation", True))
        self.margin = float(framing.get("margin", DEFAULT_MARGIN))

    def _run(self, crops: list[np.ndarray]) -> list[dict]:
        tensors = [torch.from_numpy(c)[None].to(self.device) for c in crops]
        amp = (torch.autocast("cuda", dtype=torch.float16) if self.device.type == "cuda"
               else nullcontext())
        with torch.inference_mode(), amp:
            return self.model(tensors)

    def _to_instances(self, out: dict, framing: Framing) -> FrameInstances:
        keep = torch.nonzero(out["scores"] >= self.score_threshold).flatten()
        kept = mask_nms(out["masks"][keep][:, 0].float(), out["scores"][keep].float(),
                        self.mask_nms_iou)
        keep = keep[kept.to(keep.device)]
        probs_small = out["masks"][keep][:, 0].float().cpu().numpy()
        scores = out["scores"][keep].float().cpu().numpy()
        occ = out.get("occlusion")
        occlusion = None if occ is None else framing.to_original(occ[0].float().cpu().numpy())
        shape = tuple(framing.image_shape[:2])
        if len(scores) == 0:
            return FrameInstances(masks=np.zeros((0, *shape), bool), visible_masks=np.zeros(
                (0, *shape), bool), occlusion=occlusion, meta={"embryo_box": framing.describe(),
                                                              "model": self.entry.name})
        probs = framing.to_original(probs_small)
        masks = probs >= 0.5
        nonempty = masks.reshape(len(masks), -1).any(axis=1)
        masks, probs, scores = masks[nonempty], probs[nonempty], scores[nonempty]
        return FrameInstances(
            masks=masks, scores=scores, visible_masks=visible_from_amodal(probs, scores, masks),
            occlusion=occlusion,
            meta={"embryo_box": framing.describe(), "model": self.entry.name},
        )

    def _frame_batch(self, chunk: Sequence[np.ndarray]) -> tuple[list[dict], list[Framing]]:
        crops, framings = [], []
        for frame in chunk:
            # one conversion per frame; it raises the clear errors (NaN, shape, size) and
            # frame_for_model raises for a constant frame
            grey = to_grey(frame)
            # exactly the framing training used (train/amodal_data.py)
            box = choose_embryo_box(grey, use_localisation=self.use_localisation)
            crop, framing = frame_for_model(grey, box, self.config.working_size,
                                            margin=self.margin)
            crops.append(crop)
            framings.append(framing)
        return self._run(crops), framings

    def raw_outputs(self, frames: Sequence[np.ndarray]) -> Generator[dict, None, None]:
        """The detector's outputs at the working resolution, one dict per frame, before any
        thresholding or NMS (for calibration)."""
        for start in range(0, len(frames), self.batch_size):
            outputs, _ = self._frame_batch(frames[start:start + self.batch_size])
            yield from outputs

    def iter_predict(self, frames: Sequence[np.ndarray],
                     on_result: Callable[[int, FrameInstances], None] | None = None
                     ) -> Generator[tuple[int, int], None, list[FrameInstances]]:
        """Segment frames in batches, yielding (done, total) after each batch (so a GUI
        worker can show progress and cancel between batches); returns the results.

        With ``on_result(index, instances)`` each frame's result is handed over as soon as it
        is ready and not kept (the return value is then an empty list): a long time-lapse is
        never held as instance masks (the napari widget streams into its layers this way).
        """
        total = len(frames)
        results: list[FrameInstances] = []
        done = 0
        for start in range(0, total, self.batch_size):
            outputs, framings = self._frame_batch(frames[start:start + self.batch_size])
            for out, framing in zip(outputs, framings, strict=True):
                inst = self._to_instances(out, framing)
                if on_result is None:
                    results.append(inst)
                else:
                    on_result(done, inst)
                done += 1
            yield done, total
        return results

    def predict(self, image: np.ndarray,
                progress: Callable[[int, int], None] | None = None
                ) -> FrameInstances | list[FrameInstances]:
        """Segment a 2D frame (returns FrameInstances) or a (T, Y, X) stack (returns a list)."""
        frames, stack = frames_of(image)
        results = run_with_progress(self.iter_predict(frames), progress)
        return results if stack else results[0]


def segment_amodal(image: np.ndarray, model: str = DEFAULT_MODEL, device: str = "auto",
                   score_threshold: float | None = None, batch_size: int = 4,
                   progress: Callable[[int, int], None] | None = None
                   ) -> FrameInstances | list[FrameInstances]:
    """Amodal blastomere masks of a frame or a (T, Y, X) stack (any dtype, grey RGB accepted).

    Returns FrameInstances (amodal masks, visible masks, scores, occlusion map; centroids via
    ``.centroids``) for a 2D frame, or a list of them for a stack.
    """
    predictor = AmodalPredictor(model, device=device, score_threshold=score_threshold,
                                batch_size=batch_size)
    return predictor.predict(image, progress=progress)
