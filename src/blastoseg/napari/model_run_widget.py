"""The dock widget that runs a model on an image layer: what the Segment, Overlap and
Brightfield widgets share.

:class:`ModelRunWidget` owns the rows every such form has (image, model, device, frames), the
Run and Cancel buttons, the progress bar, the "device used" and status lines, and what a run
does from the click to the layers: check the input, decide the image's axes
(:func:`blastoseg.io.frames.image_axes`) and frames, save the form's settings, load the model
in the worker thread through :func:`blastoseg.predict.base.load_predictor` (cached), run the
kind's Qt-free job in a napari thread worker (:mod:`._job_runner`), show a user error in the
status line without a traceback, and hand the result to the subclass.

A subclass declares its model kind (:mod:`blastoseg.kinds`: the model list, the predictor and
the messages come from it) and fills in four hooks::

    class OverlapWidget(ModelRunWidget):
        kind = "overlap"
        settings_file = "napari_overlap_widget.json"
        progress_title = "Overlap map"
        image_hint = "a brightfield or embryo image"
        card_threshold_key = ("threshold", "overlap", 0.3)

        def _add_fields(self, saved): ...        # its own widgets (a threshold box, ...)
        def _form_rows(self): ...                # every row of the form, in order
        def _make_run(self, layer, axes, frames, get_predictor): ...  # -> ModelRun
        def _show_result(self, result): ...      # the job's result -> layers, status

and may override :meth:`_connect` (restore and wire its fields; a ``threshold`` field that
starts at the model card's calls :meth:`_threshold_follows_card`), :meth:`_image_changed`,
:meth:`_predictor_options`, :meth:`_ready_to_run`, :meth:`_extra_settings` and
:meth:`_replaced_by_run` (the layers a run on an image replaces: corrections painted into
them are kept, :mod:`.result_edits`; the user is asked first, through
:attr:`ModelRunWidget.ask_about_corrections`).
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import ClassVar

from magicgui.widgets import ComboBox, Container, Label, ProgressBar, PushButton

from blastoseg.errors import BlastosegError, InvalidImageError
from blastoseg.napari import _ui
from blastoseg.napari._job_runner import JobRunnerMixin
from blastoseg.napari.result_edits import edited_layers, keep_as_corrected, remember_written


@dataclass
class ModelRun:
    """One run, as a subclass describes it: the Qt-free job (a generator yielding
    ``(message, done, total)``), its arguments and the number of frames napari's progress bar
    starts with."""

    job: Callable[..., Generator]
    args: list
    kwargs: dict = field(default_factory=dict)
    total: int = 1


class ModelRunWidget(_ui.ScrollableDock, JobRunnerMixin, Container):
    """Form: image, model, device, frames (+ the subclass's fields); Run / Cancel; progress;
    device used; status. See the module docstring for what a subclass declares."""

    # --- what a subclass declares --------------------------------------------------------------
    #: the model kind it runs (blastoseg.kinds)
    kind: ClassVar[str]
    #: where its settings are saved (in the blastoseg data folder)
    settings_file: ClassVar[str]
    #: the description on napari's progress bar
    progress_title: ClassVar[str]
    #: what to open when no image is chosen ("no image layer: open <image_hint> and ...")
    image_hint: ClassVar[str] = "an image"
    #: (section, key, default) of the threshold in the model card the form starts from
    card_threshold_key: ClassVar[tuple[str, str, float] | None] = None
    run_text: ClassVar[str] = "Run"
    model_tooltip: ClassVar[str | None] = None
    default_mode: ClassVar[str] = _ui.MODES[0]
    #: whether (T, Z, Y, X) stacks with focal planes are accepted
    focal_planes: ClassVar[bool] = False
    #: whether the form's rows carry their labels on the left
    form_labels: ClassVar[bool] = True
    #: whether the image box may be empty
    image_nullable: ClassVar[bool] = False

    def __init__(self, napari_viewer) -> None:
        super().__init__(labels=self.form_labels, scrollable=True)  # never taller than the screen
        self.viewer = napari_viewer
        _ui.guard_layer_removal(napari_viewer)  # napari crash on layer removal
        self._saved = _ui.load_settings(self.settings_file)
        self.image = ComboBox(label="image", choices=self._image_layers,
                              nullable=self.image_nullable)
        self.model = ComboBox(label="model", choices=self._models)
        if self.model_tooltip:
            self.model.tooltip = self.model_tooltip
        self.device, self.mode = _ui.device_and_mode(self._saved, self.default_mode)
        self.run_button = PushButton(text=self.run_text)
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.progress = ProgressBar(value=0, min=0, max=1, label="progress")
        self.device_used = Label(value="-", label="device used")
        self.status = Label(value="", label="status")
        self.status.native.setWordWrap(True)
        self.status.native.setMinimumWidth(200)
        self.worker = None
        self._pbar = None
        self._predictor = None  # the last one loaded (load_predictor keeps it cached)
        self._pending: dict = {}  # what the GUI knew of the running job
        self._kept_note = ""  # "your corrections were kept as ...", for the status line
        #: asks what to do with corrected layers a run would replace: (parent, group,
        #: layer names) -> "keep", "replace" or "cancel" (a Qt dialog; tests put a function)
        self.ask_about_corrections = _ui.ask_about_corrections
        self._add_fields(self._saved)
        self.extend(self._form_rows())
        if self._saved.get("model") in self.model.choices:
            self.model.value = self._saved["model"]
        self._connect(self._saved)
        self.image.changed.connect(self._on_image_changed)
        _ui.default_image(self.image, self.viewer)
        self.run_button.changed.connect(self.start)
        self.cancel_button.changed.connect(self.cancel)
        self._on_image_changed()
        _ui.refresh_on_show(self, self.model.reset_choices)
        self.stop_jobs_when_closed()

    def reset_choices(self, *args) -> None:
        """Re-list the choices (napari calls this when layers change); an empty image box
        takes the active or only image."""
        super().reset_choices(*args)
        _ui.default_image(self.image, self.viewer)

    # --- hooks ----------------------------------------------------------------------------------
    def _add_fields(self, saved: dict) -> None:
        """Make the subclass's own widgets (``saved``: its settings of the last run)."""

    def _form_rows(self) -> list:
        """Every row of the form, in order (the base rows included)."""
        return [self.image, self.model, self.device, self.mode, self._run_row(),
                self.progress, self.device_used, self.status]

    def _connect(self, saved: dict) -> None:
        """Restore and wire the subclass's fields (the saved model is chosen already)."""

    def _image_changed(self, layer, axes: str) -> None:
        """Another image was chosen (``axes``: "" when none or unusable)."""

    def _extra_settings(self) -> dict:
        """The subclass's fields to save with the model, device and frames."""
        return {}

    def _predictor_options(self) -> dict:
        """Options for the predictor's constructor (e.g. ``score_threshold``), read on the GUI
        thread when Run is clicked."""
        return {}

    def _make_run(self, layer, axes: str, frame_range: tuple[int, int],
                  get_predictor: Callable[[], object]) -> ModelRun:
        """The job for the chosen image; may raise a BlastosegError (shown, no run).
        ``get_predictor()`` loads the model; the job calls it in the worker thread."""
        raise NotImplementedError

    def _ready_to_run(self, run: ModelRun) -> bool:
        """Last check before the run starts (False: no run; tell the user why)."""
        return True

    def _replaced_by_run(self, group: str) -> list:
        """The layers a run on the image named ``group`` replaces when it shows its result
        (none by default); corrections in them are kept (see :meth:`_corrections_settled`)."""
        return []

    def _show_result(self, result) -> None:
        """The job's result becomes layers (GUI thread); set the status line."""
        raise NotImplementedError

    # --- shared pieces for the hooks ------------------------------------------------------------
    def _run_row(self) -> Container:
        """Run and Cancel side by side."""
        return Container(layout="horizontal", labels=False,
                         widgets=[self.run_button, self.cancel_button])

    @classmethod
    def card_threshold(cls, model: str) -> float:
        """The threshold stored in a model's card (:attr:`card_threshold_key`; its default
        when the card has none or cannot be read)."""
        section, key, default = cls.card_threshold_key  # type: ignore[misc]
        return _ui.card_number(model, cls.kind, section, key, default)

    def _threshold_follows_card(self, saved: dict) -> None:
        """``self.threshold`` (a subclass's field) starts at the saved value when the saved
        model is chosen, else at the model's card threshold, and takes the card threshold of
        every model chosen afterwards (without firing its ``changed`` signal: choosing a model
        is not changing the threshold of the last result)."""
        self._show_card_threshold()
        if saved.get("model") == self.model.value and "threshold" in saved:
            self.threshold.value = float(saved["threshold"])
        self.model.changed.connect(self._show_card_threshold)

    def _show_card_threshold(self, *_args) -> None:
        if self.model.value:
            with self.threshold.changed.blocked():
                self.threshold.value = self.card_threshold(self.model.value)

    def _axes_of(self, layer) -> str:
        """Non-spatial axes of an image layer ("", "T", "Z", "TZ"); raises for shapes the kind
        cannot run on."""
        from blastoseg.io.frames import image_axes

        hint = _ui.layer_tag(layer).get("axes")
        return image_axes(tuple(layer.data.shape), bool(layer.rgb), hint,
                          focal_planes=self.focal_planes)

    def _replace_layers(self, old: list, data: list[tuple]) -> list:
        """Remove a previous run's layers (re-running replaces, it does not pile up) and add
        this run's LayerData tuples with their display settings; returns the added layers."""
        from napari.layers import Layer

        from blastoseg.napari.result_layers import apply_display

        old = [la for la in old if la in self.viewer.layers]
        if edited_layers(old):  # corrected while the model ran: never thrown away unasked
            self._keep(old)
        else:
            for la in old:
                self.viewer.layers.remove(la)
        added = []
        for tup in data:
            layer = Layer.create(*tup)
            self.viewer.add_layer(layer)
            apply_display(layer)
            remember_written(layer)
            added.append(layer)
        return added

    def _keep(self, layers: list) -> str:
        """Move corrected result layers to a group of their own (the next run leaves them)."""
        taken = {str(_ui.layer_tag(la).get("group") or la.name) for la in self.viewer.layers}
        kept = keep_as_corrected(layers, taken)
        self._kept_note = f"; your corrections were kept as '{kept}'"
        return kept

    def _corrections_settled(self, layer) -> bool:
        """Before a run: if the layers it would replace hold the user's corrections, ask
        whether to keep them (under a new name), replace them or not run; False: no run."""
        old = self._replaced_by_run(layer.name)
        edited = edited_layers(old)
        if not edited:
            return True
        group = str(_ui.layer_tag(edited[0]).get("group") or layer.name)
        answer = self.ask_about_corrections(self.native, group, [la.name for la in edited])
        if answer == "keep":
            self._keep(old)
        elif answer == "replace":
            for la in old:  # what is there now counts as written: later edits are kept
                remember_written(la)
        else:
            self.status.value = "not run: your corrections are unchanged"
            return False
        return True

    def _select_first(self, layers: list, role: str) -> list:
        """Make the first layer of ``role`` the active one (where one edits); returns the
        layers of that role."""
        found = [la for la in layers if _ui.layer_tag(la).get("role") == role]
        if found:
            self.viewer.layers.selection.active = found[0]
        return found

    # --- choices --------------------------------------------------------------------------------
    def _image_layers(self, _widget=None) -> list:
        """Image layers, except the ones blastoseg made (maps, previews)."""
        from napari.layers import Image

        return [(la.name, la) for la in self.viewer.layers
                if isinstance(la, Image) and _ui.layer_tag(la).get("role") is None]

    def _models(self, _widget=None) -> list[str]:
        return _ui.model_names(self.kind)

    def _on_image_changed(self, *_args) -> None:
        layer = self.image.value
        axes = ""
        if layer is not None:
            try:
                axes = self._axes_of(layer)
            except BlastosegError:
                axes = ""
        self.mode.enabled = "T" in axes
        self._image_changed(layer, axes)

    # --- running --------------------------------------------------------------------------------
    def settings(self) -> dict:
        """What the form saves for the next session."""
        return {"model": self.model.value, "device": self.device.value,
                "mode": self.mode.value, **self._extra_settings()}

    def _load_predictor(self, model: str, device: str, **options):
        """Runs in the worker thread: the model of this widget's kind, loaded or taken from
        :func:`~blastoseg.predict.base.load_predictor`'s cache."""
        from blastoseg.predict.base import load_predictor

        return load_predictor(model, device, kind=self.kind, **options)

    def _get_predictor(self, model: str, device: str, **options):
        self._predictor = self._load_predictor(model, device, **options)
        return self._predictor

    def _check_input(self):
        """The chosen image layer, once an image and a model are chosen."""
        layer = self.image.value
        if layer is None:
            raise InvalidImageError(f"no image layer: open {self.image_hint} and choose it in "
                                    "the 'image' box")
        if not self.model.value:
            raise BlastosegError(
                f"no {self.kind} model is installed: train one with 'blastoseg train "
                f"{self.kind}' or register one with 'blastoseg models'")
        return layer

    def _import_predictor(self) -> None:
        """Import torch and the predictor on the GUI thread (guarded: see torch_import), so
        the worker never imports them first."""
        from blastoseg.kinds import get_kind
        from blastoseg.napari.torch_import import import_predictor_safely

        import_predictor_safely()
        get_kind(self.kind).predictor_class()

    def start(self) -> None:
        """Run the model on the chosen image (the Run button)."""
        if self.worker is not None:
            return
        self._kept_note = ""
        try:
            layer = self._check_input()
            axes = self._axes_of(layer)
            frame_range = _ui.frames_to_run(self.viewer, layer, axes, self.mode.value)
            model, device = self.model.value, self.device.value
            options = self._predictor_options()
            run = self._make_run(layer, axes, frame_range,
                                 lambda: self._get_predictor(model, device, **options))
            self._import_predictor()
        except BlastosegError as exc:
            self._report_error(exc)
            return
        if not self._ready_to_run(run) or not self._corrections_settled(layer):
            return
        self._saved = self.settings()
        _ui.save_settings(self.settings_file, self._saved)
        self.start_job(run.job, *run.args, desc=self.progress_title, total=run.total,
                       **run.kwargs)

    # --- worker callbacks (GUI thread) ----------------------------------------------------------
    def _on_done(self, result) -> None:
        self._show_result(result)
        if self._kept_note:
            self.status.value += self._kept_note
            self._kept_note = ""
        if self._predictor is not None:
            self.device_used.value = self._predictor.device_name

    def _report_error(self, exc: Exception) -> None:
        _ui.report_error(self.status, exc)
