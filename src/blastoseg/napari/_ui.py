"""Small pieces every blastoseg widget shares: settings that persist between sessions, how a
user error is shown (status line + napari notification, never a traceback), the blastoseg tag
in a layer's metadata, the model lists and the rows every model-running form has."""

from __future__ import annotations

import json
from pathlib import Path

from blastoseg.errors import BlastosegError

# every widget installs it on its viewer (issue 18 item 6: a napari crash on layer removal)
from blastoseg.napari.gl_context import guard_layer_removal as guard_layer_removal


def settings_path(file_name: str) -> Path:
    from blastoseg.weights import data_home

    return data_home() / file_name


def load_settings(file_name: str) -> dict:
    """A widget's saved settings ({} when none or unreadable)."""
    try:
        data = json.loads(settings_path(file_name).read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def save_settings(file_name: str, settings: dict) -> None:
    from blastoseg.io.atomic import atomic_write_text

    try:
        path = settings_path(file_name)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(settings, indent=1))
    except OSError:
        pass  # settings are a convenience; never fail a run over them


def layer_tag(layer) -> dict:
    """A layer's blastoseg tag, ``metadata["blastoseg"]`` ({} when it has none): what made it
    (``role``, ``group``, ``model``, ...), so widgets find their own layers and leave the
    others alone."""
    meta = getattr(layer, "metadata", None) or {}
    tag = meta.get("blastoseg") if isinstance(meta, dict) else None
    return tag if isinstance(tag, dict) else {}


def retag(layer, **values) -> None:
    """Update entries of a layer's blastoseg tag (metadata is replaced, so napari notices)."""
    layer.metadata = {**layer.metadata, "blastoseg": {**layer_tag(layer), **values}}


def report_error(status, exc: Exception) -> None:
    """Show a user error in a widget's status label and as a napari notification."""
    from napari.utils.notifications import show_error

    status.value = f"error: {exc}"
    show_error(str(exc))


def ask_model_file(parent) -> str | None:
    """File dialog for a model to import: a .safetensors file or a finished job's job.json."""
    from qtpy.QtWidgets import QFileDialog

    path, _ = QFileDialog.getOpenFileName(
        parent, "Import a model: a .safetensors file, or a finished job's job.json",
        "", "Model weights or training job (*.safetensors job.json)")
    return path or None


def ask_about_corrections(parent, group: str, layer_names: list[str]) -> str:
    """Ask what to do with corrected result layers a new run would replace: "keep" (under a
    new name), "replace" or "cancel" (closing the box cancels)."""
    from qtpy.QtWidgets import QMessageBox

    box = QMessageBox(parent)
    box.setIcon(QMessageBox.Icon.Question)
    box.setWindowTitle("Keep your corrections?")
    box.setText(f"You corrected the result of '{group}' ({', '.join(layer_names)}). "
                "Running again replaces its layers.")
    box.setInformativeText(f"Keep the corrected layers (as 'corrected {group}'), or replace "
                           "them with the new result?")
    keep = box.addButton("Keep corrections", QMessageBox.ButtonRole.AcceptRole)
    replace = box.addButton("Replace them", QMessageBox.ButtonRole.DestructiveRole)
    box.addButton(QMessageBox.StandardButton.Cancel)
    box.setDefaultButton(keep)
    box.exec()
    clicked = box.clickedButton()
    return "keep" if clicked is keep else "replace" if clicked is replace else "cancel"


def refresh_on_show(widget, refresh) -> None:
    """Call ``refresh()`` whenever ``widget``'s dock is shown (e.g. to re-list the models: one
    may have been trained or imported meanwhile)."""
    from qtpy.QtCore import QEvent, QObject

    class _OnShow(QObject):
        def eventFilter(self, obj, event):  # noqa: N802 (Qt's name)
            if event.type() == QEvent.Type.Show:
                refresh()
            return False

    widget._show_filter = _OnShow(widget.native)  # kept alive with the widget
    widget.native.installEventFilter(widget._show_filter)


def on_close(widget, closed) -> None:
    """Call ``closed(destroyed)`` when ``widget``'s dock is closed: napari takes the widget
    out of its dock (its parent becomes None; ``destroyed`` False) or Qt deletes it
    (``destroyed`` True, e.g. with the viewer's window)."""
    from qtpy.QtCore import QEvent, QObject

    class _OnClose(QObject):
        def eventFilter(self, obj, event):  # noqa: N802 (Qt's name)
            if event.type() == QEvent.Type.ParentChange and obj.parent() is None:
                closed(False)
            return False

    native = widget.native
    widget._close_filter = _OnClose(native)  # kept alive with the widget
    native.installEventFilter(widget._close_filter)
    native.destroyed.connect(lambda *_: closed(True))


def import_model_dialog(widget) -> None:
    """Ask for a model file and hand it to ``widget.import_from``; errors go to its status."""
    path = ask_model_file(widget.native)
    if path:
        try:
            widget.import_from(path)
        except (BlastosegError, OSError) as exc:
            report_error(widget.status, exc)


#: frame modes and devices offered by every widget that runs a model
MODES = ("current frame", "whole stack")
DEVICES = ("auto", "cpu", "cuda", "mps")


def device_and_mode(saved: dict, default_mode: str = MODES[0]):
    """The "device" and "frames" combo boxes every model widget shows, restored from its
    saved settings (an unknown saved value falls back to the default)."""
    from magicgui.widgets import ComboBox

    device = ComboBox(label="device", choices=DEVICES,
                      value=saved.get("device") if saved.get("device") in DEVICES else "auto")
    mode = ComboBox(label="frames", choices=MODES,
                    value=saved.get("mode") if saved.get("mode") in MODES else default_mode)
    return device, mode


def layer_index(viewer, layer, axis: int = 0) -> int:
    """Data index along ``axis`` of ``layer`` at the viewer's current position (the layer's
    scale and translate taken into account; clipped to the layer)."""
    import numpy as np

    dims = viewer.dims
    world = dims.point[dims.ndim - layer.ndim + axis]
    idx = int(round((world - layer.translate[axis]) / layer.scale[axis]))
    return int(np.clip(idx, 0, layer.data.shape[axis] - 1))


def frames_to_run(viewer, layer, axes: str, mode: str) -> tuple[int, int]:
    """(first, end) frames of a run: the displayed frame of a time-lapse in mode "current
    frame", else all its frames; (0, 1) for an image without a T axis (``axes`` has no "T",
    which then is the first axis)."""
    if "T" not in axes:
        return 0, 1
    if mode == MODES[0]:
        t = layer_index(viewer, layer, 0)
        return t, t + 1
    return 0, int(layer.data.shape[0])


def model_names(*kinds: str) -> list[str]:
    """Names of the registered models of the given kinds (:mod:`blastoseg.kinds`), in that
    order of kinds, each kind's shipped ``default_model`` before the rest of its kind; [] when
    the model folder cannot be read, so a broken user folder never breaks a form (the error
    comes when the model is used)."""
    from blastoseg.kinds import get_kind
    from blastoseg.weights.registry import list_models

    defaults = [get_kind(kind).default_model for kind in kinds]  # an unknown kind is a bug
    try:
        found = [[m.name for m in list_models(kind=kind)] for kind in kinds]
    except Exception:
        return []
    return [n for names, first in zip(found, defaults, strict=True)
            for n in sorted(names, key=lambda n: n != first)]


def card_number(model: str, kind: str, section: str, key: str, default: float) -> float:
    """A number in [0, 1] from a model card's ``config[section][key]`` (a threshold); the
    default when the model, the key or the value is missing or broken (a missing model is
    reported when the widget runs it)."""
    from blastoseg.weights.registry import resolve_model

    try:
        values = (resolve_model(model, kind=kind).card.config or {}).get(section) or {}
        value = float(values.get(key, default))
    except Exception:
        return default
    return value if 0.0 <= value <= 1.0 else default


def model_kind(model: str | None) -> str | None:
    """A registered model's kind; None when there is no model or it cannot be read (the
    error comes when the model is used)."""
    from blastoseg.weights.registry import resolve_model

    try:
        return resolve_model(model).kind if model else None
    except Exception:
        return None


def card_layer_rule(model: str) -> tuple[dict, bool] | None:
    """An amodal model card's layer rule and whether the card switches it on
    (``postprocess.layer_rule``, ``use_layer_rule``); None without one or on any error."""
    from blastoseg.weights.registry import resolve_model

    try:
        post = (resolve_model(model, kind="amodal").card.config or {}).get("postprocess") or {}
    except Exception:
        return None
    rule = post.get("layer_rule")
    return (rule, bool(post.get("use_layer_rule", True))) if isinstance(rule, dict) else None


def count_stacked_box():
    """The "count stacked cells (layer map)" box of the widgets that count with an amodal
    model; :func:`follow_layer_rule` keeps it in step with the chosen model."""
    from magicgui.widgets import CheckBox

    box = CheckBox(text="count stacked cells (layer map)", value=False)
    box.tooltip = ("count cells lying under others with the model's layer rule: better counts "
                   "at 6-8 cells on synthetic frames, worse exact counts on our real crops "
                   "(docs/counting_analysis.md); only for amodal models whose card has a rule")
    return box


def follow_layer_rule(box, model: str | None, saved_choice: bool | None = None) -> None:
    """Enable ``box`` when ``model``'s card has a layer rule and tick it as the card says (or
    as ``saved_choice``); otherwise disable and clear it."""
    rule = card_layer_rule(model) if model else None
    box.enabled = rule is not None
    box.value = rule is not None and (rule[1] if saved_choice is None else bool(saved_choice))


def count_stacked_option(box) -> dict:
    """The predictor option the box stands for ({} when the model has no rule)."""
    return {"count_stacked": bool(box.value)} if box.enabled else {}


#: test-time flips of an amodal model (predict/instance_flips.py): off, or 4 or 8 copies
FLIP_CHOICES = [("off", 0), ("4 flips (3x slower)", 4), ("8 flips (6x slower)", 8)]


def flips_box(saved: object, tooltip: str):
    """The "test-time flips" choice (off / 4 / 8) of the widgets that run an amodal model,
    set to ``saved`` when it is one of the choices."""
    from magicgui.widgets import ComboBox

    box = ComboBox(label="test-time flips", choices=FLIP_CHOICES,
                   value=saved if saved in (0, 4, 8) else 0)
    box.tooltip = tooltip
    return box


def default_image(combo, viewer) -> None:
    """Fill an empty "image" box with the layer a user means (as cellpose-napari does): the
    active layer when it is one of the choices, else the only image there is."""
    if combo.value is not None:
        return
    candidates = [c for c in combo.choices if c is not None]
    active = viewer.layers.selection.active
    if active is not None and any(c is active for c in candidates):
        combo.value = active
    elif len(candidates) == 1:
        combo.value = candidates[0]


class ScrollableDock:
    """Mixin for a ``Container(scrollable=True)`` docked in napari: never taller than the
    screen (Segment + Measure + Manage models made the window 1,649 px high on a 1,024 px
    screen, the Export buttons off-screen; issue 18 item 7).

    napari docks a magicgui widget's ``.native``, which for a scrollable container is the
    inner form: docked alone, it leaves its scroll area behind. ``.native`` here is the scroll
    area itself (magicgui's ``root_native_widget``), so the dock scrolls."""

    @property
    def native(self):
        return self.root_native_widget


def full_width(widget) -> None:
    """Let ``widget``, a row of a labelled form, take the form's whole width: its label's
    column would cost a table about 90 px of a narrow dock. Call after it is in the form."""
    labeled = widget._labeled_widget()  # magicgui's row around it: its label, then it
    if labeled is not None:
        labeled._label_widget.visible = False
