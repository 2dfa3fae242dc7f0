"""Unusable model files are refused when imported or verified (issue 18, item 21), not when a
user segments with them."""

from __future__ import annotations

import json
import shutil

import pytest

from blastoseg.cli import main
from blastoseg.weights import bundled_models_dir


def _copy(tmp_path, name, weights_of=None, **card_changes):
    src = bundled_models_dir()
    card = json.loads((src / f"{name}.json").read_text())
    card.update(card_changes)
    card["name"] = "broken-model"
    card["sha256"] = ""
    shutil.copy(src / f"{weights_of or name}.safetensors", tmp_path / "broken-model.safetensors")
    (tmp_path / "broken-model.json").write_text(json.dumps(card))
    return tmp_path / "broken-model.safetensors"


def _changed_architecture(name):
    card = json.loads((bundled_models_dir() / f"{name}.json").read_text())
    config = json.loads(json.dumps(card["config"]))
    config["model"]["fpn_channels"] = 32  # the weights have 64
    return config


CASES = {
    "a card with another architecture": lambda tmp: _copy(
        tmp, "amodal-default", config=_changed_architecture("amodal-default")),
    "another kind's weights under an amodal card": lambda tmp: _copy(
        tmp, "amodal-default", weights_of="overlap-default"),
    "a card whose kind does not match the tensors": lambda tmp: _copy(
        tmp, "overlap-default", kind="brightfield"),
    "a card of a kind blastoseg does not know": lambda tmp: _copy(
        tmp, "overlap-default", kind="oocyte-v9"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_import_refuses_an_unusable_model(case, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("BLASTOSEG_HOME", str(tmp_path / "home"))
    weights = CASES[case](tmp_path)
    code = main(["models", "import", str(weights)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "blastoseg: error:" in err and "Traceback" not in err
    assert not (tmp_path / "home" / "models" / "broken-model.safetensors").exists()


def test_verify_builds_and_loads_a_good_model(capsys):
    assert main(["models", "verify", "overlap-default"]) == 0
    assert "weights load into the network its card describes" in capsys.readouterr().out
