"""The learned embryo localiser: CircleNet (kind ``localiser``) on whole frames.

:class:`LocaliserPredictor` follows the predictor contract (:mod:`blastoseg.predict.base`):
``predict(frame)`` gives a :class:`LocaliserResult` (the embryo's circle as an
:class:`~blastoseg.predict.embryo_box.EmbryoBox`, method ``"learned"``), a stack a list of them.
The box's confidence is the heat map's peak (0..1).

:func:`learned_circle` is what :func:`blastoseg.predict.localise.locate_embryo` calls: it
keeps the shipped ``localiser-default`` loaded on the CPU (a 128 px forward pass takes a few
milliseconds; moving frames to a GPU would cost more than it saves).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from blastoseg.io.frames import grey_frame
from blastoseg.models.circle_net import CircleNet
from blastoseg.predict.base import PredictorBase, Step
from blastoseg.predict.embryo_box import EmbryoBox
from blastoseg.targets.circle_heatmap import decode_circles, letterbox

__all__ = ["LocaliserPredictor", "LocaliserResult", "learned_circle"]


@dataclass
class LocaliserResult:
    """The embryo found in one frame: ``box`` (EmbryoBox) and ``meta`` (``frame`` in stacks)."""

    box: Any
    meta: dict = field(default_factory=dict)


class LocaliserPredictor(PredictorBase):
    """A loaded CircleNet; ``predict(frame)`` -> :class:`LocaliserResult`."""

    kind: ClassVar[str] = "localiser"

    def build_model(self) -> torch.nn.Module:
        return CircleNet(self.card.model)

    def circles(self, frames: Sequence[np.ndarray], names: Sequence[int | None] | None = None
                ) -> list[tuple[float, float, float, float]]:
        """(cx, cy, r, confidence) in frame pixels for each 2D frame; ``names``: each frame's
        index in errors (None: the only frame)."""
        size = self.card.model.input_size
        batch, boxes = [], []
        names = [None] * len(frames) if names is None else names
        for frame, name in zip(frames, names, strict=True):
            t, box = letterbox(grey_frame(frame, name, min_side=16), size)
            batch.append(t)
            boxes.append(box)
        with self.inference():
            out = self.model(torch.stack(batch).to(self.device))
        circles, conf = decode_circles(out)
        return [(*lb.to_frame(*c), float(p)) for lb, c, p in zip(boxes, circles, conf, strict=True)]

    def run_frames(self, frames: Sequence, **kind_options: Any) -> Iterator[Step]:
        if kind_options:
            raise TypeError(f"unknown localiser option(s): {', '.join(sorted(kind_options))}")
        total = len(frames)
        for t in range(total):
            frame = np.asarray(frames[t])
            cx, cy, r, conf = self.circles([frame], [t if total > 1 else None])[0]
            box = EmbryoBox(cx=cx, cy=cy, radius=r, confidence=round(conf, 4),
                            image_shape=frame.shape[:2], source="localised", method="learned")
            yield t + 1, total, [(t, LocaliserResult(box))]


_default: dict[str, LocaliserPredictor] = {}
_lock = threading.Lock()


def learned_circle(grey: np.ndarray, model: str | None = None
                   ) -> tuple[float, float, float, float]:
    """(cx, cy, r, confidence) of the embryo in a 2D frame by the learned localiser
    (``model`` None: the shipped ``localiser-default``), kept loaded on the CPU."""
    key = model or ""
    with _lock:
        predictor = _default.get(key)
        if predictor is None:
            predictor = _default[key] = LocaliserPredictor(model, device="cpu")
    return predictor.circles([grey])[0]
