"""The ``overlap`` training task, pixel metrics, ``blastoseg eval/segment overlap``."""

import json

import numpy as np
import pytest
import torch

from blastoseg.metrics.pixel import PixelCounts, PixelMetrics, format_pixel_report


def test_pixel_counts_by_hand():
    prob = np.array([[0.9, 0.2], [0.6, 0.1]])
    target = np.array([[1, 1], [0, 0]])
    c = PixelCounts()
    c.add(prob, target, 0.5)
    assert (c.tp, c.fp, c.fn, c.tn) == (1, 1, 1, 1)
    m = c.metrics()
    assert m["precision"] == 0.5 and m["recall"] == 0.5 and m["f1"] == 0.5
    assert m["iou"] == pytest.approx(1 / 3) and m["accuracy"] == 0.5


def test_pixel_metrics_overlap_threshold_and_missing_heads():
    m = PixelMetrics(["cytoplasm", "nuclei", "overlap"])
    assert m.thresholds["overlap"] == 0.3 and m.thresholds["cytoplasm"] == 0.5
    prob = np.full((4, 4), 0.35)
    m.add({"cytoplasm": prob, "overlap": prob, "nuclei": prob},
          {"cytoplasm": np.ones((4, 4)), "overlap": np.ones((4, 4))})
    r = m.result()
    assert r["overlap"]["f1"] == 1.0  # 0.35 >= 0.3
    assert r["cytoplasm"]["recall"] == 0.0  # 0.35 < 0.5
    assert r["nuclei"]["f1"] is None and r["nuclei"]["n_images"] == 0
    assert "overlap" in format_pixel_report(r)


def test_empty_predictions_give_none_not_nan():
    c = PixelCounts()
    c.add(np.zeros((3, 3)), np.zeros((3, 3)), 0.5)
    m = c.metrics()
    assert m["precision"] is None and m["f1"] is None and m["accuracy"] == 1.0


def test_task_loss_falls_on_one_batch(tmp_path):
    from blastoseg.instances import FrameInstances
    from blastoseg.io.dataset import Sample, write_dataset
    from blastoseg.train.job import TrainJob
    from blastoseg.train.overlap_data import OverlapDataset
    from blastoseg.train.overlap_task import OverlapTask

    yy, xx = np.mgrid[:64, :64]
    a = (yy - 30) ** 2 + (xx - 24) ** 2 < 14 ** 2
    b = (yy - 32) ** 2 + (xx - 42) ** 2 < 13 ** 2
    image = (200 - 60 * a - 60 * b).astype(np.uint8)
    write_dataset(tmp_path / "d", [Sample(image=image, instances=FrameInstances(
        masks=np.stack([a, b])))], categories={1: "cell"})
    ds = OverlapDataset([tmp_path / "d"], ("cytoplasm", "nuclei", "overlap"), crop=64,
                        probability={"variant": "border"}, augment=False)
    item = ds[0]
    assert item["image"].shape == (1, 64, 64) and item["targets"].shape == (3, 64, 64)
    assert item["present"].tolist() == [True, False, True]  # no nuclei file
    assert item["targets"][2].sum() == float((a & b).sum())
    task = OverlapTask()
    task.job = TrainJob(kind="overlap", train_data=[], config={
        "seunet": {"base_width": 4, "depth": 2, "se_reduction": 2,
                   "heads": ["cytoplasm", "nuclei", "overlap"]},
        "loss": {"overlap": "focal_reweighted"}})
    task.device = torch.device("cpu")
    torch.manual_seed(0)
    model = task.build_model(task.job.config)
    batch = {k: v[None] for k, v in item.items()}
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(25):
        out = task.training_step(model, batch)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(float(out["loss"].detach()))
    assert np.isfinite(losses).all() and losses[-1] < 0.7 * losses[0]
    model.eval()
    with torch.no_grad():
        metrics = task.validate(model, ds)
    assert 0.0 <= metrics["val_score"] <= 1.0 and "cytoplasm_iou" in metrics


def test_trained_model_predicts_and_evaluates(tiny_overlap, capsys):
    from blastoseg.cli import main
    from blastoseg.io.dataset import read_dataset
    from blastoseg.predict.overlap import OverlapPredictor
    from blastoseg.predict.overlap_eval import evaluate_overlap_model

    tmp, data = tiny_overlap
    predictor = OverlapPredictor("tiny-overlap", device="cpu")
    image = read_dataset(data).load_image(0)
    result = predictor.predict(image)
    assert set(result.probabilities) == {"cytoplasm", "nuclei", "border", "background",
                                         "overlap"}
    assert result.probabilities["overlap"].shape == image.shape[:2]
    assert result.overlap_mask.dtype == bool
    report = evaluate_overlap_model(predictor, data, max_images=2)
    assert report["n_images"] == 2
    assert report["nuclei"]["n_images"] == 2  # synthetic scenes carry nuclei files
    assert 0.0 <= report["cytoplasm"]["iou"] <= 1.0
    assert main(["eval", "overlap", "--data", str(data), "--model", "tiny-overlap",
                 "--json", "--max-images", "1", "--device", "cpu"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["overlap"]["threshold"] == 0.3 and out["model"] == "tiny-overlap"
    assert main(["eval", "overlap", "--data", str(data), "--model", "tiny-overlap", "--json",
                 "--max-images", "1", "--device", "cpu", "--overlap-threshold", "0.45"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["overlap"]["threshold"] == 0.45


def test_segment_overlap_cli_writes_maps(tiny_overlap, tmp_path):
    import tifffile

    from blastoseg.cli import main
    from blastoseg.io.dataset import read_dataset

    tmp, data = tiny_overlap
    ds = read_dataset(data)
    stack = np.stack([ds.load_image(0), ds.load_image(1)])
    tifffile.imwrite(tmp_path / "stack.tif", stack)
    out = tmp_path / "maps"
    args = ["segment", "overlap", str(tmp_path / "stack.tif"), "--out", str(out),
            "--model", "tiny-overlap", "--device", "cpu"]
    assert main(args) == 0
    assert tifffile.imread(out / "overlap_probability.tif").shape == stack.shape
    assert tifffile.imread(out / "overlap_mask.tif").dtype == np.uint8
    assert main(args) == 2  # refuses to overwrite without --overwrite
    assert main([*args, "--overwrite"]) == 0


def test_half_resolution_model_maps_back_to_input_size(tiny_overlap, tmp_path):
    from blastoseg.io.dataset import read_dataset
    from blastoseg.predict.overlap import OverlapPredictor
    from blastoseg.train import create_job, run_job
    from blastoseg.train.overlap_data import OverlapDataset

    tmp, data = tiny_overlap
    half = OverlapDataset([data], crop=None, augment=False, scale=0.5, max_images=1)
    assert half[0]["image"].shape[-2:] == (48, 48)  # 96 px scenes at half resolution
    assert half[0]["targets"][0].sum() > 0  # cells survive the resize
    job = create_job("overlap", [str(data)], tmp_path / "job", config={
        "seunet": {"base_width": 4, "depth": 2, "se_reduction": 2},
        "data": {"crop": 32, "repeats": 1, "scale": 0.5}},
        hyper={"max_steps": 1, "batch_size": 2}, name="tiny-half")
    assert run_job(job, stdout=False) == 0
    predictor = OverlapPredictor("tiny-half", device="cpu")
    assert predictor.scale == 0.5
    image = read_dataset(data).load_image(0)
    result = predictor.predict(image)
    assert result.probabilities["cytoplasm"].shape == image.shape[:2]
    assert predictor.count_windows(image) == 1


def test_finetune_an_overlap_model_keeps_its_architecture_and_scale(tiny_overlap, tmp_path):
    from blastoseg.napari._train_widget import _base_kind, _model_names
    from blastoseg.train import run_job
    from blastoseg.train.finetune import create_finetune_job
    from blastoseg.weights import resolve_model

    tmp, data = tiny_overlap
    assert "tiny-overlap" in _model_names() and _base_kind("tiny-overlap") == "overlap"
    job = create_finetune_job(str(data), tmp_path / "ft", base="tiny-overlap", kind="overlap",
                              epochs=1, lr=1e-3, name="tiny-overlap-ft",
                              hyper={"max_steps": 2, "batch_size": 2})
    assert run_job(job, stdout=False) == 0
    card = resolve_model("tiny-overlap-ft").card
    base = resolve_model("tiny-overlap").card
    assert card.kind == "overlap" and card.base_model == "tiny-overlap"
    assert card.config["seunet"] == base.config["seunet"]
    assert card.config["preprocess"]["scale"] == base.config["preprocess"]["scale"]


def test_validation_metrics_are_exact_on_known_maps(tmp_path):
    """The task's validation (issue 18: it was only checked to lie in [0, 1]): maps equal to
    the targets give val_score 1 exactly (cytoplasm IoU 1, overlap F1 1); empty maps give 0;
    the cytoplasm map of one cell only gives that cell's share of the union as its IoU."""
    from types import SimpleNamespace

    from blastoseg.instances import FrameInstances
    from blastoseg.io.dataset import Sample, write_dataset
    from blastoseg.train.overlap_data import OverlapDataset
    from blastoseg.train.overlap_task import OverlapTask

    yy, xx = np.mgrid[:64, :64]
    a = (yy - 30) ** 2 + (xx - 24) ** 2 < 14 ** 2
    b = (yy - 32) ** 2 + (xx - 42) ** 2 < 13 ** 2
    write_dataset(tmp_path / "d", [Sample(image=(200 - 60 * a - 60 * b).astype(np.uint8),
                                          instances=FrameInstances(masks=np.stack([a, b])))],
                  categories={1: "cell"})
    heads = ("cytoplasm", "overlap")
    ds = OverlapDataset([tmp_path / "d"], heads, crop=64, probability={"variant": "border"},
                        augment=False)
    task = OverlapTask()
    task.device = torch.device("cpu")

    def model_giving(maps):
        def forward(image):
            return SimpleNamespace(logits={h: torch.from_numpy(np.where(maps[h], 20.0, -20.0)
                                                               )[None, None].float()
                                           for h in heads})
        forward.config = SimpleNamespace(heads=heads)
        return forward

    perfect = task.validate(model_giving({"cytoplasm": a | b, "overlap": a & b}), ds)
    assert perfect["val_score"] == 1.0
    assert perfect["cytoplasm_iou"] == 1.0 and perfect["overlap_f1"] == 1.0
    empty = np.zeros_like(a)
    assert task.validate(model_giving({"cytoplasm": empty, "overlap": empty}), ds)[
        "val_score"] == 0.0
    one = task.validate(model_giving({"cytoplasm": a, "overlap": a & b}), ds)
    assert one["cytoplasm_iou"] == pytest.approx(a.sum() / (a | b).sum())
    assert one["val_score"] == pytest.approx((a.sum() / (a | b).sum() + 1.0) / 2)
