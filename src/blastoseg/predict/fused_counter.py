"""Counting with both models over frames and stacks: the amodal detector and Cell-Net run on
each frame and their counts are fused (:func:`~blastoseg.predict.count_fusion.fuse_counts`).

:class:`FusedCounter` follows the predictor contract (:mod:`blastoseg.predict.base`): a frame
gives a :class:`~blastoseg.predict.count_fusion.FusedCount`, a stack a list, and
``iter_predict`` streams them, so the timeline, the CLI and the widgets count with it as with
one model. Each frame is localised once: the detector frames it (``embryo=``,
``diameter_px=``, ``localise=`` as for :class:`~blastoseg.predict.amodal.AmodalPredictor`)
and Cell-Net is given the same circle, so both models look at the same embryo and the
frame's framing costs one localisation, not two.

The detector runs with its score threshold lowered to ``low_threshold`` (the fusion's
candidates); its own count is still taken at its card's calibrated threshold. The kept
instances' visible masks were derived among all candidates, so use the fused result for
counts and centroids, and the detector's own run for outlines.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from blastoseg.errors import BlastosegError
from blastoseg.measure.frame_counts import COUNT_KINDS
from blastoseg.predict import base as _base
from blastoseg.predict.base import Step, StreamingPredictor
from blastoseg.predict.count_fusion import fuse_counts
from blastoseg.predict.embryo_box import EmbryoBox
from blastoseg.progress import run_with_progress

__all__ = ["FusedCounter", "FusedModels", "LOW_THRESHOLD", "load_counter",
           "load_fused_counter"]

#: the lowest detector score a fused count may take a cell from (the benchmarks' setting)
LOW_THRESHOLD = 0.05


@dataclass(frozen=True)
class FusedModels:
    """The two models a :class:`FusedCounter` runs, named as one (``entry`` of the contract)."""

    amodal: object
    density: object

    @property
    def name(self) -> str:
        return f"{self.amodal.name} + {self.density.name}"


class FusedCounter(StreamingPredictor):
    """An amodal predictor (run down to ``low_threshold``) and a count predictor, fused per
    frame. Build it with :func:`load_fused_counter`."""

    kind = "fused"

    def __init__(self, amodal, density, *, low_threshold: float = LOW_THRESHOLD) -> None:
        if getattr(amodal, "kind", None) != "amodal" or getattr(density, "kind", None) != "count":
            raise BlastosegError("a fused count needs an 'amodal' and a 'count' model; got "
                                 f"{getattr(amodal, 'kind', '?')!r} and "
                                 f"{getattr(density, 'kind', '?')!r}")
        if amodal.score_threshold > low_threshold:
            raise BlastosegError(f"the detector must run down to score {low_threshold} for the "
                                 f"fusion; it runs at {amodal.score_threshold}")
        self.amodal, self.density = amodal, density
        self.low_threshold = float(low_threshold)
        self.entry = FusedModels(amodal.entry, density.entry)
        self.device = amodal.device
        self.device_name = amodal.device_name

    @property
    def flips(self) -> int:
        """The detector's test-time flips (0: none); the density model sees each frame once."""
        return self.amodal.flips

    @property
    def calibrated_threshold(self) -> float:
        """The detector's calibrated count threshold (its own count in the fusion)."""
        return self.amodal.calibrated_threshold

    def run_frames(self, frames: Sequence, *, embryo: object = None,
                   diameter_px: float | None = None, localise: bool | None = None,
                   steady: int | None = None) -> Iterator[Step]:
        steps = self.amodal.run_frames(frames, embryo=embryo, diameter_px=diameter_px,
                                       localise=localise, steady=steady)  # checks them now
        return self._fused(frames, steps)

    def _fused(self, frames: Sequence, steps: Iterator[Step]) -> Iterator[Step]:
        for done, total, finished in steps:
            boxes = [EmbryoBox.from_dict(inst.meta["embryo"]) for _, inst in finished]
            chunk = [frames[i] for i, _ in finished]
            results = run_with_progress(self.density.iter_predict(chunk, embryo=boxes))
            fused = []
            for (index, inst), dens in zip(finished, results, strict=True):
                r = fuse_counts(dens, inst, count_threshold=self.calibrated_threshold,
                                low_threshold=self.low_threshold)
                r.meta.update({k: inst.meta[k] for k in ("embryo_unsure", "embryo_guess")
                               if k in inst.meta})
                fused.append((index, r))
            yield done, total, fused


def load_fused_counter(amodal: str | None = None, density: str | None = None,
                       device: str = "auto", **amodal_options) -> FusedCounter:
    """A :class:`FusedCounter` of two models (names, ``.safetensors`` files or job folders;
    None: the kinds' shipped defaults), loaded through the predictor cache; ``amodal_options``
    go to the amodal predictor (e.g. ``count_stacked``)."""
    det = _base.load_predictor(amodal, device, kind="amodal", score_threshold=LOW_THRESHOLD,
                               **amodal_options)
    dens = _base.load_predictor(density, device, kind="count")
    return FusedCounter(det, dens)



def _installed_default(kind: str) -> str | None:
    """The kind's shipped default model when it is installed, else None."""
    from blastoseg.kinds import KINDS
    from blastoseg.weights.registry import resolve_model

    name = KINDS[kind].default_model if kind in KINDS else None
    if name is None:
        return None
    try:
        resolve_model(name, kind=kind)
    except BlastosegError:
        return None
    return name


def load_counter(model: str | None = None, density_model: str | None = None, *,
                 fuse: bool = True, device: str = "auto", count_stacked: bool | None = None,
                 flips: int = 0):
    """The predictor that counts cells for the timeline and the count widgets.

    - ``model`` a count model: its density count alone (``density_model`` must be None);
    - ``model`` an amodal model (or None with ``amodal-default`` installed) and ``fuse``: a
      :class:`FusedCounter` with ``density_model`` (None: ``count-default`` when installed;
      when none is, the detector counts alone);
    - ``fuse`` False: the named model alone; with no model, the first installed default of
      :data:`COUNT_KINDS`.

    ``count_stacked`` switches an amodal model's layer rule on or off (None: its card's);
    ``flips`` (0, 4 or 8) runs an amodal model on that many flipped copies of each frame
    (:mod:`blastoseg.predict.instance_flips`; fused, the density model sees the frame once).
    """
    from blastoseg.weights.registry import resolve_model

    if model is None:
        defaults = {k: _installed_default(k) for k in COUNT_KINDS}
        if fuse and defaults["amodal"] is not None:
            model = defaults["amodal"]
        else:
            model = next((n for n in defaults.values() if n is not None), None)
        if model is None:
            raise BlastosegError("no count or amodal model is installed; name one")
    kind = resolve_model(model).kind
    if count_stacked is not None and kind != "amodal":
        raise BlastosegError("counting stacked cells (--count-stacked) applies to amodal "
                             f"models only; {model!r} is not one")
    if flips and kind != "amodal":
        raise BlastosegError("test-time flips (--flips) apply to amodal models only; "
                             f"{model!r} is not one")
    if kind not in COUNT_KINDS:
        raise BlastosegError(f"model {model!r} is of kind {kind!r}; the timeline counts cells "
                             "with a 'count' or 'amodal' model")
    if kind == "count":
        if density_model is not None:
            raise BlastosegError(f"{model!r} is a count model; a density model is fused with "
                                 "an amodal model's instances, so name an amodal model")
        return _base.load_predictor(model, device, kind="count")
    options = {} if count_stacked is None else {"count_stacked": count_stacked}
    if flips:
        options["flips"] = flips
    if fuse:
        density_model = density_model or _installed_default("count")
        if density_model is not None:
            return load_fused_counter(model, density_model, device, **options)
    elif density_model is not None:
        raise BlastosegError("a density model was named but fusion is off (--no-fuse)")
    return _base.load_predictor(model, device, kind="amodal", **options)
