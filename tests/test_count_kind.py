"""The ``count`` kind end to end on a tiny Cell-Net: ``blastoseg train count``, the
CountPredictor contract, ``blastoseg segment count`` and ``blastoseg eval count``."""

from __future__ import annotations

import json

import numpy as np
import pytest


def test_predictor_contract_frame_stack_and_integral(tiny_count):
    from blastoseg.io.dataset import read_dataset
    from blastoseg.predict.count import CountPredictor, CountResult

    ds = read_dataset(tiny_count)
    frame = ds.load_image(0)
    pred = CountPredictor("tiny-count", device="cpu")
    one = pred.predict(frame)
    assert isinstance(one, CountResult)
    assert one.density.shape == frame.shape[:2] and one.density.dtype == np.float32
    assert one.count == max(int(round(one.integral)), 0)
    # mapped back to the frame, the density keeps the crop's integral
    assert float(one.density.sum(dtype=np.float64)) == pytest.approx(one.integral, rel=1e-4)
    assert one.centroids.ndim == 2 and one.centroids.shape[1] == 2
    assert len(one.centroids) <= one.count
    assert {"embryo", "embryo_unsure", "embryo_box"} <= set(one.meta)
    stack = np.stack([ds.load_image(k) for k in range(2)])
    many = pred.predict(stack)
    assert isinstance(many, list) and [r.meta["frame"] for r in many] == [0, 1]
    whole = pred.predict(frame, localise=False)
    assert whole.meta["embryo"]["source"] == "whole frame"
    from blastoseg.predict.embryo_spec import FramingError

    with pytest.raises(FramingError):
        pred.predict(stack, embryo=[(60, 60, 40)] * 3)  # one circle too many


def test_cli_segment_and_eval_count(tiny_count, tmp_path, capsys):
    from blastoseg.cli import main

    out = tmp_path / "out"
    image = sorted((tiny_count / "images").iterdir())[0]
    assert main(["segment", "count", str(image), "--out", str(out), "--model", "tiny-count",
                 "--device", "cpu"]) == 0
    counts = (out / "counts.csv").read_text().splitlines()
    assert counts[0] == "frame,cell_count,integral" and len(counts) == 2
    assert (out / "centroids.csv").read_text().startswith("frame,y,x")
    import tifffile

    assert tifffile.imread(out / "density.tif").dtype == np.float32
    capsys.readouterr()
    assert main(["eval", "count", "--data", str(tiny_count), "--model", "tiny-count",
                 "--device", "cpu", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("count_exact", "count_mae", "count_within1", "detection_rate", "ed_px",
                "n_images"):
        assert key in result
    assert result["n_images"] == 3


def test_ablation_configs_train_through_the_task(tmp_path):
    """The switches of section IV (no RIAP, no PUC, MSE) reach the model and the loss."""
    from blastoseg.train.count_task import CountTask, cellnet_config, count_settings

    cfg = {"model": {"working_size": 64, "riap": False, "puc": False}, "loss": {"name": "mse"}}
    assert cellnet_config(cfg).riap is False and cellnet_config(cfg).puc is False
    assert count_settings(cfg)["loss"]["name"] == "mse"
    from blastoseg.train.task import TrainingError

    with pytest.raises(TrainingError, match="loss.name"):
        count_settings({"loss": {"name": "l1"}})
    assert CountTask.kind == "count"


def test_streaming_cancel_and_bad_frames(tiny_count):
    """The rest of the predictor contract (tests/test_predictor_contract.py runs it only on
    kinds with a shipped model, on the shipped one; here on the tiny model)."""
    from blastoseg.errors import InvalidImageError
    from blastoseg.io.dataset import read_dataset
    from blastoseg.predict.count import CountPredictor
    from blastoseg.progress import Cancelled

    ds = read_dataset(tiny_count)
    frames = [ds.load_image(k) for k in range(2)]
    pred = CountPredictor("tiny-count", device="cpu", batch_size=1)
    streamed = []
    work = pred.iter_predict(frames, on_result=lambda i, r: streamed.append(i))
    try:
        while True:
            next(work)
    except StopIteration as stop:
        assert stop.value == [] and streamed == [0, 1]
    with pytest.raises(Cancelled):
        pred.predict(np.stack(frames), cancel=lambda: True)
    with pytest.raises(InvalidImageError):
        pred.predict(np.full((96, 96), np.nan, np.float32))


def test_count_term_adds_the_integral_error_and_is_off_by_default():
    """loss.count_weight (our addition): 0 keeps the paper's eq. 2 alone; w > 0 adds
    w x |integral error|; bad values are refused."""
    import torch

    from blastoseg.train.count_losses import cbmse_loss
    from blastoseg.train.count_task import CountTask, count_settings
    from blastoseg.train.task import TrainingError

    assert count_settings({})["loss"]["count_weight"] == 0.0
    for bad in (-1, "x", float("nan"), float("inf"), None):
        with pytest.raises(TrainingError, match="count_weight"):
            count_settings({"loss": {"count_weight": bad}})
    target = torch.zeros(2, 1, 16, 16)
    target[:, :, 8, 8] = 1.0  # one cell each
    pred = torch.full_like(target, 0.5 / 256)  # half a cell, spread over the background
    task = CountTask.__new__(CountTask)
    for weight, extra in ((0.0, 0.0), (0.01, 0.01 * 0.5)):
        task.job = type("Job", (), {"config": {"loss": {"count_weight": weight}}})()
        got = float(task._loss(pred, target))
        assert got == pytest.approx(float(cbmse_loss(pred, target)) + extra, rel=1e-5)


def test_encoder_init_copies_the_amodal_body_and_refuses_what_does_not_fit():
    """init.encoder: Cell-Net's encoder starts as the shipped amodal detector's ResNet body
    (conv1/bn1/layer1/layer2 -> encoder.0/1/4/5); a resnet34 Cell-Net or a model of another
    kind is a clear error, and a fine-tune (job.base) skips the copy."""
    import torch

    from blastoseg.models.cellnet import CellNet, CellNetConfig
    from blastoseg.models.encoder_transfer import init_encoder_from_amodal
    from blastoseg.train.count_task import CountTask
    from blastoseg.train.task import TrainingError
    from blastoseg.weights.registry import get_model
    from blastoseg.weights.safetensors_io import WeightsError, load_weights

    body = load_weights(get_model("amodal-default").weights_path)
    model = CellNet(CellNetConfig(working_size=64))
    assert init_encoder_from_amodal(model, "amodal-default") == len(model.encoder.state_dict())
    enc = model.encoder.state_dict()
    for ours, theirs in (("0.weight", "conv1.weight"), ("1.running_var", "bn1.running_var"),
                         ("5.1.conv2.weight", "layer2.1.conv2.weight")):
        assert torch.equal(enc[ours], body["backbone.body." + theirs].float())
    with pytest.raises(WeightsError, match="resnet18"):
        init_encoder_from_amodal(CellNet(CellNetConfig(working_size=64, encoder="resnet34")),
                                 "amodal-default")
    with pytest.raises(WeightsError, match="amodal"):
        init_encoder_from_amodal(model, "localiser-default")

    task = CountTask.__new__(CountTask)
    cfg = {"init": {"encoder": "amodal-default"}, "model": {"working_size": 64}}
    task.job = type("Job", (), {"base": None, "hyper": {}})()
    built = task.build_model(cfg).encoder.state_dict()["0.weight"]
    assert torch.equal(built, body["backbone.body.conv1.weight"].float())
    task.job = type("Job", (), {"base": "count-x", "hyper": {}})()
    assert not torch.equal(task.build_model(cfg).encoder.state_dict()["0.weight"], built)
    task.job = type("Job", (), {"base": None, "hyper": {}})()
    with pytest.raises(TrainingError, match="init.encoder"):
        task.build_model({**cfg, "init": {"encoder": "localiser-default"}})


def test_relu_output_gives_exact_zeros_and_old_cards_keep_softplus():
    """output_activation "relu" (our option against the softplus floor): the background can
    be exactly 0; a card without the field is the paper-reading softplus model."""
    import torch

    from blastoseg.models.cellnet import CellNet, CellNetConfig, CellNetConfigError

    assert CellNetConfig.from_dict({"working_size": 64}).output_activation == "softplus"
    with pytest.raises(CellNetConfigError, match="output_activation"):
        CellNetConfig(working_size=64, output_activation="exp")
    model = CellNet(CellNetConfig(working_size=64, output_activation="relu"))
    torch.nn.init.constant_(model.head.bias, -1.0)  # every pre-activation negative
    with torch.no_grad():
        assert float(model(torch.rand(1, 1, 64, 64)).abs().sum()) == 0.0
        soft = CellNet(CellNetConfig(working_size=64))
        torch.nn.init.constant_(soft.head.bias, -1.0)
        assert float(soft(torch.rand(1, 1, 64, 64)).min()) > 0.0  # the floor relu removes
