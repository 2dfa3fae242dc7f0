"""Oocyte class maps with SMANet (kind ``oocyte``, S3): weights + square fit + model ->
OocyteResult.

Each frame is fitted whole to the model's working size (:mod:`blastoseg.predict.oocyte_input`),
the network gives class scores, which go back to the frame's size before the argmax. The
result carries the class map, the per-pixel confidence (softmax maximum) and the
measurements of :mod:`blastoseg.measure.oocyte` (inclusion count and area, vacuoles, ooplasm
diameter, zona thickness, PVS width), in micrometres when the pixel size is given.

What the model cannot vouch for is said, not hidden (``meta["warnings"]``): no ooplasm found
(no oocyte in the frame, or an embryo of a kind it was not trained on), several ooplasm
pieces of similar size (two oocytes: the measurements then mix them), an ooplasm touching
the frame's edge (a cut oocyte: its diameter is a lower bound), and a frame that the blastomere
detector finds several cells in (an embryo, not an oocyte:
:mod:`blastoseg.predict.oocyte_embryo_check`; ``check_embryo=False`` skips it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from blastoseg.io.frames import grey_frame
from blastoseg.kinds import get_kind
from blastoseg.measure.oocyte import OocyteMeasurements, measure_oocyte
from blastoseg.predict.base import PredictorBase, Step, load_predictor
from blastoseg.predict.cards import OocyteCard
from blastoseg.predict.oocyte_input import class_scores_to_frame, fit_square
from blastoseg.predict.test_time_flips import flip_averaged

__all__ = ["OocytePredictor", "OocyteResult", "segment_oocyte"]

MIN_SIDE = 32


@dataclass
class OocyteResult:
    """One frame's oocyte segmentation.

    Attributes
    ----------
    labels
        (H, W) uint8 class map (:data:`blastoseg.io.oocyte_classes.CLASS_NAMES`).
    confidence
        (H, W) float32 softmax probability of the chosen class.
    measurements
        What :func:`blastoseg.measure.oocyte.measure_oocyte` finds in ``labels``.
    meta
        ``"model"``, ``"warnings"`` (list of sentences), ``"frame"`` in a stack.
    """

    labels: np.ndarray
    confidence: np.ndarray
    measurements: OocyteMeasurements
    meta: dict = field(default_factory=dict)


class OocytePredictor(PredictorBase):
    """A loaded SMANet, ready to segment oocytes (contract: :mod:`blastoseg.predict.base`).

    Parameters
    ----------
    model
        Registered name, ``.safetensors`` path or training job folder; None: the shipped
        default (a clear error while none is shipped).
    device
        "auto", "cpu", "cuda", "cuda:N" or "mps".
    batch_size
        Frames per forward pass.
    pixel_size_um
        Micrometres per pixel of the frames (measurements in um; None: in pixels).
    check_embryo
        Also run the blastomere detector on each frame and warn when it looks like an embryo
        (:mod:`blastoseg.predict.oocyte_embryo_check`; on a CPU it costs more than the oocyte
        model itself: docs/benchmarks.md has the times).
    flips
        Average the class scores over the four flips of each frame
        (:mod:`blastoseg.predict.test_time_flips`): a better class map (held-out mIoU 0.701 ->
        0.721 for ``oocyte-default``) for 2.5 times the time per frame.
    """

    kind = "oocyte"
    card: OocyteCard

    def __init__(self, model: str | None = None, device: str = "auto", batch_size: int = 4,
                 pixel_size_um: float | None = None, check_embryo: bool = True,
                 flips: bool = False) -> None:
        if model is None and get_kind(self.kind).default_model is None:
            from blastoseg.errors import BlastosegError

            raise BlastosegError("no oocyte model is shipped (docs/models/oocyte.md); name one: "
                                 "a registered name, a .safetensors or a training job")
        super().__init__(model, device)
        self.batch_size = max(int(batch_size), 1)
        self.pixel_size_um = pixel_size_um
        self.check_embryo = bool(check_embryo)
        self.flips = bool(flips)

    def build_model(self):
        from blastoseg.models.oocyte_networks import build_oocyte_network

        return build_oocyte_network(self.card.network)

    def _result(self, scores: torch.Tensor, fit, pixel_size_um) -> OocyteResult:
        frame_scores = class_scores_to_frame(scores, fit)
        if self.card.logit_offsets is not None:  # calibrated class-prior correction
            frame_scores = frame_scores + torch.tensor(self.card.logit_offsets)[:, None, None]
        prob = torch.softmax(frame_scores, dim=0)
        conf, labels = prob.max(0)
        labels = labels.numpy().astype(np.uint8)
        m = measure_oocyte(labels, pixel_size_um)
        return OocyteResult(labels=labels, confidence=conf.numpy().astype(np.float32),
                            measurements=m, meta={"model": self.entry.name,
                                                  "warnings": list(m.warnings)})

    def run_frames(self, frames: Sequence[np.ndarray], *, pixel_size_um: float | None = None
                   ) -> Iterator[Step]:
        """Frames in batches (``done``/``total`` count frames)."""
        size = self.card.working_size
        px = self.pixel_size_um if pixel_size_um is None else float(pixel_size_um)
        if px is not None and not px > 0:
            from blastoseg.errors import BlastosegError

            raise BlastosegError(f"pixel_size_um must be > 0, got {px!r}")
        return self._batches(frames, size, px)

    def _batches(self, frames, size: int, px) -> Iterator[Step]:
        total = len(frames)
        for start in range(0, total, self.batch_size):
            stop = min(start + self.batch_size, total)
            batch = [frames[k] for k in range(start, stop)]
            scores, fits = self._scores(batch, start if total > 1 else None)
            results = [self._result(scores[j], fits[j], px) for j in range(stop - start)]
            if self.check_embryo:
                self._warn_embryos(batch, results)
            yield stop, total, [(start + j, r) for j, r in enumerate(results)]

    def _warn_embryos(self, frames, results: list[OocyteResult]) -> None:
        from blastoseg.predict.oocyte_embryo_check import embryo_warnings

        for r, warning in zip(results, embryo_warnings(frames, str(self.device)),
                              strict=True):
            r.meta["looks_like_embryo"] = warning is not None
            if warning is not None:
                r.measurements.warnings.append(warning)
                r.meta["warnings"].append(warning)

    def _scores(self, frames, first: int | None = None):
        """The network's raw class scores of frames fitted to the working size (no offsets)
        and the fits that map them back to each frame."""
        fitted = [fit_square(grey_frame(f, None if first is None else first + j,
                                        min_side=MIN_SIDE), self.card.working_size)
                  for j, f in enumerate(frames)]
        x = torch.from_numpy(np.stack([f[0] for f in fitted])[:, None]).to(self.device)
        with self.inference():
            scores = (flip_averaged(self.model, x) if self.flips else self.model(x)).float().cpu()
        return scores, [f[1] for f in fitted]

    def frame_scores(self, image: np.ndarray) -> torch.Tensor:
        """(C, H, W) raw class scores of one frame at its own size, before the card's logit
        offsets (for calibrating them, :mod:`blastoseg.predict.oocyte_calibrate`)."""
        scores, fits = self._scores([image])
        return class_scores_to_frame(scores[0], fits[0])

    def predict(self, image: np.ndarray, progress: Callable[[int, int], None] | None = None,
                cancel: Callable[[], bool] | None = None, *, pixel_size_um: float | None = None
                ) -> OocyteResult | list[OocyteResult]:
        """Segment a 2D frame (an :class:`OocyteResult`) or a (T, Y, X) stack (a list)."""
        return super().predict(image, progress, cancel, pixel_size_um=pixel_size_um)


def segment_oocyte(image: np.ndarray, model: str | None = None, device: str = "auto", *,
                   pixel_size_um: float | None = None,
                   progress: Callable[[int, int], None] | None = None, flips: bool = False
                   ) -> OocyteResult | list[OocyteResult]:
    """Class map and measurements of a frame or a stack; the loaded model is kept.
    ``flips``: average over the four flips of each frame (:class:`OocytePredictor`)."""
    predictor = load_predictor(model, device, kind="oocyte", **({"flips": True} if flips
                                                                  else {}))
    return predictor.predict(image, progress=progress, pixel_size_um=pixel_size_um)
