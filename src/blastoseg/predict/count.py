"""Blastomere counting with Cell-Net (kind ``count``, S2): weights + framing + model -> CountResult.

Each frame is framed exactly as the amodal predictor frames it (the embryo localised, the
square around it resized to the model's working size: :func:`~blastoseg.predict.framing.frame_for_model`,
the same choice of box as the amodal predictor (:mod:`blastoseg.predict.embryo_framing`), with the same
``embryo=``, ``diameter_px=`` and ``localise=`` options), the network predicts a density map
of the crop, and:

* ``count`` = round(integral of the crop's density) (S2 section III.A);
* ``centroids`` = the ``count`` strongest peaks of the density (NMS radius from the working
  size, :func:`~blastoseg.metrics.counting_density.density_peaks`), mapped to input pixels;
* ``density`` = the crop's density resampled onto the input frame and rescaled so that its
  integral equals the crop's (resampling changes the pixel area; the count must not change).

:class:`CountPredictor` follows the predictor contract of :mod:`blastoseg.predict.base` (a
frame gives a :class:`CountResult`, a stack a list; ``done``/``total`` count frames).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from blastoseg.metrics.counting_density import count_from_density, density_peaks, peak_radius
from blastoseg.models.cellnet import CellNet, CellNetConfig
from blastoseg.predict.base import PredictorBase, Step, load_predictor
from blastoseg.predict.cards import CountCard
from blastoseg.predict.embryo_framing import EmbryoFramed
from blastoseg.predict.embryo_spec import check_diameter, per_frame_embryos
from blastoseg.predict.framing import Framing, frame_for_model, to_grey

__all__ = ["CountPredictor", "CountResult", "count_cells"]


@dataclass
class CountResult:
    """One frame's count.

    Attributes
    ----------
    count
        Number of blastomeres: round(integral).
    integral
        The density map's integral (a real number; its distance to ``count`` says how sure).
    density
        (H, W) float32 density at the INPUT frame's size; it integrates to ``integral``.
    centroids
        (N, 2) float (y, x) blastomere centres in input pixels (N <= count).
    meta
        Framing as the amodal predictor records it (``"embryo"``, ``"embryo_unsure"``,
        ``"embryo_guess"`` when unsure, ``"embryo_box"``), ``"model"``; ``"frame"`` in a stack.
    """

    count: int
    integral: float
    density: np.ndarray
    centroids: np.ndarray
    meta: dict = field(default_factory=dict)


def density_to_original(density: np.ndarray, framing: Framing) -> np.ndarray:
    """The crop's (S, S) density on the input frame, its integral kept (resampling scales the
    sum by the pixel area and may clip what lies outside the frame)."""
    mapped = framing.to_original(np.asarray(density, np.float32))
    total, mapped_total = float(density.sum()), float(mapped.sum(dtype=np.float64))
    if mapped_total > 0:
        mapped *= np.float32(total / mapped_total)
    return mapped.astype(np.float32)


class CountPredictor(EmbryoFramed, PredictorBase):
    """A loaded Cell-Net model, ready to count blastomeres (contract: :mod:`blastoseg.predict.base`).

    Parameters
    ----------
    model
        Registered model name, ``.safetensors`` path or training job folder; None:
        ``count-default``.
    device
        "auto", "cpu", "cuda", "cuda:N" or "mps".
    batch_size
        Frames per forward pass.

    ``predict`` / ``iter_predict`` take the amodal predictor's framing options: ``embryo=``
    (circles instead of localising), ``diameter_px=`` and ``localise=``
    (see :meth:`blastoseg.predict.amodal.AmodalPredictor.predict`).
    """

    kind = "count"
    card: CountCard

    def __init__(self, model: str | None = None, device: str = "auto",
                 batch_size: int = 8) -> None:
        super().__init__(model, device)
        self.batch_size = max(int(batch_size), 1)

    def build_model(self) -> CellNet:
        return CellNet(self.card.model)

    @property
    def config(self) -> CellNetConfig:
        return self.card.model

    def _frame(self, frame, name, spec, diameter_px, localise, steady=None):
        grey = to_grey(frame, name)
        box, unsure, guess = self._choose(grey, spec, diameter_px, localise, steady, name)
        crop, framing = frame_for_model(grey, box, self.config.working_size, margin=self.margin)
        info = {"embryo": box.to_dict(), "embryo_unsure": bool(unsure),
                "embryo_box": framing.describe(), "model": self.entry.name}
        if guess is not None:
            info["embryo_guess"] = guess.to_dict()
        return crop, framing, info

    def _densities(self, crops: list[np.ndarray]) -> np.ndarray:
        x = torch.from_numpy(np.stack(crops)[:, None]).to(self.device)
        with self.inference():
            return self.model(x).float()[:, 0].cpu().numpy()

    def _result(self, density: np.ndarray, framing: Framing, info: dict) -> CountResult:
        count, integral = count_from_density(density)
        peaks = density_peaks(density, count, peak_radius(self.config.working_size))
        return CountResult(count=count, integral=integral,
                           density=density_to_original(density, framing),
                           centroids=framing.points_to_original(peaks), meta=info)

    def run_frames(self, frames: Sequence[np.ndarray], *, embryo: object = None,
                   diameter_px: float | None = None, localise: bool | None = None,
                   steady: int | None = None) -> Iterator[Step]:
        """Frames in batches of :attr:`batch_size` (``done``/``total`` count frames); the
        framing options are checked here, before any frame runs."""
        specs = per_frame_embryos(embryo, len(frames))
        diameter_px = check_diameter(diameter_px)
        steadied = self._steady(frames, specs, diameter_px, localise, steady)
        return self._batches(frames, specs, diameter_px, localise, steadied)

    def _batches(self, frames, specs, diameter_px, localise, steady) -> Iterator[Step]:
        total = len(frames)
        for start in range(0, total, self.batch_size):
            stop = min(start + self.batch_size, total)
            framed = [self._frame(frames[k], k if total > 1 else None, specs[k], diameter_px,
                                  localise, steady) for k in range(start, stop)]
            densities = self._densities([c for c, _, _ in framed])
            finished = [(start + j, self._result(d, framing, info))
                        for j, (d, (_, framing, info)) in enumerate(zip(densities, framed,
                                                                        strict=True))]
            yield stop, total, finished

    def predict(self, image: np.ndarray, progress: Callable[[int, int], None] | None = None,
                cancel: Callable[[], bool] | None = None, *, embryo: object = None,
                diameter_px: float | None = None, localise: bool | None = None,
                steady: int | None = None) -> CountResult | list[CountResult]:
        """Count a 2D frame (a :class:`CountResult`) or a (T, Y, X) stack (a list).

        ``embryo``, ``diameter_px``, ``localise`` and ``steady`` choose the framing as in
        :meth:`blastoseg.predict.amodal.AmodalPredictor.predict`.
        """
        return super().predict(image, progress, cancel, embryo=embryo,
                               diameter_px=diameter_px, localise=localise, steady=steady)


def count_cells(image: np.ndarray, model: str | None = None, device: str = "auto", *,
                progress: Callable[[int, int], None] | None = None, embryo: object = None,
                diameter_px: float | None = None, localise: bool | None = None,
                steady: int | None = None) -> CountResult | list[CountResult]:
    """Blastomere counts of a frame (a CountResult) or a (T, Y, X) stack (a list); ``model``
    None is ``count-default``. The loaded model is kept between calls."""
    predictor = load_predictor(model, device, kind="count")
    return predictor.predict(image, progress=progress, embryo=embryo, diameter_px=diameter_px,
                             localise=localise, steady=steady)
