"""How close predicted timelines are to the true ones: event times and per-frame stages.

- ``event_mae_h``: mean absolute error of t2 ... t8 in hours over the events that exist in
  both the predicted and the true timeline of the same embryo (``event_mae_h_by_event`` per
  event); events only one side has are counted in ``events_missed`` / ``events_extra``;
- ``stage_accuracy``: share of frames whose decoded stage equals the true stage;
  ``stage_accuracy_raw``: the same for the rounded count estimate before decoding (what
  decoding gains);
- ``n_videos``, ``n_frames``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from blastoseg.errors import BlastosegError
from blastoseg.measure.timeline import EVENTS, N_STAGES, Timeline

__all__ = ["timeline_metrics"]


def timeline_metrics(predicted: Sequence[Timeline], truth: Sequence[Timeline]) -> dict:
    """Metrics of predicted timelines against the true ones (same embryos, same order, same
    frames)."""
    if len(predicted) != len(truth):
        raise BlastosegError(f"{len(predicted)} predicted timelines for {len(truth)} true ones")
    errors: dict[str, list[float]] = {k: [] for k in EVENTS}
    missed = extra = 0
    correct = correct_raw = n_frames = 0
    for p, t in zip(predicted, truth, strict=True):
        if len(p.stages) != len(t.stages):
            raise BlastosegError(f"a predicted timeline has {len(p.stages)} frames, its truth "
                                 f"{len(t.stages)}")
        for k in EVENTS:
            a, b = p.events.get(k), t.events.get(k)
            if a is not None and b is not None:
                errors[k].append(abs(a[0] - b[0]))
            elif b is not None:
                missed += 1
            elif a is not None:
                extra += 1
        true_stage = np.asarray(t.stages)
        correct += int(np.sum(np.asarray(p.stages) == true_stage))
        raw = np.clip(np.rint(p.estimates), 1, N_STAGES)
        correct_raw += int(np.sum(raw == true_stage))
        n_frames += len(true_stage)
    every = [e for v in errors.values() for e in v]
    return {
        "event_mae_h": float(np.mean(every)) if every else None,
        "event_mae_h_by_event": {k: (float(np.mean(v)) if v else None)
                                 for k, v in errors.items()},
        "events_matched": len(every), "events_missed": missed, "events_extra": extra,
        "stage_accuracy": correct / n_frames if n_frames else None,
        "stage_accuracy_raw": correct_raw / n_frames if n_frames else None,
        "n_videos": len(truth), "n_frames": n_frames,
    }
