"""The "Manage models" widget in a headless viewer: lists bundled and user models, shows the
selected card, renames and deletes user models (after confirmation), refuses bundled ones."""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.gui


@pytest.fixture
def user_model(tmp_path, monkeypatch):
    from blastoseg.weights import ModelCard, register_model, save_weights

    monkeypatch.setenv("BLASTOSEG_HOME", str(tmp_path / "home"))

    def make(name: str, register: bool = True):
        import json
        import shutil

        from blastoseg.weights import bundled_models_dir

        path = tmp_path / f"{name}.safetensors"
        config = {}
        if register:
            save_weights({"w": torch.arange(3.0)}, path, {"kind": "amodal"})
        else:  # an import checks that the weights load into the card's network: real ones
            shutil.copy(bundled_models_dir() / "amodal-default.safetensors", path)
            config = json.loads((bundled_models_dir() / "amodal-default.json").read_text()
                                )["config"]
        card = ModelCard(name=name, kind="amodal", base_model="amodal-default", config=config,
                         metrics={"mAP": 0.5}, training={"metrics_before": {"mAP": 0.4}})
        if register:
            return register_model(path, card)
        from blastoseg.weights import sha256_file, write_card

        card.sha256 = sha256_file(path)
        write_card(card, path.with_suffix(".json"))
        return path

    return make


def test_models_widget_lists_renames_deletes_and_refuses_bundled(make_napari_viewer, qtbot,
                                                                  user_model):
    from blastoseg.napari._models_widget import COLUMNS, ModelsWidget
    from blastoseg.weights import list_models

    user_model("my-model")
    viewer = make_napari_viewer()
    widget = ModelsWidget(viewer)
    assert "amodal-default" in widget.names and "my-model" in widget.names
    table = widget.table.native
    assert [table.horizontalHeaderItem(j).text() for j in range(table.columnCount())] == COLUMNS
    row = widget.names.index("my-model")
    cells = [table.item(row, j).text() for j in range(len(COLUMNS))]
    assert cells[:5] == ["my-model", "amodal", "user", "amodal-default", "mAP=0.5"]
    assert cells[5].endswith("MB") and cells[6].startswith("20")

    # the selected model's card, pretty JSON; a user model can be changed
    widget.select("my-model")
    assert '"name": "my-model"' in widget.card.value and '"metrics_before"' in widget.card.value
    assert widget.rename_button.enabled and widget.delete_button.enabled
    widget.new_name.value = "bad name!"
    widget.rename_selected()
    assert "invalid model name" in widget.status.value and "my-model" in widget.names
    widget.new_name.value = "renamed"
    widget.rename_selected()
    assert widget.selected_name == "renamed" and "my-model" not in widget.names
    assert {e.name for e in list_models(kind="amodal")} >= {"renamed"}

    # delete asks first: "no" keeps the model, "yes" removes it
    asked = []
    widget.confirm = lambda question: asked.append(question) or False
    widget.delete_selected()
    assert "renamed" in widget.names and "renamed" in asked[0] and widget.status.value == "kept"
    widget.confirm = lambda question: True
    widget.delete_selected()
    assert "renamed" not in widget.names and "renamed" not in [e.name for e in list_models()]

    # bundled models cannot be changed: the buttons are off, and the library refuses too
    widget.select("amodal-default")
    assert not widget.rename_button.enabled and not widget.delete_button.enabled
    assert "cannot be renamed or deleted" in widget.note.value
    widget.delete_selected()
    assert "cannot be changed" in widget.status.value and "amodal-default" in widget.names

    # import a .safetensors with its card; a model registered elsewhere appears when shown
    entry = widget.import_from(user_model("imported", register=False))
    assert entry.name == "imported" and widget.selected_name == "imported"
    from qtpy.QtGui import QShowEvent
    from qtpy.QtWidgets import QApplication

    viewer.window.add_dock_widget(widget, name="Manage models")
    user_model("trained-meanwhile")
    QApplication.sendEvent(widget.native, QShowEvent())  # the dock is shown (headless viewer)
    assert "trained-meanwhile" in widget.names
    assert widget.selected_name == "imported"  # the selection is kept across refreshes
