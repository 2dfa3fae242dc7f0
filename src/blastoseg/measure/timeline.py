"""The morphokinetic timeline: per-frame cell counts -> a non-decreasing stage sequence ->
division times t2 ... t8 and the intervals between them. numpy only.

**Stages.** Stage ``s`` (1 .. :data:`N_STAGES`) is "``s`` cells"; the last stage, 9, means
"9 cells or more" (the events stop at t8, so more stages would only cost time).

**Frame likelihoods.** A frame's count estimate ``e`` (the density integral of a count model,
or the number of amodal instances at the calibrated threshold) gives each stage the
likelihood of a Gaussian centred on the stage, ``N(e; s, sigma_s)`` with
``sigma_s = sigma0 + sigma1 * s`` (counts get harder as cells get smaller and hide each other),
mixed with a uniform outlier term ``eps`` (one frame whose count is far off, e.g. a blurred
or mis-framed frame, costs a bounded amount instead of dragging the whole path). For the
last stage the distance is ``max(0, S - e)``: any estimate of 9 or more fits it perfectly.
A Gaussian rather than a Poisson because the estimates are not counts of independent events:
a count model's integral is continuous and its error does not grow like sqrt(s).

**Decoding.** Viterbi over the stages with transitions only to the same or a higher stage
(cleavage does not undo itself; a true decrease, e.g. two cells fusing, is not modelled:
nothing here could tell it from a counting error). Each stage gained costs ``jump_penalty``
(log units), so a path goes up only when the frames after it agree; skipping stages is
allowed (two divisions between two frames) and pays the penalty per stage skipped. The
first frame may be at any stage (uniform prior).

**Events.** ``t<k>`` is the time of the first frame whose decoded stage is ``k`` *or more*:
a stage skipped by the decoded sequence (2 -> 4) gets the time of the first frame above it
(t3 = t4). An event the sequence never reaches is None. Intervals follow the usual
nomenclature (Ciray et al. 2014): ``cc2 = t3 - t2``, ``s2 = t4 - t3``, ``cc3 = t5 - t3``,
``s3 = t8 - t5``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from blastoseg.errors import BlastosegError

__all__ = [
    "EVENTS",
    "INTERVALS",
    "FrameTimes",
    "N_STAGES",
    "Timeline",
    "TimelineError",
    "build_timeline",
    "check_frame_hours",
    "decode_stages",
    "event_frames",
    "frame_times",
    "intervals_from_events",
    "stage_log_likelihoods",
]

#: stages 1 .. 9, the last one meaning "9 cells or more"
N_STAGES = 9
#: the division events: t<k> is the first frame with k cells or more
EVENTS = tuple(f"t{k}" for k in range(2, 9))
#: interval -> (later event, earlier event): value = later - earlier
INTERVALS = {"cc2": ("t3", "t2"), "s2": ("t4", "t3"), "cc3": ("t5", "t3"), "s3": ("t8", "t5")}

# Likelihood and transition parameters (see the module docstring); chosen once by reasoning,
# not tuned on the benchmark: sigma 0.45 of a cell at 2 cells growing to 0.75 at 8, one frame in
# twenty may be an outlier, each stage gained costs one log unit (about one frame's evidence of a
# one-cell difference), so a lone frame does not start a stage but a few agreeing frames do.
SIGMA0 = 0.35
SIGMA1 = 0.05
OUTLIER = 0.05
JUMP_PENALTY = 1.0


class TimelineError(BlastosegError):
    """A time-lapse that cannot give a timeline (one frame, bad frame times, ...)."""


def stage_log_likelihoods(estimates: Sequence[float], n_stages: int = N_STAGES, *,
                          sigma0: float = SIGMA0, sigma1: float = SIGMA1,
                          outlier: float = OUTLIER) -> np.ndarray:
    """(T, n_stages) log-likelihood of each stage (column ``s - 1``) for each frame's count
    estimate (see the module docstring)."""
    e = np.asarray(estimates, dtype=float).reshape(-1, 1)
    if not np.all(np.isfinite(e)):
        bad = np.flatnonzero(~np.isfinite(e.ravel())).tolist()
        raise TimelineError(f"count estimates must be finite numbers; frames {bad} are not")
    stages = np.arange(1, n_stages + 1, dtype=float).reshape(1, -1)
    dist = e - stages
    dist[:, -1] = np.maximum(0.0, -dist[:, -1])  # the last stage: "n_stages or more"
    sigma = sigma0 + sigma1 * stages
    gauss = np.exp(-0.5 * (dist / sigma) ** 2) / (sigma * np.sqrt(2 * np.pi))
    return np.log((1 - outlier) * gauss + outlier / n_stages)


def decode_stages(log_lik: np.ndarray, jump_penalty: float = JUMP_PENALTY) -> np.ndarray:
    """The most likely non-decreasing stage sequence (1-based, (T,) int) for (T, S)
    log-likelihoods: Viterbi where stage ``s`` may follow stage ``r <= s`` at a cost of
    ``jump_penalty * (s - r)``."""
    log_lik = np.asarray(log_lik, dtype=float)
    t_len, n = log_lik.shape
    s = np.arange(n)
    # trans[r, s]: log-probability of going from r to s (-inf for a decrease)
    trans = np.where(s[None, :] >= s[:, None], -jump_penalty * (s[None, :] - s[:, None]),
                     -np.inf)
    score = log_lik[0].copy()
    back = np.zeros((t_len, n), dtype=np.int64)
    for t in range(1, t_len):
        cand = score[:, None] + trans  # (from, to)
        back[t] = np.argmax(cand, axis=0)
        score = cand[back[t], s] + log_lik[t]
    path = np.empty(t_len, dtype=np.int64)
    path[-1] = int(np.argmax(score))
    for t in range(t_len - 1, 0, -1):
        path[t - 1] = back[t, path[t]]
    return path + 1


def event_frames(stages: Sequence[int]) -> dict[str, int | None]:
    """Event -> index of the first frame at that stage or above (None: never reached)."""
    st = np.asarray(stages)
    out: dict[str, int | None] = {}
    for name in EVENTS:
        k = int(name[1:])
        hit = np.flatnonzero(st >= k)
        out[name] = int(hit[0]) if len(hit) else None
    return out


def intervals_from_events(event_hours: Mapping[str, float | None]) -> dict[str, float | None]:
    """cc2, s2, cc3, s3 in hours from event times (None where an event is missing)."""
    out: dict[str, float | None] = {}
    for name, (later, earlier) in INTERVALS.items():
        a, b = event_hours.get(later), event_hours.get(earlier)
        out[name] = None if a is None or b is None else float(a) - float(b)
    return out


def check_frame_hours(hours: Sequence[float], names: Sequence[str] | None = None) -> np.ndarray:
    """The frame times as a float array; an error naming the first two frames whose times do
    not increase (``names``: how to call the frames, default "frame <i>")."""
    h = np.asarray(hours, dtype=float).ravel()
    if not np.all(np.isfinite(h)):
        bad = np.flatnonzero(~np.isfinite(h)).tolist()
        raise TimelineError(f"frame times must be numbers; frames {bad} have none")
    label = (lambda i: names[i]) if names is not None else (lambda i: f"frame {i}")
    for i in range(1, len(h)):
        if not h[i] > h[i - 1]:
            raise TimelineError(
                f"frame times must increase: {label(i)} ({h[i]:g} h) is not after "
                f"{label(i - 1)} ({h[i - 1]:g} h)")
    return h


@dataclass
class FrameTimes:
    """The frame times a timeline uses (see :func:`frame_times`): ``hours`` (None: frame
    indices), where they came from (``source``, "frame index" without times) and ``note``,
    a sentence for the user on what was used or ignored ("" when nothing needs saying)."""

    hours: list[float] | None
    source: str
    note: str = ""


def frame_times(n_frames: int, hours: Sequence[float] | None = None,
                source: str = "metadata", *, interval_min: float | None = None,
                start_h: float | None = None) -> FrameTimes:
    """The times of ``n_frames`` frames: the ones the input carries (``hours``, from
    ``source``: file names, TIFF or layer metadata, dataset) when there are any, since they
    are what the incubator recorded; else frame ``i`` at ``start_h + i * interval_min / 60``
    hours (``start_h``: hours post insemination at frame 0, default 0) when a frame interval
    is given; else None (the events are then in frames).

    Raises
    ------
    TimelineError
        An interval that is not a positive number, a start time without an interval, or
        ``hours`` that are not one per frame.
    """
    if interval_min is not None and not (np.isfinite(interval_min) and interval_min > 0):
        raise TimelineError(f"the frame interval must be a positive number of minutes; got "
                            f"{interval_min:g}")
    if start_h is not None and not np.isfinite(start_h):
        raise TimelineError("the time at frame 0 must be a number of hours")
    if start_h is not None and interval_min is None:
        raise TimelineError("a time at frame 0 needs a frame interval too")
    if hours is not None:
        if len(hours) != n_frames:
            raise TimelineError(f"{len(hours)} frame times for {n_frames} frames")
        note = (f"the frame times come from the {source}; the frame interval is not used"
                if interval_min is not None else "")
        return FrameTimes([float(h) for h in hours], source, note)
    if interval_min is None:
        return FrameTimes(None, "frame index")
    start = 0.0 if start_h is None else float(start_h)
    step = float(interval_min) / 60.0
    return FrameTimes([start + i * step for i in range(n_frames)],
                      f"frame interval ({interval_min:g} min, {start:g} h at frame 0)")


@dataclass
class Timeline:
    """One embryo's timeline.

    Attributes
    ----------
    hours
        (T,) time of each frame (hours, or frame indices when ``time_source`` says so).
    time_source
        Where the times came from ("dataset hours", "file names", "TIFF metadata",
        "layer metadata", "frame interval (...)" from :func:`frame_times`, or "frame index"
        when none were found: then the event "hours" are frame indices).
    estimates
        (T,) count estimate of each frame (before decoding).
    stages
        (T,) decoded stage, 1 .. :data:`N_STAGES` (the last: that many cells or more).
    events
        Event -> (hours, frame index), or None when never reached.
    """

    hours: np.ndarray
    time_source: str
    estimates: np.ndarray
    stages: np.ndarray
    events: dict[str, tuple[float, int] | None] = field(default_factory=dict)

    @property
    def has_hours(self) -> bool:
        return self.time_source != "frame index"

    @property
    def event_hours(self) -> dict[str, float | None]:
        return {k: (None if v is None else v[0]) for k, v in self.events.items()}

    @property
    def intervals(self) -> dict[str, float | None]:
        return intervals_from_events(self.event_hours)

    def to_dict(self) -> dict:
        """JSON-able: times, the events, the intervals and where the times came from."""
        return {
            "time_source": self.time_source, "n_frames": len(self.hours),
            "time_unit": "hours" if self.has_hours else "frames",
            "events": {k: (None if v is None else {"hours": round(v[0], 4), "frame": v[1]})
                       for k, v in self.events.items()},
            "intervals": {k: (None if v is None else round(v, 4))
                          for k, v in self.intervals.items()},
        }


def build_timeline(estimates: Sequence[float], hours: Sequence[float] | None = None, *,
                   time_source: str | None = None, frame_names: Sequence[str] | None = None,
                   jump_penalty: float = JUMP_PENALTY) -> Timeline:
    """Decode per-frame count estimates into a :class:`Timeline`.

    Parameters
    ----------
    estimates
        One count estimate per frame, in frame order.
    hours
        Time of each frame in hours (increasing); None: frame indices are used and
        ``time_source`` becomes "frame index".
    time_source
        Where ``hours`` came from (kept in the timeline and its outputs); default "given
        hours", or "frame index" without ``hours``.
    frame_names
        What to call the frames in an error about their times (default "frame <i>").

    Raises
    ------
    TimelineError
        Fewer than two frames, times that do not match the frames or do not increase.
    """
    est = np.asarray(estimates, dtype=float).ravel()
    if len(est) < 2:
        raise TimelineError(f"a timeline needs a time-lapse of at least 2 frames; got "
                            f"{len(est)} frame{'s' if len(est) != 1 else ''}")
    if hours is None:
        h, time_source = np.arange(len(est), dtype=float), "frame index"
    else:
        h = check_frame_hours(hours, frame_names)
        time_source = time_source or "given hours"
        if len(h) != len(est):
            raise TimelineError(f"{len(h)} frame times for {len(est)} frames")
    stages = decode_stages(stage_log_likelihoods(est), jump_penalty)
    events = {k: (None if f is None else (float(h[f]), f))
              for k, f in event_frames(stages).items()}
    return Timeline(hours=h, time_source=time_source, estimates=est, stages=stages,
                    events=events)
