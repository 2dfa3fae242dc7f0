"""Dock widget "Segment blastomeres": a :class:`~.model_run_widget.ModelRunWidget` for
amodal models (:class:`blastoseg.predict.amodal.AmodalPredictor`; CLI twin: ``blastoseg
segment amodal``).

The work runs in a napari thread worker over :func:`segment_job`, a generator that yields
``(message, done, total)`` after focal-plane selection steps, after loading the model and after
every batch of frames, so the viewer stays responsive, napari's progress bar moves and Cancel
stops between batches. The result becomes layers through :mod:`.result_layers`.

The embryo circle (Shapes layer "<image>: embryo framing", :mod:`._segment_framing`) shows
where the model will look on the displayed frame; moving or drawing it, the diameter field
and "frames are already crops" become the predictor's ``embryo=``, ``diameter_px=`` and
``localise=``. When the localiser is unsure on the displayed frame, the first click on
Segment only says so (the button then reads "Segment anyway"); a second click segments with
the guess shown.
"""

from __future__ import annotations

from collections.abc import Callable, Generator

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, FloatSpinBox

from blastoseg.napari import _ui
from blastoseg.napari._segment_framing import SEGMENT
from blastoseg.napari._segment_framing_form import FramingFormMixin
from blastoseg.napari.model_run_widget import ModelRun, ModelRunWidget
from blastoseg.napari.result_layers import Placement, ResultLayerBuilder, result_layers_of

BEST = "best focus"
SETTINGS_FILE = "napari_segment_widget.json"
#: what a result's meta says about its framing (kept per frame for the embryo circle and to
#: say why a frame has no cells)
FRAMING_META = ("embryo", "embryo_unsure", "embryo_guess", "embryo_box")


# --- the work (no Qt) -------------------------------------------------------------------------

def segment_job(data, axes: str, frame_range: tuple[int, int], plane: int | str,
                get_predictor: Callable[[], object], group: str = "result",
                placement: Placement | None = None, framing: dict | None = None
                ) -> Generator[tuple[str, int, int], None, dict]:
    """Choose planes, load the model, segment; yields (message, done, total).

    Each frame's result goes straight into a :class:`ResultLayerBuilder` (compressed arrays
    for stacks) and is dropped, so a long time-lapse is never held as instance masks.
    ``framing`` holds the predictor's ``embryo``, ``diameter_px`` and ``localise`` arguments
    (``embryo`` one box for all frames or one entry per frame of ``frame_range``).
    Returns a dict with ``builder`` (call ``layer_data()`` for the layers), ``planes`` (plane
    index per frame or None), ``framing`` (each frame's framing metadata) and ``predictor``.
    """
    from blastoseg.predict.focus import best_focus_planes

    t0, t1 = frame_range
    n = t1 - t0
    planes = None
    if axes in ("", "T"):
        frames = [np.asarray(data)] if axes == "" else [np.asarray(data[t]) for t in range(t0, t1)]
    else:
        stack = data[None] if axes == "Z" else data
        frames, planes = [], []
        for i, t in enumerate(range(t0, t1)):
            z = int(best_focus_planes(np.asarray(stack[t])[None])[0]) if plane == BEST else int(plane)
            planes.append(z)
            frames.append(np.asarray(stack[t, z]))
            if plane == BEST and (i % 8 == 7 or i == n - 1):
                yield f"choosing the best focal plane ({i + 1}/{n})", 0, n
    yield "loading the model", 0, n
    predictor = get_predictor()
    yield f"segmenting on {predictor.device_name}", 0, n
    built: list[ResultLayerBuilder] = []
    metas: list[dict] = [{} for _ in range(n)]

    def keep(i: int, inst) -> None:
        if not built:
            built.append(ResultLayerBuilder(n, inst.shape, group, placement))
        built[0].add(i, inst)
        meta = inst.meta or {}
        metas[i] = {k: meta[k] for k in FRAMING_META if k in meta}

    yield from ((f"segmenting on {predictor.device_name}", done, total)
                for done, total in predictor.iter_predict(frames, on_result=keep,
                                                          **(framing or {})))
    return {"builder": built[0], "planes": planes, "predictor": predictor, "framing": metas}


def load_settings() -> dict:
    return _ui.load_settings(SETTINGS_FILE)


# --- the form ---------------------------------------------------------------------------------

class SegmentWidget(FramingFormMixin, ModelRunWidget):
    """Form: image, focal plane, model, device, threshold, frames, the framing rows; Segment /
    Cancel; progress."""

    kind = "amodal"
    settings_file = SETTINGS_FILE
    progress_title = "Segmenting blastomeres"
    image_hint = "an image (e.g. File > Open Sample > blastoseg)"
    card_threshold_key = ("postprocess", "score_threshold", 0.5)
    run_text = SEGMENT
    default_mode = _ui.MODES[1]
    focal_planes = True
    image_nullable = True
    _cancel_message = "cancelling (stops after the current batch)..."
    _pbar_follows_total = False  # napari's bar keeps the frame count it started with

    def _add_fields(self, saved: dict) -> None:
        # callable choices: napari's reset_choices (on every layer change) recomputes them
        # from the chosen image instead of falling back to "best focus" only
        self.plane = ComboBox(label="focal plane", choices=self._plane_choices)
        self.calibrated = CheckBox(text="model's calibrated threshold",
                                   value=bool(saved.get("calibrated", True)))
        self.calibrated.tooltip = (
            "use the score threshold stored with the model (chosen by 'blastoseg calibrate "
            "amodal' for the best cell counts); untick to set your own")
        self.threshold = FloatSpinBox(label="score threshold", min=0.0, max=1.0, step=0.05,
                                      value=float(saved.get("score_threshold", 0.5)))
        self.stacked = _ui.count_stacked_box()
        self.flips = _ui.flips_box(saved.get("flips", 0), (
            "detect the cells in each frame's mirror images too and merge them: better "
            "outlines (held-out synthetic mAP 0.70 -> 0.74 with 4, 0.75 with 8) and closer "
            "counts on our real crops, at 3x or 6x the time (docs/models/amodal.md#test-time-flips)"))
        self._framing_form(saved)
        self._framing_state()

    def _form_rows(self) -> list:
        return [self.image, self.plane, self.model, self.device, self.calibrated,
                self.threshold, self.stacked, self.flips, self.mode, self._diameter_row,
                self.crops, self.scope, self.steady, self._framing_buttons, self.framing_info,
                self.run_button, self.cancel_button, self.progress, self.device_used,
                self.status]

    def _connect(self, saved: dict) -> None:
        self.model.changed.connect(self._on_threshold_source_changed)
        self.calibrated.changed.connect(self._on_threshold_source_changed)
        self._on_threshold_source_changed()
        self.model.changed.connect(lambda *_: _ui.follow_layer_rule(self.stacked,
                                                                    self.model.value))
        _ui.follow_layer_rule(self.stacked, self.model.value, self._saved.get("count_stacked"))
        self._connect_framing()

    def _extra_settings(self) -> dict:
        return {"calibrated": bool(self.calibrated.value),
                "count_stacked": bool(self.stacked.value), "flips": int(self.flips.value),
                "score_threshold": float(self.threshold.value),
                "plane": self.plane.value, "diameter": float(self.diameter.value),
                "diameter_unit": self.diameter_unit.value,
                "already_crops": bool(self.crops.value), "framing_scope": self.scope.value,
                "steady_framing": bool(self.steady.value)}

    # --- choices ------------------------------------------------------------------------------
    def _plane_choices(self, _widget=None) -> list:
        """"best focus" and, for an image with focal planes, each plane."""
        choices: list = [(BEST, BEST)]
        layer = getattr(self, "image", None) and self.image.value
        try:
            axes = self._axes_of(layer) if layer is not None else ""
        except Exception:  # an unusable image: the image row reports it
            axes = ""
        if "Z" in axes:
            n_z = layer.data.shape[axes.index("Z")]
            names = _ui.layer_tag(layer).get("focal_planes")
            names = names if names and len(names) == n_z else list(range(n_z))
            choices += [(f"plane {z} (F{names[z]})" if names != list(range(n_z))
                         else f"plane {z}", z) for z in range(n_z)]
        return choices

    def _image_changed(self, layer, axes: str) -> None:
        self.plane.reset_choices()
        choices = self._plane_choices()
        want = self._saved.get("plane", BEST)
        self.plane.value = want if want in [c[1] for c in choices] else BEST
        self.plane.enabled = "Z" in axes
        self.scope.enabled = self.steady.enabled = "T" in axes
        self._follow_image(layer, axes)

    def _on_threshold_source_changed(self, *_args) -> None:
        """With "calibrated" ticked, show the model's own threshold and lock the box."""
        self.threshold.enabled = not self.calibrated.value
        if self.calibrated.value and self.model.value:
            self.threshold.value = self.card_threshold(self.model.value)

    # --- running ------------------------------------------------------------------------------
    def _predictor_options(self) -> dict:
        # none: the model's calibrated threshold (the predictor's own default)
        options = {} if self.calibrated.value else {"score_threshold": float(self.threshold.value)}
        if self.flips.value:
            options["flips"] = int(self.flips.value)
        return {**options, **_ui.count_stacked_option(self.stacked)}

    def _make_run(self, layer, axes: str, frame_range: tuple[int, int],
                  get_predictor: Callable[[], object]) -> ModelRun:
        self._framing_options()  # a diameter in um needs a pixel size
        plane = self.plane.value if "Z" in axes else BEST
        n_z = layer.data.shape[axes.index("Z")] if "Z" in axes else 1
        placement = Placement(axes=axes, n_z=n_z, first_frame=frame_range[0],
                              scale=tuple(layer.scale), translate=tuple(layer.translate))
        self._pending = {"layer": layer, "group": layer.name, "placement": placement}
        return ModelRun(segment_job, [layer.data, axes, frame_range, plane, get_predictor,
                                      layer.name, placement],
                        total=frame_range[1] - frame_range[0])

    def _replaced_by_run(self, group: str) -> list:
        return result_layers_of(list(self.viewer.layers), group)

    def _ready_to_run(self, run: ModelRun) -> bool:
        if not self._framing_checked():
            return False
        run.args.append(self._framing_kwargs(run.args[2]))  # segment_job's framing=
        return True

    # --- worker callbacks (GUI thread) --------------------------------------------------------
    def _show_device(self, message: str) -> None:
        if self._predictor is not None and message.startswith("segmenting"):
            self.device_used.value = self._predictor.device_name

    def _show_result(self, result: dict) -> None:
        pending, builder = self._pending, result["builder"]
        predictor = result["predictor"]
        extra = {"source_image": pending["group"], "model": predictor.entry.name,
                 "device": predictor.device_name,
                 "score_threshold": float(predictor.score_threshold),
                 "flips": int(predictor.flips)}
        if result["planes"] is not None:
            extra["focal_planes_used"] = [int(z) for z in result["planes"]]
        builder.extra.update(extra)
        added = self._replace_layers(self._replaced_by_run(pending["group"]),
                                     builder.layer_data())
        amodal = self._select_first(added, "amodal")
        unsure = self._show_run_framing(pending, result.get("framing") or [])
        counts = builder.counts
        n_layers = f"{len(amodal)} amodal layer" + ("s" if len(amodal) != 1 else "")
        where = (f"frame {pending['placement'].first_frame}: " if "T" in pending["placement"].axes
                 and len(counts) == 1 else "")
        self.status.value = (
            f"{len(counts)} frames, {min(counts)} to {max(counts)} cells, {n_layers}"
            if len(counts) > 1 else f"{where}{counts[0]} cells in {n_layers}") + unsure
        self._explain_no_cells(counts, result.get("framing") or [],
                               float(predictor.score_threshold))

    def _explain_no_cells(self, counts: list[int], metas: list[dict], threshold: float) -> None:
        """Frames without cells: say why and what to try (status line and a warning)."""
        from napari.utils.notifications import show_warning

        from blastoseg.predict.no_cells import why_no_cells

        empty = [i for i, c in enumerate(counts) if c == 0]
        if not empty:
            return
        first = self._pending["placement"].first_frame
        meta = metas[empty[0]] if empty[0] < len(metas) else {}
        which = "" if len(counts) == 1 else (
            f"{len(empty)} frame{'s' if len(empty) > 1 else ''} without cells; frame "
            f"{first + empty[0]}: ")
        why = f"{which}{why_no_cells(meta, threshold, advice='napari')}"
        self.status.value += f". No cells: {why}"
        show_warning(f"No cells: {why}")
