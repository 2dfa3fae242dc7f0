"""Amodal blastomere segmentation: weights + framing + model -> FrameInstances.

Each frame is normalised, the embryo is located and cropped to the model's working
resolution (the same framing training used), the detector runs batched in the shared
inference context (:func:`blastoseg.predict.base.inference_context`: inference mode, mixed
precision on CUDA), and masks, scores and the occlusion map are mapped back to the original
frame. Visible (modal) masks are derived from the amodal
ones: a pixel covered by several cells goes to the cell with the highest mask probability
there (ties: the higher score) - an approximation, since the detector predicts no depth order.

Framing (where the embryo is) can be given instead of found: ``embryo=`` takes a circle for
every frame or one per frame, ``diameter_px=`` fixes the radius the localiser searches for,
and ``localise=False`` frames the whole image (frames that are already crops). Each result's
``meta`` records the framing used (``"embryo"``, ``"embryo_box"``) and whether the localiser
was unsure (``"embryo_unsure"``, with its guess in ``"embryo_guess"``).

:class:`AmodalPredictor` follows the predictor contract of :mod:`blastoseg.predict.base` (a
frame gives FrameInstances, a stack a list, ``iter_predict`` streams; ``done``/``total``
count frames). :func:`segment_amodal` is the one-call entry point; it keeps the loaded model
between calls.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator, Sequence

import numpy as np
import torch

from blastoseg.instances import FrameInstances, flat_masks
from blastoseg.models.amodal_config import AmodalConfig
from blastoseg.models.amodal_rcnn import AmodalMaskRCNN
from blastoseg.predict.amodal_post import LayerRule, postprocess_detections
from blastoseg.predict.base import PredictorBase, Step, load_predictor
from blastoseg.predict.cards import AmodalCard
from blastoseg.predict.embryo_framing import EmbryoFramed
from blastoseg.predict.embryo_spec import (
    EmbryoSpec,
    check_diameter,
    per_frame_embryos,
)
from blastoseg.predict.framing import Framing, frame_for_model, to_grey
from blastoseg.predict.instance_flips import VIEWS, check_flips, flip_back, flipped, merge_flipped
from blastoseg.predict.steady_framing import SteadyLocaliser

__all__ = ["AmodalPredictor", "segment_amodal", "visible_from_amodal"]


def visible_from_amodal(probs: np.ndarray, scores: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Disjoint visible masks: each covered pixel goes to its most probable instance."""
    if len(masks) == 0:
        return masks.copy()
    key = np.where(masks, probs + 1e-3 * scores[:, None, None], -1.0)
    owner = key.argmax(axis=0)
    covered = masks.any(axis=0)
    return np.stack([(owner == i) & covered for i in range(len(masks))])


class AmodalPredictor(EmbryoFramed, PredictorBase):
    """A loaded amodal model, ready to segment frames (the contract:
    :mod:`blastoseg.predict.base`; ``done``/``total`` count frames).

    Parameters
    ----------
    model
        Registered model name (see ``blastoseg models``), a ``.safetensors`` path with its
        ``.json`` card beside it, or a training job folder (its finished model); None:
        ``amodal-default``.
    device
        "auto" (CUDA, then MPS, then CPU), "cpu", "cuda", "cuda:N" or "mps".
    score_threshold
        Detections below this score are dropped; None takes the model card's calibrated
        value (``postprocess.score_threshold``, else 0.5).
    batch_size
        Frames per forward pass.
    mask_nms_iou
        Of two detections whose masks overlap more than this IoU, the lower-scored one is
        dropped; None takes the model card's value (``postprocess.mask_nms_iou``, else 0.8).
    count_stacked
        Count cells stacked under others with the card's layer rule
        (:mod:`blastoseg.predict.amodal_post`); None: as the card says
        (``postprocess.use_layer_rule``). Without a rule in the card there is nothing to
        switch on and it stays off.
    flips
        Test-time flips: detect in the crop and its three mirror images and merge the four
        lists (True or 4; about 3 times slower), or in all eight symmetries of the square
        (8; about 6 times slower); False or 0: off
        (:mod:`blastoseg.predict.instance_flips`, docs/models/amodal.md#test-time-flips).

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

    kind = "amodal"
    card: AmodalCard

    def __init__(self, model: str | None = None, device: str = "auto",
                 score_threshold: float | None = None, batch_size: int = 4,
                 mask_nms_iou: float | None = None, count_stacked: bool | None = None,
                 flips: bool | int = False) -> None:
        super().__init__(model, device)
        #: test-time flips: 0 (off), 4 or 8 copies of each crop
        self.flips = check_flips(flips)
        self.score_threshold = float(score_threshold if score_threshold is not None
                                     else self.card.score_threshold)
        self.mask_nms_iou = float(mask_nms_iou if mask_nms_iou is not None
                                  else self.card.mask_nms_iou)
        self.batch_size = max(int(batch_size), 1)
        # the card's rule for cells stacked under others: on or off as the card says, unless
        # asked (a card without a rule has nothing to switch on)
        self.count_stacked = (self.card.use_layer_rule if count_stacked is None
                              else bool(count_stacked)) and self.card.layer_rule is not None

    def build_model(self) -> AmodalMaskRCNN:
        return AmodalMaskRCNN(self.card.model)

    # the card's settings, by the names callers use
    @property
    def config(self) -> AmodalConfig:
        """The detector's architecture."""
        return self.card.model

    @property
    def calibrated_threshold(self) -> float:
        """The model card's calibrated cell threshold (what counting should use)."""
        return self.card.score_threshold

    @property
    def layer_rule(self) -> LayerRule | None:
        """The card's layer rule (counting stacked cells from the occlusion map or the layer
        branch's map) when it is switched on (:attr:`count_stacked`), else None."""
        return self.card.layer_rule if self.count_stacked else None

    # --- model ------------------------------------------------------------------------------
    def _run(self, crops: list[np.ndarray]) -> list[dict]:
        tensors = [torch.from_numpy(c)[None].to(self.device) for c in crops]
        if not self.flips:
            with self.inference():
                return self.model(tensors)
        # test-time flips: every crop's flipped copies in one batch, each copy's detections
        # flipped back and merged per crop (predict/instance_flips.py)
        views = VIEWS[self.flips]
        with self.inference():
            outs = self.model([flipped(t, v) for t in tensors for v in views])
        n = len(views)
        return [merge_flipped([flip_back(o, v) for o, v in zip(outs[k:k + n], views,
                                                                   strict=True)])
                for k in range(0, len(outs), n)]

    def _to_instances(self, out: dict, framing: Framing, info: dict | None = None
                      ) -> FrameInstances:
        meta = {"embryo_box": framing.describe(), "model": self.entry.name, **(info or {})}
        probs_all = out["masks"][:, 0].float().cpu().numpy()
        occ = out.get("occlusion")
        occ_small = None if occ is None else occ[0].float().cpu().numpy()
        lay = out.get("layers")
        layers_small = None if lay is None else lay[0].float().cpu().numpy()
        # score threshold + mask NMS, and the card's layer rule when it has one
        # (predict/amodal_post.py, docs/counting_analysis.md)
        res = postprocess_detections(
            probs_all, out["scores"].float().cpu().numpy(), occ_small,
            score_threshold=self.score_threshold, mask_nms_iou=self.mask_nms_iou,
            count_threshold=self.calibrated_threshold, rule=self.layer_rule,
            layers=layers_small)
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
        nonempty = flat_masks(masks).any(axis=1)
        masks, probs, scores = masks[nonempty], probs[nonempty], scores[nonempty]
        return FrameInstances(
            masks=masks, scores=scores, visible_masks=visible_from_amodal(probs, scores, masks),
            occlusion=occlusion, meta=meta,
        )

    def _frame_batch(self, chunk: Sequence[np.ndarray], names: Sequence[int | None],
                     specs: Sequence[EmbryoSpec] | None = None, diameter_px: float | None = None,
                     localise: bool | None = None, steady: SteadyLocaliser | None = None
                     ) -> tuple[list[dict], list[Framing], list[dict]]:
        """A batch of frames framed and run: (outputs, framings, infos). ``names``: each
        frame's index in errors and in ``steady`` (None: it is the only frame)."""
        crops, framings, infos = [], [], []
        specs = [None] * len(chunk) if specs is None else specs
        for frame, name, spec in zip(chunk, names, specs, strict=True):
            # one conversion per frame; it raises the clear errors (NaN, shape, size) and
            # frame_for_model raises for a constant frame
            grey = to_grey(frame, name)
            # exactly the framing training used (train/amodal_data.py), unless told otherwise
            box, unsure, guess = self._choose(grey, spec, diameter_px, localise, steady, name)
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
            stop = min(start + self.batch_size, len(frames))
            outputs, _, _ = self._frame_batch(frames[start:stop], range(start, stop))
            yield from outputs

    def run_frames(self, frames: Sequence[np.ndarray], *, embryo: object = None,
                   diameter_px: float | None = None, localise: bool | None = None,
                   steady: int | None = None) -> Iterator[Step]:
        """Frames in batches of :attr:`batch_size`, one step per batch (``done``/``total``
        count frames).

        ``embryo``, ``diameter_px``, ``localise`` and ``steady`` choose the framing (see
        :meth:`predict`); they are checked here, before any frame is processed
        (:class:`FramingError`).
        """
        specs = per_frame_embryos(embryo, len(frames))
        diameter_px = check_diameter(diameter_px)
        steadied = self._steady(frames, specs, diameter_px, localise, steady)
        return self._batches(frames, specs, diameter_px, localise, steadied)

    def _batches(self, frames, specs, diameter_px, localise, steady) -> Iterator[Step]:
        total = len(frames)
        for start in range(0, total, self.batch_size):
            stop = min(start + self.batch_size, total)
            names = range(start, stop) if total > 1 else [None]
            outputs, framings, infos = self._frame_batch(
                frames[start:stop], names, specs[start:stop], diameter_px, localise, steady)
            finished = [(start + k, self._to_instances(out, framing, info))
                        for k, (out, framing, info)
                        in enumerate(zip(outputs, framings, infos, strict=True))]
            yield stop, total, finished

    def predict(self, image: np.ndarray, progress: Callable[[int, int], None] | None = None,
                cancel: Callable[[], bool] | None = None, *, embryo: object = None,
                diameter_px: float | None = None, localise: bool | None = None,
                steady: int | None = None) -> FrameInstances | list[FrameInstances]:
        """Segment a 2D frame (returns FrameInstances) or a (T, Y, X) stack (returns a list).

        Parameters
        ----------
        image
            (H, W) frame, (T, H, W) stack, or grey-content RGB; any real dtype.
        progress
            Called with (done, total) frames after each batch.
        cancel
            Asked between batches; True stops the run (:class:`~blastoseg.progress.Cancelled`).
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
        steady
            For a time-lapse of one embryo: each frame is framed with the median of the
            localiser's circles over this many neighbouring frames (a running median,
            :mod:`blastoseg.predict.steady_framing`); None, 0 or 1 localises every frame
            alone. Never for a stack of different embryos.

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
        return super().predict(image, progress, cancel, embryo=embryo,
                               diameter_px=diameter_px, localise=localise, steady=steady)


def segment_amodal(image: np.ndarray, model: str | None = None, device: str = "auto",
                   score_threshold: float | None = None, batch_size: int = 4,
                   progress: Callable[[int, int], None] | None = None, *,
                   embryo: object = None, diameter_px: float | None = None,
                   localise: bool | None = None, steady: int | None = None,
                   flips: bool | int = False) -> FrameInstances | list[FrameInstances]:
    """Amodal blastomere masks of a frame or a (T, Y, X) stack (any dtype, grey RGB accepted).

    Returns FrameInstances (amodal masks, visible masks, scores, occlusion map; centroids via
    ``.centroids``) for a 2D frame, or a list of them for a stack. ``model`` None is
    ``amodal-default``. ``embryo``, ``diameter_px``, ``localise`` and ``steady`` choose the
    framing (:meth:`AmodalPredictor.predict`); ``flips`` (True or 4, or 8) merges the
    detections of each crop's flipped copies (:mod:`blastoseg.predict.instance_flips`). The
    loaded model is kept between calls
    (:func:`blastoseg.predict.base.load_predictor`), so calling this in a loop over frames
    loads the weights once.
    """
    predictor = load_predictor(model, device, kind="amodal", score_threshold=score_threshold,
                               batch_size=batch_size, flips=flips)
    return predictor.predict(image, progress=progress, embryo=embryo, diameter_px=diameter_px,
                             localise=localise, steady=steady)
