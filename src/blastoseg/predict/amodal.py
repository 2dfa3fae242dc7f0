"""Amodal blastomere segmentation: weights + framing + model -> FrameInstances.

Each frame is normalised, the embryo is located and cropped to the model's working
resolution (the same framing training used), the detector runs batched under
``torch.inference_mode`` (mixed precision on CUDA), and masks, scores and the occlusion map
are mapped back to the original frame. Visible (modal) masks are derived from the amodal
ones: a pixel covered by several cells goes to the cell with the highest mask probability
there (ties: the higher score) - an approximation, since the detector predicts no depth order.

Framing (where the embryo is) can be given instead of found: ``embryo=`` takes a circle for
every frame or one per frame, ``diameter_px=`` fixes the radius the localiser searches for,
and ``localise=False`` frames the whole image (frames that are already crops). Each result's
``meta`` records the framing used (``"embryo"``, ``"embryo_box"``) and whether the localiser
was unsure (``"embryo_unsure"``, with its guess in ``"embryo_guess"``).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Generator, Sequence
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

from blastoseg.errors import InvalidImageError
from blastoseg.instances import FrameInstances
from blastoseg.models.amodal_config import AmodalConfig
from blastoseg.models.amodal_rcnn import AmodalMaskRCNN
from blastoseg.predict import localise as _localise
from blastoseg.predict.amodal_post import LayerRule, postprocess_detections
from blastoseg.predict.device import describe_device, resolve_device
from blastoseg.predict.embryo_spec import (
    EmbryoSpec,
    FramingError,
    check_diameter,
    per_frame_embryos,
)
from blastoseg.predict.framing import DEFAULT_MARGIN, Framing, frame_for_model, to_grey
from blastoseg.predict.localise import EmbryoBox
from blastoseg.progress import run_with_progress
from blastoseg.weights import ModelEntry, load_into_model, resolve_model

__all__ = ["DEFAULT_MODEL", "AmodalPredictor", "EmbryoSpec", "FramingError",
           "clear_predictor_cache", "frames_of", "get_predictor", "mask_nms",
           "per_frame_embryos", "segment_amodal", "visible_from_amodal"]

DEFAULT_MODEL = "amodal-default"
#: the localiser's confidence below which a frame falls back to the whole frame (the value
#: training uses, :class:`blastoseg.train.amodal_data.AmodalDataset`)
DEFAULT_MIN_CONFIDENCE = 0.15

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
        Registered model name (see ``blastoseg models``), a ``.safetensors`` path with its
        ``.json`` card beside it, or a training job folder (its finished model).
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

    Notes
    -----
    Framing: every frame is cropped around the embryo before the model sees it. By default the
    embryo is localised in each frame (when the model card's ``framing.use_localisation``
    is true, as for every shipped model); a localisation whose confidence is below
    :attr:`min_confidence` falls back to the whole frame. ``predict`` and ``iter_predict``
    take ``embryo=`` (circles given by the user, see :func:`per_frame_embryos`),
    ``diameter_px=`` (the localiser searches only radii within +-12 % of half of it) and
    ``localise=`` (False: frame the whole image, for frames that are already crops; None:
    the model card's choice). A given circle wins over both.
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
        rule = post.get("layer_rule")
        #: the card's layer rule (counting stacked cells from the occlusion map), or None
        self.layer_rule = None if rule is None else LayerRule.from_dict(rule)
        self.score_threshold = float(score_threshold if score_threshold is not None
                                     else self.calibrated_threshold)
        self.mask_nms_iou = float(mask_nms_iou if mask_nms_iou is not None
                                  else post.get("mask_nms_iou", 0.8))
        self.batch_size = max(int(batch_size), 1)
        framing = self.entry.card.config.get("framing", {})
        #: localise the embryo in each frame unless told otherwise (the model card's choice)
        self.use_localisation = bool(framing.get("use_localisation", True))
        #: below this localiser confidence the whole frame is used (as in training)
        self.min_confidence = float(framing.get("min_confidence", DEFAULT_MIN_CONFIDENCE))
        self.margin = float(framing.get("margin", DEFAULT_MARGIN))

    # --- framing ------------------------------------------------------------------------------
    def _choose(self, grey: np.ndarray, spec: EmbryoSpec, diameter_px: float | None,
                localise: bool | None) -> tuple[EmbryoBox, bool, EmbryoBox | None]:
        """(box used, unsure, the localiser's guess when unsure) for one grey frame."""
        shape = tuple(grey.shape[:2])
        if spec is not None:
            if isinstance(spec, EmbryoBox) and spec.image_shape is not None \
                    and tuple(spec.image_shape) != shape:
                raise FramingError(
                    f"the embryo box was made for a {spec.image_shape[0]} x "
                    f"{spec.image_shape[1]} frame, but the frame is {shape[0]} x {shape[1]}")
            try:
                return _localise.choose_embryo_box(grey, embryo=spec), False, None
            except ValueError as exc:
                raise FramingError(str(exc)) from None
        use_loc = self.use_localisation if localise is None else bool(localise)
        box = _localise.choose_embryo_box(grey, use_localisation=use_loc,
                                          min_confidence=self.min_confidence,
                                          diameter_px=diameter_px)
        if not use_loc:
            return box, False, None
        if box.source == "whole frame":  # low confidence: show the guess, do not hide it
            guess = _localise.locate_embryo(
                grey, radius_px=None if diameter_px is None else diameter_px / 2.0)
            return box, True, guess
        if box.unsure:
            return box, True, box
        return box, False, None

    def locate(self, frame: np.ndarray, *, diameter_px: float | None = None,
               localise: bool | None = None) -> EmbryoBox:
        """The box this predictor would frame ``frame`` with (no model is run).

        ``frame`` is one 2D frame (any dtype, grey RGB accepted); ``diameter_px`` and
        ``localise`` as in :meth:`predict`. When the localiser's confidence is below
        :attr:`min_confidence` this is the whole-frame box (source ``"whole frame"``); its
        guess is :meth:`locate_guess`. A box with ``.unsure`` set is used but should be shown
        to the user.
        """
        grey = to_grey(frame)
        return self._choose(grey, None, check_diameter(diameter_px), localise)[0]

    def locate_guess(self, frame: np.ndarray, diameter_px: float | None = None) -> EmbryoBox:
        """The localiser's raw result for ``frame``, whatever its confidence (source
        ``"localised"``, or ``"diameter"`` with ``diameter_px``; the whole-frame box only for
        a frame with no contrast at all). Use it to show the user what the localiser saw
        when :meth:`locate` fell back to the whole frame."""
        grey = to_grey(frame)
        d = check_diameter(diameter_px)
        return _localise.locate_embryo(grey, radius_px=None if d is None else d / 2.0)

    # --- model ------------------------------------------------------------------------------
    def _run(self, crops: list[np.ndarray]) -> list[dict]:
        tensors = [torch.from_numpy(c)[None].to(self.device) for c in crops]
        amp = (torch.autocast("cuda", dtype=torch.float16) if self.device.type == "cuda"
               else nullcontext())
        with torch.inference_mode(), amp:
            return self.model(tensors)

    def _to_instances(self, out: dict, framing: Framing, info: dict | None = None
                      ) -> FrameInstances:
        meta = {"embryo_box": framing.describe(), "model": self.entry.name, **(info or {})}
        probs_all = out["masks"][:, 0].float().cpu().numpy()
        occ = out.get("occlusion")
        occ_small = None if occ is None else occ[0].float().cpu().numpy()
        # score threshold + mask NMS, and the card's layer rule when it has one
        # (predict/amodal_post.py, docs/counting_analysis.md)
        res = postprocess_detections(
            probs_all, out["scores"].float().cpu().numpy(), occ_small,
            score_threshold=self.score_threshold, mask_nms_iou=self.mask_nms_iou,
            count_threshold=self.calibrated_threshold, rule=self.layer_rule)
        probs_small, scores = probs_all[res.indices], res.scores.astype(np.float32)
        if res.layer_estimate is not None:
            meta["layer_estimate"] = round(float(res.layer_estimate), 2)
        occlusion = None if occ_small is None else framing.to_original(occ_small)
        shape = tuple(framing.image_shape[:2])
        if len(scores) == 0:
            return FrameInstances(masks=np.zeros((0, *shape), bool), visible_masks=np.zeros(
                (0, *shape), bool), occlusion=occlusion, meta=meta)
        probs = framing.to_original(probs_small)
        masks = probs >= 0.5
        nonempty = masks.reshape(len(masks), -1).any(axis=1)
        masks, probs, scores = masks[nonempty], probs[nonempty], scores[nonempty]
        return FrameInstances(
            masks=masks, scores=scores, visible_masks=visible_from_amodal(probs, scores, masks),
            occlusion=occlusion, meta=meta,
        )

    def _frame_batch(self, chunk: Sequence[np.ndarray], specs: Sequence[EmbryoSpec] | None = None,
                     diameter_px: float | None = None, localise: bool | None = None
                     ) -> tuple[list[dict], list[Framing], list[dict]]:
        crops, framings, infos = [], [], []
        specs = [None] * len(chunk) if specs is None else specs
        for frame, spec in zip(chunk, specs, strict=True):
            # one conversion per frame; it raises the clear errors (NaN, shape, size) and
            # frame_for_model raises for a constant frame
            grey = to_grey(frame)
            # exactly the framing training used (train/amodal_data.py), unless told otherwise
            box, unsure, guess = self._choose(grey, spec, diameter_px, localise)
            crop, framing = frame_for_model(grey, box, self.config.working_size,
                                            margin=self.margin)
            info = {"embryo": box.to_dict(), "embryo_unsure": bool(unsure)}
            if guess is not None:
                info["embryo_guess"] = guess.to_dict()
            crops.append(crop)
            framings.append(framing)
            infos.append(info)
        return self._run(crops), framings, infos

    def raw_outputs(self, frames: Sequence[np.ndarray]) -> Generator[dict, None, None]:
        """The detector's outputs at the working resolution, one dict per frame, before any
        thresholding or NMS (for calibration; default framing)."""
        for start in range(0, len(frames), self.batch_size):
            outputs, _, _ = self._frame_batch(frames[start:start + self.batch_size])
            yield from outputs

    def iter_predict(self, frames: Sequence[np.ndarray],
                     on_result: Callable[[int, FrameInstances], None] | None = None, *,
                     embryo: object = None, diameter_px: float | None = None,
                     localise: bool | None = None
                     ) -> Generator[tuple[int, int], None, list[FrameInstances]]:
        """Segment frames in batches, yielding (done, total) after each batch (so a GUI
        worker can show progress and cancel between batches); returns the results.

        With ``on_result(index, instances)`` each frame's result is handed over as soon as it
        is ready and not kept (the return value is then an empty list): a long time-lapse is
        never held as instance masks (the napari widget streams into its layers this way).

        ``embryo``, ``diameter_px`` and ``localise`` choose the framing (see :meth:`predict`);
        they are checked before any frame is processed (:class:`FramingError`).
        """
        total = len(frames)
        specs = per_frame_embryos(embryo, total)
        diameter_px = check_diameter(diameter_px)
        return self._iter_predict(frames, on_result, specs, diameter_px, localise)

    def _iter_predict(self, frames, on_result, specs, diameter_px, localise):
        total = len(frames)
        results: list[FrameInstances] = []
        done = 0
        for start in range(0, total, self.batch_size):
            stop = start + self.batch_size
            outputs, framings, infos = self._frame_batch(frames[start:stop], specs[start:stop],
                                                         diameter_px, localise)
            for out, framing, info in zip(outputs, framings, infos, strict=True):
                inst = self._to_instances(out, framing, info)
                if on_result is None:
                    results.append(inst)
                else:
                    on_result(done, inst)
                done += 1
            yield done, total
        return results

    def predict(self, image: np.ndarray,
                progress: Callable[[int, int], None] | None = None, *,
                embryo: object = None, diameter_px: float | None = None,
                localise: bool | None = None) -> FrameInstances | list[FrameInstances]:
        """Segment a 2D frame (returns FrameInstances) or a (T, Y, X) stack (returns a list).

        Parameters
        ----------
        image
            (H, W) frame, (T, H, W) stack, or grey-content RGB; any real dtype.
        progress
            Called with (done, total) after each batch.
        embryo
            The embryo's circle in pixels instead of localising it: None (localise every
            frame), one :class:`EmbryoBox` or (cx, cy, r) for every frame, or a sequence with
            one entry per frame (each None, EmbryoBox or (cx, cy, r)).
        diameter_px
            The embryo's diameter in pixels, when known: the localiser only searches radii
            within +-12 % of half of it.
        localise
            False frames the whole image (frames that are already crops around the embryo);
            True localises; None takes the model card's ``framing.use_localisation``.

        Each result's ``meta`` has ``"embryo_box"`` (the crop square, :meth:`Framing.describe`),
        ``"embryo"`` (the :class:`EmbryoBox` used, as a dict, with its ``source`` and
        ``confidence``) and ``"embryo_unsure"`` (True when localisation was on but its
        result was low-confidence or fell back to the whole frame; the localiser's guess is
        then in ``"embryo_guess"``).

        Raises
        ------
        FramingError
            A wrong-length ``embryo`` sequence, a bad circle or diameter.
        InvalidImageError
            A frame the model cannot use.
        """
        frames, stack = frames_of(image)
        gen = self.iter_predict(frames, embryo=embryo, diameter_px=diameter_px,
                                localise=localise)
        results = run_with_progress(gen, progress)
        return results if stack else results[0]


# --- a cache of loaded predictors --------------------------------------------------------------

_CACHE_SIZE = 2
_cache: OrderedDict[tuple, AmodalPredictor] = OrderedDict()
_cache_lock = threading.Lock()


def _file_stamp(path: Path) -> tuple[str, int, int]:
    try:
        st = path.stat()
    except OSError:
        return str(path), -1, -1
    return str(path.resolve()), st.st_mtime_ns, st.st_size


def get_predictor(model: str = DEFAULT_MODEL, device: str = "auto",
                  score_threshold: float | None = None, batch_size: int = 4
                  ) -> AmodalPredictor:
    """A loaded :class:`AmodalPredictor`, reused across calls.

    Predictors are kept (the last two) by model, device, threshold and batch size, and by
    the weights file and its card (path, modification time, size): a model retrained,
    re-calibrated or replaced under the same name is loaded afresh. Treat the returned
    predictor as shared: do not change its attributes (make your own
    :class:`AmodalPredictor` for that).
    """
    entry = resolve_model(model, kind="amodal")
    key = (str(model), str(device),
           None if score_threshold is None else float(score_threshold), int(batch_size),
           _file_stamp(entry.weights_path), _file_stamp(entry.card_path))
    with _cache_lock:
        hit = _cache.get(key)
        if hit is not None:
            _cache.move_to_end(key)
            return hit
    predictor = AmodalPredictor(model, device=device, score_threshold=score_threshold,
                                batch_size=batch_size)
    with _cache_lock:
        # drop older versions of the same model (its files changed) and the least recent
        for old in [k for k in _cache if k[:4] == key[:4]]:
            del _cache[old]
        _cache[key] = predictor
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return predictor


def clear_predictor_cache() -> None:
    """Forget every predictor :func:`get_predictor` (and :func:`segment_amodal`) kept."""
    with _cache_lock:
        _cache.clear()


def segment_amodal(image: np.ndarray, model: str = DEFAULT_MODEL, device: str = "auto",
                   score_threshold: float | None = None, batch_size: int = 4,
                   progress: Callable[[int, int], None] | None = None, *,
                   embryo: object = None, diameter_px: float | None = None,
                   localise: bool | None = None
                   ) -> FrameInstances | list[FrameInstances]:
    """Amodal blastomere masks of a frame or a (T, Y, X) stack (any dtype, grey RGB accepted).

    Returns FrameInstances (amodal masks, visible masks, scores, occlusion map; centroids via
    ``.centroids``) for a 2D frame, or a list of them for a stack. ``embryo``,
    ``diameter_px`` and ``localise`` choose the framing (:meth:`AmodalPredictor.predict`).
    The loaded model is kept between calls (:func:`get_predictor`), so calling this in a
    loop over frames loads the weights once.
    """
    predictor = get_predictor(model, device=device, score_threshold=score_threshold,
                              batch_size=batch_size)
    return predictor.predict(image, progress=progress, embryo=embryo, diameter_px=diameter_px,
                             localise=localise)
