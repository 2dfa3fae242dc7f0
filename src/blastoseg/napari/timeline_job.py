"""The work behind the "Count and timeline" dock widget, without Qt.

:func:`timeline_job` is a generator yielding ``(message, done, total)``: it loads the model
(a "count" or an "amodal" model, or both fused) in the worker thread, counts every frame of the image
layer (:func:`blastoseg.measure.frame_counts.iter_frame_counts`: only the counts, centroids
and density maps are kept), decodes a whole time-lapse into a
:class:`~blastoseg.measure.timeline.Timeline` and returns a :class:`TimelineRun` with the
layers to add:

- ``"<image>: count density"`` (a count model, alone or fused): the density maps, inferno,
  additive;
- ``"<image>: count centroids"``: a Points layer, one point per cell found.

Both are tagged ``metadata["blastoseg"] = {"group": <image>, "role": ...}`` with their own
roles, so a re-run replaces them and a segmentation of the same image leaves them alone.

:class:`EventTimes` is the events table's model: an embryologist corrects a division time
and the intervals follow. CLI twin: ``blastoseg timeline INPUT --out DIR``.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field

import numpy as np

from blastoseg.errors import BlastosegError
from blastoseg.io.frames import as_frames, frame_range_of
from blastoseg.measure.frame_counts import COUNT_KINDS, COUNTER_KINDS, FrameCount, iter_frame_counts
from blastoseg.measure.timeline import (
    EVENTS,
    FrameTimes,
    Timeline,
    build_timeline,
    frame_times,
    intervals_from_events,
)
from blastoseg.napari.result_layers import Placement, centroid_points
from blastoseg.progress import with_message

__all__ = ["CENTROIDS_ROLE", "COUNT_KINDS", "DENSITY_ROLE", "EventTimes", "TimelineRun",
           "layer_frame_times", "layer_hours", "timeline_job"]

DENSITY_ROLE = "count_density"
CENTROIDS_ROLE = "count_centroids"


@dataclass
class TimelineRun:
    """What a run gives the widget.

    Attributes
    ----------
    counts
        One :class:`FrameCount` per frame run.
    first_frame
        Stack index of ``counts[0]``.
    timeline
        The decoded timeline of a whole time-lapse; None for a single frame.
    layers
        LayerData tuples (density maps, centroids).
    model, kind
        The model that counted and its kind.
    flips
        Test-time flips of the amodal model (0: none).
    """

    counts: list[FrameCount]
    first_frame: int
    timeline: Timeline | None
    layers: list[tuple] = field(default_factory=list)
    model: str = ""
    kind: str = ""
    flips: int = 0


def layer_hours(metadata: dict, n_frames: int) -> tuple[list[float] | None, str]:
    """Frame hours an image layer carries (``metadata["blastoseg"]["hours"]`` or
    ``metadata["hours"]``, one per frame), or (None, why)."""
    tag = metadata.get("blastoseg") or {}
    for hours in (tag.get("hours"), metadata.get("hours")):
        if isinstance(hours, (list, tuple, np.ndarray)) and len(hours) == n_frames:
            try:
                return [float(h) for h in hours], "layer metadata"
            except (TypeError, ValueError):
                continue
    return None, "the image layer carries no frame hours"


def layer_frame_times(metadata: dict, n_frames: int, interval_min: float = 0.0,
                      start_h: float = 0.0) -> FrameTimes:
    """The frame times of a run on an image layer (:func:`~blastoseg.measure.timeline.
    frame_times`): the hours in its metadata win; else the form's frame interval in minutes
    (0: none) from ``start_h`` hours at frame 0; else None, and ``note`` says why."""
    hours, why = layer_hours(metadata, n_frames)
    interval = float(interval_min) if interval_min else None
    times = frame_times(n_frames, hours, "layer metadata", interval_min=interval,
                        start_h=float(start_h) if interval else None)
    if times.hours is None:
        times.note = why
    return times


def _layers(counts: list[FrameCount], name: str, axes: str, placement: Placement,
            extra: dict) -> list[tuple]:
    tag = {**extra, "group": name, "placement": placement.to_dict()}
    out = []
    if all(c.density is not None for c in counts):
        dens = np.stack([c.density for c in counts]).astype(np.float32)
        top = float(dens.max()) or 1.0
        out.append((dens if axes == "T" else dens[0], {
            **placement.layer_kwargs(), "name": f"{name}: count density",
            "colormap": "inferno", "blending": "additive", "opacity": 0.7,
            "contrast_limits": (0.0, top),
            "metadata": {"blastoseg": {**tag, "role": DENSITY_ROLE}}}, "image"))
    t_local = np.concatenate([np.full(len(c.centroids), t, float)
                              for t, c in enumerate(counts)]) if counts else np.zeros(0)
    yx = np.concatenate([c.centroids for c in counts]) if counts else np.zeros((0, 2))
    labels = np.concatenate([np.arange(1, len(c.centroids) + 1) for c in counts])
    data, kwargs, kind = centroid_points(t_local, yx, labels, name, placement,
                                         {"blastoseg": {**tag, "role": CENTROIDS_ROLE}})
    kwargs.update(name=f"{name}: count centroids", face_color="cyan")
    out.append((data, kwargs, kind))
    return out


def timeline_job(data, axes: str, frame_range: tuple[int, int],
                 get_predictor: Callable[[], object], *, name: str = "image",
                 rgb: bool = False, placement: Placement | None = None,
                 hours: Sequence[float] | None = None, time_source: str = "layer metadata",
                 steady: int = 0) -> Generator[tuple[str, int, int], None, TimelineRun]:
    """Count the frames ``frame_range`` of ``data`` and decode their timeline.

    Parameters
    ----------
    data
        The image layer's data: (Y, X) or (T, Y, X) (a trailing colour axis with ``rgb``).
    axes
        ``""`` or ``"T"``.
    frame_range
        ``(t0, t1)``: the frames to count; a timeline needs at least two.
    get_predictor
        Returns a count or amodal predictor (called here, in the worker thread).
    hours
        Time of every frame of the stack (hours), or None: frame indices.
    steady
        Frames of the steady framing (the running median of the localiser's circles,
        :mod:`blastoseg.predict.steady_framing`); 0 or 1: each frame localised alone.
    """
    t0, t1 = frame_range_of(data, axes, frame_range, "counting")
    frames, _ = as_frames(data if axes == "" else data[t0:t1], rgb=rgb)
    n = t1 - t0
    yield "loading the model", 0, n
    predictor = get_predictor()
    kind = getattr(predictor, "kind", "")
    if kind not in COUNTER_KINDS:
        raise BlastosegError(f"model {predictor.entry.name!r} is of kind {kind!r}; counting "
                             "takes a 'count' or 'amodal' model")
    message = f"counting cells on {predictor.device_name}" + (f" ({n} frames)" if n > 1 else "")
    yield message, 0, n
    framing = {"steady": int(steady)} if steady > 1 and n > 1 else {}
    counts = yield from with_message(iter_frame_counts(predictor, frames, **framing), message)
    timeline = None
    if n >= 2:
        span = None if hours is None else list(hours)[t0:t1]
        timeline = build_timeline([c.estimate for c in counts], span,
                                  time_source=time_source if span is not None else None)
    placement = Placement(axes=axes, first_frame=t0,
                          scale=(placement or Placement(axes=axes)).scale,
                          translate=(placement or Placement(axes=axes)).translate)
    flips = int(getattr(predictor, "flips", 0) or 0)
    extra = {"source_image": name, "model": predictor.entry.name, "kind": kind, "flips": flips}
    return TimelineRun(counts, t0, timeline, _layers(counts, name, axes, placement, extra),
                       predictor.entry.name, kind, flips)


class EventTimes:
    """The events table's model: event times (editable) and the intervals they give.

    ``frame`` of an edited event is the first frame at or after its time (None past the
    last frame)."""

    def __init__(self, timeline: Timeline, first_frame: int = 0) -> None:
        self.frame_hours = np.asarray(timeline.hours, float)
        self.first_frame = int(first_frame)
        self.has_hours = timeline.has_hours
        self.hours: dict[str, float | None] = dict(timeline.event_hours)
        self.frames: dict[str, int | None] = {
            k: (None if v is None else v[1] + self.first_frame)
            for k, v in timeline.events.items()}
        self.edited: set[str] = set()

    def set_event(self, name: str, hours: float | None) -> None:
        """Correct one event's time (None: the event did not happen)."""
        if name not in EVENTS:
            raise BlastosegError(f"unknown event {name!r}; events are {', '.join(EVENTS)}")
        if hours is not None and not np.isfinite(hours):
            raise BlastosegError(f"{name}: a time must be a number of hours")
        self.hours[name] = None if hours is None else float(hours)
        if hours is None:
            self.frames[name] = None
        else:
            later = np.flatnonzero(self.frame_hours >= float(hours) - 1e-9)
            self.frames[name] = int(later[0]) + self.first_frame if len(later) else None
        self.edited.add(name)

    @property
    def intervals(self) -> dict[str, float | None]:
        return intervals_from_events(self.hours)

    def out_of_order(self) -> list[str]:
        """Events earlier than the one before them (t3 before t2, ...): worth a warning."""
        known = [(k, self.hours[k]) for k in EVENTS if self.hours[k] is not None]
        return [b for (_, ha), (b, hb) in zip(known, known[1:], strict=False) if hb < ha]
