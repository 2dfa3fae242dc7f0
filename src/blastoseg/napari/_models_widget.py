"""Dock widget "Manage models": every registered model in a table, the selected model's card,
Rename and Delete for user models, Import (CLI twin: ``blastoseg models [show|rename|delete|
import]``; library: :mod:`blastoseg.weights.registry`).

Bundled models ship inside the package and cannot be changed: their buttons are disabled and
the widget says why. Delete asks for confirmation.
"""

from __future__ import annotations

import json
from pathlib import Path

from magicgui.widgets import Container, Label, LineEdit, PushButton, Table, TextEdit

from blastoseg.errors import BlastosegError
from blastoseg.napari import _ui

COLUMNS = ["name", "kind", "source", "base model", "metrics", "size", "created"]
# the card's keys in the order a person looks for them (the rest follow)
CARD_ORDER = ("name", "kind", "version", "description", "created", "base_model", "metrics",
              "training", "training_data", "sha256", "architecture")


def _metrics_text(metrics: dict, n: int = 3) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, (int, float)) else f"{k}={v}"
                     for k, v in list((metrics or {}).items())[:n])


def card_text(data: dict) -> str:
    """A model card as indented JSON, the keys people look for first (``metrics_before``
    first inside ``training``)."""
    ordered = {k: data[k] for k in CARD_ORDER if k in data} | data
    training = ordered.get("training")
    if isinstance(training, dict) and "metrics_before" in training:
        ordered["training"] = {"metrics_before": training["metrics_before"]} | training
    return json.dumps(ordered, indent=2)


def model_rows() -> list[tuple]:
    """``(entry, [cell texts])`` for every registered model, bundled first."""
    from blastoseg.weights import list_models

    rows = []
    for e in list_models():
        c = e.card
        rows.append((e, [e.name, e.kind, e.source, c.base_model or "",
                         _metrics_text(c.metrics, 2), f"{e.size_bytes / 2**20:.1f} MB",
                         (c.created or "")[:10]]))
    return rows


class ModelsWidget(_ui.ScrollableDock, Container):
    """Table of models, the selected card, Refresh / Import / Rename / Delete."""

    def __init__(self, napari_viewer) -> None:
        super().__init__(labels=False, scrollable=True)  # never taller than the screen
        self.viewer = napari_viewer
        _ui.guard_layer_removal(napari_viewer)  # napari crash on layer removal
        self.table = Table()
        self.table.read_only = True
        self.card = TextEdit(value="")
        self.card.read_only = True
        self.new_name = LineEdit(value="")
        self.new_name.tooltip = "the new name for the selected user model"
        self.rename_button = PushButton(text="Rename")
        self.delete_button = PushButton(text="Delete...")
        self.refresh_button = PushButton(text="Refresh")
        self.import_button = PushButton(text="Import model...")
        self.import_button.tooltip = "register a .safetensors model or a finished job's model"
        self.note = Label(value="")
        self.note.native.setWordWrap(True)
        self.status = Label(value="")
        self.status.native.setWordWrap(True)
        edit = Container(layout="horizontal", labels=False, widgets=[
            self.new_name, self.rename_button, self.delete_button])
        tools = Container(layout="horizontal", labels=False, widgets=[
            self.refresh_button, self.import_button])
        self.extend([self.table, Label(value="model card"), self.card, self.note, edit, tools,
                     self.status])
        self.native.setMinimumWidth(520)  # the table's columns up to the metrics
        self._entries: list = []
        self._setup_table()
        self.rename_button.changed.connect(self.rename_selected)
        self.delete_button.changed.connect(self.delete_selected)
        self.refresh_button.changed.connect(self.refresh)
        self.import_button.changed.connect(self._import_dialog)
        _ui.refresh_on_show(self, self.refresh)
        self.refresh()

    def _setup_table(self) -> None:
        from qtpy.QtGui import QFont, QFontDatabase
        from qtpy.QtWidgets import QAbstractItemView, QStyledItemDelegate

        native = self.table.native
        native.setItemDelegate(QStyledItemDelegate(native))  # show our text as is
        native.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        native.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        native.verticalHeader().setVisible(False)
        native.setMinimumHeight(120)
        native.setMaximumHeight(240)  # the card below gets the rest of the height
        native.itemSelectionChanged.connect(self._on_selection)
        font = QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont)
        font.setStyleHint(QFont.StyleHint.Monospace)
        self.card.native.setFont(font)
        self.card.native.setMinimumHeight(180)
        self.card.native.setLineWrapMode(self.card.native.LineWrapMode.NoWrap)

    # --- listing ------------------------------------------------------------------------------
    def refresh(self, select: str | None = None) -> None:
        """Re-read the registry; keep (or set) the selected model."""
        from qtpy.QtWidgets import QTableWidgetItem

        select = select or self.selected_name
        rows = model_rows()
        self._entries = [e for e, _ in rows]
        native = self.table.native
        native.blockSignals(True)
        native.clear()
        native.setColumnCount(len(COLUMNS))
        native.setRowCount(len(rows))
        native.setHorizontalHeaderLabels(COLUMNS)
        for i, (_, cells) in enumerate(rows):
            for j, text in enumerate(cells):
                native.setItem(i, j, QTableWidgetItem(text))
        native.resizeColumnsToContents()
        native.blockSignals(False)
        names = [e.name for e in self._entries]
        self.select(select if select in names else (names[0] if names else None))

    @property
    def names(self) -> list[str]:
        return [e.name for e in self._entries]

    @property
    def selected(self):
        rows = self.table.native.selectionModel().selectedRows() if self._entries else []
        return self._entries[rows[0].row()] if rows else None

    @property
    def selected_name(self) -> str | None:
        entry = self.selected
        return entry.name if entry is not None else None

    def select(self, name: str | None) -> None:
        native = self.table.native
        if name in self.names:
            native.selectRow(self.names.index(name))
        else:
            native.clearSelection()
        self._on_selection()

    def _on_selection(self) -> None:
        entry = self.selected
        user = entry is not None and entry.source == "user"
        for w in (self.rename_button, self.delete_button, self.new_name):
            w.enabled = user
        if entry is None:
            self.card.value, self.note.value = "", "no model selected"
            return
        try:
            text = card_text(json.loads(entry.card_path.read_text()))
        except (OSError, ValueError) as exc:
            text = f"cannot read {entry.card_path}: {exc}"
        self.card.value = text + f"\n\nweights: {entry.weights_path}"
        self.note.value = (
            "bundled with blastoseg: it cannot be renamed or deleted (import a copy under "
            "another name to change it)" if entry.source == "bundled"
            else f"user model in {Path(entry.weights_path).parent}")
        self.new_name.value = entry.name if user else ""

    # --- actions ------------------------------------------------------------------------------
    def rename_selected(self) -> None:
        from blastoseg.weights import rename_model

        entry, new = self.selected, self.new_name.value.strip()
        if entry is None or not new or new == entry.name:
            return
        try:
            renamed = rename_model(entry.name, new)
        except (BlastosegError, OSError) as exc:  # OSError: disk full, no permission
            self._report_error(exc)
            return
        self.status.value = f"renamed {entry.name} -> {renamed.name}"
        self.refresh(select=renamed.name)

    def confirm(self, question: str) -> bool:
        """Ask before a destructive action (tests replace this)."""
        from qtpy.QtWidgets import QMessageBox

        answer = QMessageBox.question(self.native, "Delete model", question,
                                      QMessageBox.StandardButton.Yes
                                      | QMessageBox.StandardButton.No,
                                      QMessageBox.StandardButton.No)
        return answer == QMessageBox.StandardButton.Yes

    def delete_selected(self) -> None:
        from blastoseg.weights import delete_model

        entry = self.selected
        if entry is None:
            return
        if not self.confirm(f"Delete the model {entry.name!r} ({entry.kind})? Its weights and "
                            f"card are removed from {Path(entry.weights_path).parent}."):
            self.status.value = "kept"
            return
        try:
            delete_model(entry.name)
        except (BlastosegError, OSError) as exc:
            self._report_error(exc)
            return
        self.status.value = f"deleted {entry.name}"
        self.refresh()

    def import_from(self, path: str | Path):
        from blastoseg.napari.torch_import import import_predictor_safely
        from blastoseg.train.finetune import import_model

        # an import builds the model to check its weights: torch must be imported the
        # guarded way inside napari (see torch_import)
        import_predictor_safely()
        entry = import_model(path)
        self.status.value = f"registered as {entry.name}"
        self.refresh(select=entry.name)
        return entry

    def _import_dialog(self) -> None:
        _ui.import_model_dialog(self)

    def _report_error(self, exc: Exception) -> None:
        _ui.report_error(self.status, exc)
