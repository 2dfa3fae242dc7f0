"""Weight-space interpolation (WiSE-FT): exact mixes, refusals, the CLI verb."""

from __future__ import annotations

import json

import pytest
import torch

from blastoseg.cli import main
from blastoseg.weights import ModelCard, WeightsError, load_weights, save_weights, write_card
from blastoseg.weights.interpolate import interpolate_models, interpolate_state


def _model(folder, name, value, *, kind="overlap", config=None, shape=(2, 3)):
    weights = folder / f"{name}.safetensors"
    save_weights({"w": torch.full(shape, float(value)), "n": torch.tensor([7 + value],
                                                                           dtype=torch.int64)},
                 weights)
    from blastoseg.weights import sha256_file

    write_card(ModelCard(name=name, kind=kind, config=config or {"model": {"width": 3}},
                         sha256=sha256_file(weights)), folder / f"{name}.json")
    return weights


def test_the_mix_is_exact_and_integer_buffers_come_from_the_nearer_model():
    base = {"w": torch.zeros(2), "n": torch.tensor([1])}
    tuned = {"w": torch.full((2,), 10.0), "n": torch.tensor([5])}
    mixed = interpolate_state(base, tuned, 0.3)
    assert torch.allclose(mixed["w"], torch.full((2,), 3.0))
    assert int(mixed["n"]) == 1
    assert int(interpolate_state(base, tuned, 0.7)["n"]) == 5
    assert torch.equal(interpolate_state(base, tuned, 0.0)["w"], base["w"])
    assert torch.equal(interpolate_state(base, tuned, 1.0)["w"], tuned["w"])


@pytest.mark.parametrize("alpha", [-0.1, 1.5, float("nan")])
def test_alpha_outside_0_1_is_refused(alpha):
    with pytest.raises(WeightsError, match="alpha"):
        interpolate_state({"w": torch.zeros(1)}, {"w": torch.ones(1)}, alpha)


def test_different_architectures_are_refused(tmp_path):
    with pytest.raises(WeightsError, match="different tensors"):
        interpolate_state({"w": torch.zeros(1)}, {"v": torch.ones(1)}, 0.5)
    with pytest.raises(WeightsError, match="not the same architecture"):
        interpolate_state({"w": torch.zeros(1)}, {"w": torch.ones(2)}, 0.5)
    a = _model(tmp_path, "a", 0)
    b = _model(tmp_path, "b", 1, config={"model": {"width": 4}})
    with pytest.raises(WeightsError, match="configured differently"):
        interpolate_models(a, b, 0.5, "mix", out_dir=tmp_path / "out")
    c = _model(tmp_path, "c", 1, kind="amodal")
    with pytest.raises(WeightsError, match="cannot mix"):
        interpolate_models(a, c, 0.5, "mix", out_dir=tmp_path / "out")


def test_the_cli_writes_the_mix_and_records_its_parents(tmp_path):
    a = _model(tmp_path, "base-model", 0)
    b = _model(tmp_path, "tuned-model", 10)
    out = tmp_path / "out"
    assert main(["models", "interpolate", str(a), str(b), "--alpha", "0.25", "--name", "mix",
                 "--out", str(out)]) == 0
    state = load_weights(out / "mix.safetensors")
    assert torch.allclose(state["w"], torch.full((2, 3), 2.5))
    card = json.loads((out / "mix.json").read_text())
    assert card["kind"] == "overlap" and card["name"] == "mix"
    assert card["training"]["interpolation"]["alpha"] == 0.25
    assert card["training"]["interpolation"]["base"] == "base-model"
    from blastoseg.weights import resolve_model, verify

    assert verify(resolve_model(out / "mix.safetensors"))


def test_registering_the_mix_as_a_user_model(tmp_path, monkeypatch):
    monkeypatch.setenv("BLASTOSEG_HOME", str(tmp_path / "home"))
    a = _model(tmp_path, "base-model", 0)
    b = _model(tmp_path, "tuned-model", 4)
    entry = interpolate_models(a, b, 0.5, "mixed-user")
    assert entry.source == "user" and entry.name == "mixed-user"
    assert torch.allclose(load_weights(entry.weights_path)["w"], torch.full((2, 3), 2.0))
