"""Weights I/O (safetensors, clear errors) and the model registry (bundled + user)."""

from __future__ import annotations

import pickle

import pytest
import torch
from torch import nn

from blastoseg.errors import BlastosegError
from blastoseg.weights import (
    ModelCard,
    WeightsError,
    data_home,
    delete_model,
    get_model,
    list_models,
    load_into_model,
    load_weights,
    read_metadata,
    register_model,
    rename_model,
    resolve_model,
    save_weights,
    sha256_file,
    user_models_dir,
    verify,
    write_card,
)
from blastoseg.weights import registry as registry_module


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("BLASTOSEG_HOME", str(tmp_path / "home"))
    bundled = tmp_path / "bundled"
    bundled.mkdir()
    monkeypatch.setattr(registry_module, "bundled_models_dir", lambda: bundled)
    return bundled


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2))


def _weights(tmp_path, name="m", kind="toy"):
    path = save_weights(_net().state_dict(), tmp_path / f"{name}.safetensors", {"kind": kind})
    card = ModelCard(name=name, kind=kind, architecture="Sequential", config={"hidden": 5},
                     metrics={"mAP": 0.5}, training_data=[{"path": "d", "count": 3}])
    return path, card


def test_user_dir_from_env(tmp_path):
    assert data_home() == tmp_path / "home"
    assert user_models_dir() == tmp_path / "home" / "models"


def test_save_load_roundtrip_and_fp16(tmp_path):
    net = _net()
    p = save_weights(net.state_dict(), tmp_path / "w.safetensors", {"kind": "toy", "n": 3})
    assert read_metadata(p) == {"kind": "toy", "n": "3"}
    state = load_weights(p)
    for k, v in net.state_dict().items():
        assert torch.equal(state[k], v)
    p16 = save_weights(net.state_dict(), tmp_path / "w16.safetensors", fp16=True)
    assert p16.stat().st_size < p.stat().st_size
    assert load_weights(p16)["0.weight"].dtype == torch.float16
    other = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2))
    load_into_model(other, p16)
    assert other[0].weight.dtype == torch.float32
    torch.testing.assert_close(other[0].weight, net[0].weight, atol=1e-3, rtol=1e-3)


def test_corrupt_weights_raise_weights_error(tmp_path):
    good, _ = _weights(tmp_path)
    rnd = tmp_path / "random.safetensors"
    rnd.write_bytes(bytes(range(256)) * 10)
    trunc = tmp_path / "trunc.safetensors"
    trunc.write_bytes(good.read_bytes()[:-20])
    trunc_head = tmp_path / "trunc_head.safetensors"
    trunc_head.write_bytes(good.read_bytes()[:30])
    pkl = tmp_path / "pickle.safetensors"
    pkl.write_bytes(pickle.dumps({"a": 1}))
    tsave = tmp_path / "torch.safetensors"
    torch.save(_net().state_dict(), tsave)
    tiny = tmp_path / "tiny.safetensors"
    tiny.write_bytes(b"abc")
    cases = {rnd: "not a valid", trunc: "truncated", trunc_head: "not a valid", pkl: "pickle",
             tsave: "pickle", tiny: "only 3 bytes", tmp_path / "missing.safetensors": "not found"}
    for path, words in cases.items():
        with pytest.raises(WeightsError, match=words) as info:
            load_weights(path)
        assert str(path) in str(info.value)
        assert isinstance(info.value, BlastosegError)


def test_weights_that_do_not_fit_the_model(tmp_path):
    good, card = _weights(tmp_path)
    with pytest.raises(WeightsError, match="missing key"):
        load_into_model(nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2),
                                      nn.Linear(2, 2)), good)
    with pytest.raises(WeightsError, match="shape mismatch.*0.weight"):
        load_into_model(nn.Sequential(nn.Linear(3, 7), nn.ReLU(), nn.Linear(7, 2)), good)
    with pytest.raises(WeightsError, match="'toy' model but a 'amodal' model is needed"):
        load_into_model(_net(), good, card=card.to_dict(), expected_kind="amodal")


def test_registry_lifecycle(tmp_path, _home):
    assert list_models() == []
    path, card = _weights(tmp_path)
    entry = register_model(path, card)
    assert entry.source == "user" and entry.name == "m"
    assert entry.weights_path.parent == user_models_dir()
    assert entry.card.sha256 == sha256_file(path)
    assert verify(entry)
    assert [e.name for e in list_models()] == ["m"]
    assert list_models(kind="other") == []
    assert get_model("m").card.metrics == {"mAP": 0.5}
    with pytest.raises(WeightsError, match="no model named 'nope'.*Available models: m"):
        get_model("nope")
    with pytest.raises(WeightsError, match="exists already"):
        register_model(path, card)
    register_model(path, card, name="m2")
    with pytest.raises(WeightsError, match="invalid model name"):
        register_model(path, card, name="../evil")
    # a card whose sha256 does not match the file
    bad = ModelCard.from_dict({**card.to_dict(), "sha256": "0" * 64})
    with pytest.raises(WeightsError, match="does not match its model card"):
        register_model(path, bad, name="m3")

    renamed = rename_model("m", "renamed")
    assert renamed.weights_path.is_file() and not entry.weights_path.exists()
    assert get_model("renamed").card.name == "renamed"
    with pytest.raises(WeightsError, match="exists already"):
        rename_model("renamed", "m2")
    delete_model("m2")
    assert [e.name for e in list_models()] == ["renamed"]

    # tampering is caught by verify
    target = get_model("renamed")
    data = bytearray(target.weights_path.read_bytes())
    data[-1] ^= 0xFF
    target.weights_path.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="damaged or was replaced"):
        verify(target)
    assert verify(target, raise_error=False) is False

    # bundled models are listed with their source and refuse changes
    bpath, bcard = _weights(_home, name="default-toy")
    bcard.sha256 = sha256_file(bpath)
    write_card(bcard, _home / "default-toy.json")
    names = {e.name: e.source for e in list_models()}
    assert names == {"default-toy": "bundled", "renamed": "user"}
    assert verify(get_model("default-toy"))
    with pytest.raises(WeightsError, match="bundled"):
        delete_model("default-toy")
    with pytest.raises(WeightsError, match="bundled"):
        rename_model("default-toy", "x")
    with pytest.raises(WeightsError, match="bundled model"):
        register_model(path, card, name="default-toy")


def test_resolve_model_by_path(tmp_path):
    path, card = _weights(tmp_path)
    with pytest.raises(WeightsError, match="no model card"):
        resolve_model(path)
    write_card(card, path.with_suffix(".json"))
    entry = resolve_model(str(path))
    assert entry.source == "file" and entry.kind == "toy"
    with pytest.raises(WeightsError, match="'toy' model, but a 'count'"):
        resolve_model(path, kind="count")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    (tmp_path / "broken.safetensors").write_bytes(path.read_bytes())
    with pytest.raises(WeightsError, match="not valid JSON"):
        resolve_model(tmp_path / "broken.safetensors")


def test_header_length_starting_with_0x80_is_not_taken_for_a_pickle(tmp_path):
    import struct

    state = {"w": torch.ones(2)}
    for pad in range(300):  # find metadata that makes the header length end in byte 0x80
        path = save_weights(state, tmp_path / "w.safetensors", metadata={"pad": "x" * pad})
        if path.read_bytes()[0] == 0x80:
            break
    assert path.read_bytes()[0] == 0x80 and struct.unpack("<Q", path.read_bytes()[:8])[0] > 0
    assert torch.equal(load_weights(path)["w"], state["w"])


def _job_folder(tmp_path, name="job", kind="toy", output_name=None):
    """A training job folder laid out as blastoseg.train writes it (job.json, checkpoints/,
    output/NAME.safetensors + NAME.json), without training."""
    import json

    job = tmp_path / name
    (job / "checkpoints").mkdir(parents=True)
    (job / "job.json").write_text(json.dumps({"kind": kind, "train_data": ["d"],
                                              "output_name": output_name}))
    (job / "checkpoints" / "last.pt").write_bytes(b"checkpoint")
    return job


def test_resolve_model_accepts_a_training_job_folder(tmp_path, monkeypatch):
    import os

    job = _job_folder(tmp_path, output_name="toy-b")
    # not finished: a checkpoint but no output/
    with pytest.raises(WeightsError, match="has not finished.*blastoseg train"):
        resolve_model(str(job), kind="toy")
    out = job / "output"
    out.mkdir()
    for name in ("toy-a", "toy-b"):
        path, card = _weights(out, name=name)
        write_card(card, path.with_suffix(".json"))
    os.utime(out / "toy-b.safetensors", ns=(1, 1))  # older, but the one job.json names
    for given in (job, str(job), job / "job.json"):
        entry = resolve_model(given, kind="toy")
        assert entry.weights_path == out / "toy-b.safetensors" and entry.source == "file"
        assert entry.card.name == "toy-b" and entry.kind == "toy"
    # a bare folder name (no slash) in the working folder works too
    monkeypatch.chdir(tmp_path)
    assert resolve_model("job", kind="toy").weights_path.samefile(out / "toy-b.safetensors")
    with pytest.raises(WeightsError, match="training job for 'toy' models, but a 'amodal'"):
        resolve_model(job, kind="amodal")


def test_resolve_model_job_folder_without_output_name_takes_the_newest(tmp_path):
    import os

    job = _job_folder(tmp_path)
    (job / "checkpoints" / "last.pt").unlink()
    with pytest.raises(WeightsError, match="has no finished model"):
        resolve_model(job)
    (job / "output").mkdir()
    for i, name in enumerate(("new", "old")):
        path, card = _weights(job / "output", name=name)
        write_card(card, path.with_suffix(".json"))
        os.utime(path, ns=(10**9 * (10 - i), 10**9 * (10 - i)))
    assert resolve_model(job).name == "new"


def test_resolve_model_folder_that_is_not_a_job(tmp_path):
    folder = tmp_path / "just-a-folder"
    folder.mkdir()
    with pytest.raises(WeightsError, match="not a training job folder"):
        resolve_model(str(folder))
