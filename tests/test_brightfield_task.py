"""The ``brightfield`` task (SparseSEU-Net): data, training, predictor, eval and CLI (S4)."""

from __future__ import annotations

import argparse
import json
import shutil

import numpy as np
import pytest
import torch

from blastoseg.errors import BlastosegError
from blastoseg.instances import FrameInstances

#: a SparseSEU-Net small enough to train a few steps in seconds on a CPU
TINY_SPARSE = {"seunet": {"base_width": 4, "depth": 2, "se_reduction": 2},
               "num_instances": 8, "branch_width": 16, "kernel_dim": 16, "branch_convs": 2,
               "branch_stride": 2}
TASK_MODULE = "blastoseg.train.brightfield_task"
AP_KEYS = ("mAP", "AP50", "AP75", "AP_S", "AP_M", "AP_L", "AR", "count_exact", "count_mae",
           "n_images", "n_gt_instances", "n_pred_instances", "by_count", "mAP_by_count")


@pytest.fixture(scope="module")
def tiny_bf(tiny_overlap, tmp_path_factory):
    """A tiny brightfield model trained through create_job/run_job (grad_accum 2) under a
    temporary BLASTOSEG_HOME; yields (weights path, dataset folder, overlap weights path)."""
    from blastoseg.cli import main
    from blastoseg.train import create_job, run_job
    from blastoseg.weights import resolve_model

    overlap_weights = resolve_model("tiny-overlap", kind="overlap").weights_path
    tmp = tmp_path_factory.mktemp("brightfield")
    mp = pytest.MonkeyPatch()
    mp.setenv("BLASTOSEG_HOME", str(tmp / "home"))
    data = tmp / "bf"
    assert main(["synth", "brightfield", "--n", "3", "--size", "96", "--seed", "4",
                 "--out", str(data)]) == 0
    job = create_job("brightfield", [str(data)], tmp / "job", val_data=[str(data)], config={
        "model": TINY_SPARSE, "probability": {"variant": "combined_border_overlap"},
        "data": {"crop": 64, "repeats": 1}},
        hyper={"max_steps": 2, "batch_size": 1, "grad_accum": 2, "lr": 0.01, "val_frames": 2},
        name="tiny-bf", task_module=TASK_MODULE)
    assert run_job(job, stdout=False) == 0
    entry = resolve_model("tiny-bf", kind="brightfield")
    yield entry.weights_path, data, overlap_weights
    mp.undo()


# --- data ---------------------------------------------------------------------------------

def _two_cells(tmp_path):
    from blastoseg.io.dataset import Sample, write_dataset

    yy, xx = np.mgrid[:64, :64]
    a = (yy - 30) ** 2 + (xx - 24) ** 2 < 14 ** 2
    b = (yy - 32) ** 2 + (xx - 42) ** 2 < 13 ** 2
    c = (yy - 2) ** 2 + (xx - 62) ** 2 < 2 ** 2  # a sliver in the corner: < 16 px
    image = (200 - 60 * a - 60 * b).astype(np.uint8)
    write_dataset(tmp_path / "d", [Sample(image=image, instances=FrameInstances(
        masks=np.stack([a, b, c])))], categories={1: "cell"})
    return tmp_path / "d", a, b


def test_dataset_items_crops_and_collate(tmp_path):
    from blastoseg.train.brightfield_data import BrightfieldDataset, collate_brightfield

    path, a, b = _two_cells(tmp_path)
    heads = ("cytoplasm", "nuclei", "overlap")
    ds = BrightfieldDataset([path], heads, crop=64, augment=False,
                            probability={"variant": "border"})
    item = ds[0]
    assert item["image"].shape == (1, 64, 64) and item["targets"].shape == (3, 64, 64)
    assert item["present"].tolist() == [True, False, True]  # no nuclei file
    assert item["masks"].shape == (2, 64, 64)  # the 3rd cell is under 16 px: dropped
    assert item["labels"].tolist() == [0, 0]  # category 1 -> class index 0
    assert torch.equal(item["masks"][0] > 0, torch.from_numpy(a))
    assert ds.num_classes == 1
    # a crop that cuts the cells keeps their in-crop part; the cap keeps the largest
    small = BrightfieldDataset([path], heads, crop=32, augment=True, seed=1, max_instances=1)
    for _ in range(5):
        it = small[0]
        assert it["masks"].shape[0] <= 1 and it["masks"].shape[1:] == (32, 32)
        assert all(m.sum() >= 16 for m in it["masks"])
    # larger crop than the image: constant padding, no mirrored unlabelled cells
    big = BrightfieldDataset([path], heads, crop=96, augment=False)
    it = big[0]
    assert it["image"].shape == (1, 96, 96) and it["masks"][:, 64:].sum() == 0
    assert it["targets"][0, 64:].sum() == 0
    batch = collate_brightfield([ds[0], ds[0]])
    assert batch["image"].shape == (2, 1, 64, 64)
    assert isinstance(batch["instances"], list) and len(batch["instances"]) == 2
    assert batch["instances"][1]["masks"].shape == (2, 64, 64)
    # validation items: whole image padded to the multiple, masks at the image size
    val = BrightfieldDataset([path], heads, crop=None, augment=False, multiple=16)
    assert tuple(val[0]["size"].tolist()) == (64, 64) and val[0]["masks"].shape[0] == 3


def test_loss_is_finite_and_falls_on_one_batch(tmp_path):
    from blastoseg.train.brightfield_data import BrightfieldDataset
    from blastoseg.train.brightfield_task import BrightfieldTask
    from blastoseg.train.job import TrainJob

    path, _, _ = _two_cells(tmp_path)
    task = BrightfieldTask()
    task.job = TrainJob(kind="brightfield", train_data=[], config={
        "model": TINY_SPARSE, "loss": {"heads": {"weight": 0.5}}})
    task.device = torch.device("cpu")
    torch.manual_seed(0)
    model = task.build_model(task.job.config)
    ds = BrightfieldDataset([path], model.heads, crop=64, augment=False,
                            probability={"variant": "border"})
    batch = task.collate([ds[0], ds[0]])
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        out = task.training_step(model, batch)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(float(out["loss"].detach()))
    assert {"sparse_cls", "sparse_dice", "head_cytoplasm", "sparse", "heads"} <= set(out)
    assert np.isfinite(losses).all() and losses[-1] < 0.7 * losses[0]
    model.eval()
    with torch.no_grad():
        metrics = task.validate(model, BrightfieldDataset(
            [path], model.heads, crop=None, augment=False, multiple=4))
    assert set(metrics) == {"mAP", "AP50", "AP75", "n_pred"}
    assert 0.0 <= metrics["mAP"] <= 1.0


def test_task_rejects_bad_data_options(tmp_path):
    from blastoseg.train.brightfield_task import BrightfieldTask
    from blastoseg.train.job import TrainJob
    from blastoseg.train.task import TrainingError

    path, _, _ = _two_cells(tmp_path)
    task = BrightfieldTask()
    for data, words in (({"max_instances": 9}, "num_instances"), ({"crop": 30}, "multiple")):
        task.job = TrainJob(kind="brightfield", train_data=[str(path)],
                            config={"model": TINY_SPARSE, "data": data})
        with pytest.raises(TrainingError, match=words):
            task.make_datasets(task.job)
    task.job = TrainJob(kind="brightfield", train_data=[str(path)],
                        config={"model": TINY_SPARSE, "loss": {"w_mask": 1.0}})
    with pytest.raises(TrainingError, match="unknown"):
        task._sparse_options()


# --- post-processing -------------------------------------------------------------------------

def test_decode_scores_and_mask_nms():
    from blastoseg.predict.brightfield_post import decode_instances

    mask = torch.full((3, 8, 8), -10.0)
    mask[0, :4, :4] = 10.0  # a square
    mask[1, :4, :4] = 10.0  # its duplicate, lower class score
    mask[1, 0, 0] = 0.0  # maskness lowered a little (prob 0.5 inside)
    mask[2, 5:, 5:] = 10.0
    cls = torch.tensor([[2.0], [1.0], [-3.0]])
    out = decode_instances(cls, mask, score_threshold=0.0, mask_nms_iou=0.8)
    assert len(out) == 2 and out.masks[0, :4, :4].all()
    assert out.scores[0] == pytest.approx(torch.sigmoid(torch.tensor(2.0)).item(), rel=1e-3)
    assert out.class_ids.tolist() == [1, 1]
    assert len(decode_instances(cls, mask, score_threshold=0.0, mask_nms_iou=None)) == 3
    assert len(decode_instances(cls, mask, score_threshold=0.5, mask_nms_iou=None)) == 2
    iou = torch.tensor([0.0, 0.0, 20.0])  # the IoU head halves the first two scores
    scored = decode_instances(cls, mask, iou, score_threshold=0.0, mask_nms_iou=None)
    assert scored.scores[0] == pytest.approx(0.5 * torch.sigmoid(torch.tensor(2.0)).item(),
                                             rel=1e-3)
    assert scored.scores[-1] == pytest.approx(torch.sigmoid(torch.tensor(-3.0)).item(),
                                              rel=1e-3)


def test_tile_merge_and_resize_to_input():
    from blastoseg.predict.brightfield_post import _Candidate, _merge, _to_frame

    sq = np.ones((4, 4), bool)
    whole = _Candidate(0.9, 0, 10, 10, sq.astype(np.float32), sq)
    dup = _Candidate(0.8, 0, 10, 11, sq.astype(np.float32), sq)  # IoU 0.6: same cell
    cut = _Candidate(0.95, 0, 10, 12, sq[:, :2].astype(np.float32), sq[:, :2], True)
    alone = _Candidate(0.5, 0, 30, 30, sq.astype(np.float32), sq, True)
    kept = _merge([whole, dup, cut, alone], 0.5)
    assert kept == [whole, alone]  # duplicate and covered cut part dropped
    padded = np.pad(sq, 2)  # candidates keep a margin around the mask
    framed = _Candidate(0.9, 0, 8, 8, padded.astype(np.float32), padded)
    masks = _to_frame([framed], (40, 40), (80, 80), 0.5)  # working at half size
    assert masks.shape == (1, 80, 80)
    ys, xs = np.nonzero(masks[0])
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (20, 27, 20, 27)



def test_largest_component_keeps_one_piece_per_cell():
    from blastoseg.predict.brightfield_post import (
        _Candidate,
        _to_frame,
        decode_instances,
        largest_component_of,
    )

    m = np.zeros((12, 12), bool)
    m[1:6, 1:6] = True  # the cell, 25 px
    m[6, 6] = True  # touches it diagonally: 8-connected, part of it
    m[9:11, 9:11] = True  # a detached 4 px speck
    one = largest_component_of(m)
    assert one.sum() == 26 and not one[9:11, 9:11].any() and one[6, 6]
    assert largest_component_of(np.zeros((4, 4), bool)).sum() == 0
    logits = torch.where(torch.from_numpy(m), 10.0, -10.0)[None]
    cls = torch.tensor([[3.0]])
    assert decode_instances(cls, logits, score_threshold=0.0).masks[0].sum() == 30
    assert (decode_instances(cls, logits, score_threshold=0.0, largest_component=True)
            .masks[0] == one).all()
    framed = _Candidate(0.9, 0, 0, 0, m.astype(np.float32), m)
    assert _to_frame([framed], (12, 12), (12, 12), 0.5).sum() == 30
    assert (_to_frame([framed], (12, 12), (12, 12), 0.5, one_piece=True)[0] == one).all()


# --- trained model: predictor, eval, CLI ----------------------------------------------------

def test_trained_model_card_and_predictor(tiny_bf):
    from blastoseg.io.dataset import read_dataset
    from blastoseg.predict.brightfield import BrightfieldPredictor
    from blastoseg.weights import resolve_model

    weights, data, _ = tiny_bf
    entry = resolve_model(str(weights))
    assert entry.kind == "brightfield" and "mAP" in entry.card.metrics
    assert set(entry.card.config) >= {"model", "preprocess", "postprocess"}
    assert entry.card.config["preprocess"] == {"percentiles": [1.0, 99.8], "scale": 1.0}
    assert entry.card.training["hyper"]["grad_accum"] == 2
    # inference windows of the training crop's size, overlapping by half
    assert entry.card.config["inference"] == {"max_side": 64, "tile_overlap": 32}
    image = read_dataset(data).load_image(0)
    carded = BrightfieldPredictor(str(weights), device="cpu")
    assert (carded.max_side, carded.tile_overlap) == (64, 32) and carded.is_tiled(image.shape)
    # thresholds at 0: every prediction is kept, however little the model has trained;
    # max_side 1024: the 96 px frame runs whole
    predictor = BrightfieldPredictor(str(weights), device="cpu", score_threshold=0.0,
                                     mask_threshold=0.0, mask_nms_iou=False, max_side=1024)
    result = predictor.predict(image)
    assert isinstance(result, FrameInstances) and result.shape == image.shape[:2]
    assert len(result) == 8 and result.masks.dtype == bool  # num_instances
    assert np.all(np.diff(result.scores) <= 0) and set(result.class_ids.tolist()) == {1}
    assert result.occlusion.shape == image.shape[:2]
    assert result.meta["nuclei"].shape == image.shape[:2] and not result.meta["tiled"]
    seen = []
    stack = predictor.predict(np.stack([image, image]), progress=lambda d, t: seen.append(d))
    assert isinstance(stack, list) and len(stack) == 2 and seen == [1, 2]
    assert stack[1].shape == image.shape[:2] and stack[1].meta["frame"] == 1


def test_large_frames_are_tiled_and_scale_maps_back(tiny_bf, tmp_path):
    from blastoseg.io.dataset import read_dataset
    from blastoseg.predict.brightfield import BrightfieldPredictor
    from blastoseg.weights import read_card, write_card

    weights, data, _ = tiny_bf
    image = read_dataset(data).load_image(1)
    tiled = BrightfieldPredictor(str(weights), device="cpu", score_threshold=0.0,
                                 mask_threshold=0.0, max_side=48, tile_overlap=16)
    assert tiled.is_tiled(image.shape) and tiled.count_windows(image) == 9
    result = tiled.predict(image)
    assert result.meta["tiled"] and result.shape == image.shape[:2]
    assert 1 <= len(result) < 9  # one candidate per window (NMS), merged across windows
    assert result.occlusion.shape == image.shape[:2]
    # a half-resolution card: the model runs at 48 px, masks come back at 96 px
    card = read_card(weights.with_suffix(".json"))
    card.config["preprocess"]["scale"] = 0.5
    shutil.copy(weights, tmp_path / "half.safetensors")
    write_card(card, tmp_path / "half.json")
    half = BrightfieldPredictor(str(tmp_path / "half.safetensors"), device="cpu",
                                score_threshold=0.0, mask_threshold=0.0)
    assert half.working_shape(image.shape) == (48, 48)
    out = half.predict(image)
    assert len(out) >= 1 and out.masks[0].all()
    assert out.shape == image.shape[:2] and out.meta["nuclei"].shape == image.shape[:2]
    with pytest.raises(BlastosegError, match="tile_overlap"):
        BrightfieldPredictor(str(weights), device="cpu", max_side=32, tile_overlap=32)
    with pytest.raises(BlastosegError, match="at least 8"):
        tiled.predict(np.zeros((4, 40)))


def test_eval_and_watershed_baseline(tiny_bf, capsys):
    from blastoseg.commands.brightfield import add_eval_parser
    from blastoseg.predict.brightfield_eval import (
        evaluate_brightfield_model,
        evaluate_watershed_baseline,
    )

    weights, data, overlap_weights = tiny_bf
    result = evaluate_brightfield_model(str(weights), data, device="cpu", max_images=2)
    assert set(AP_KEYS) <= set(result) and result["n_images"] == 2
    assert result["method"] == "sparse_seunet" and result["score_threshold"] == 0.3
    base = evaluate_watershed_baseline(str(overlap_weights), data, device="cpu", max_images=2)
    assert set(AP_KEYS) <= set(base) and base["method"] == "seunet+watershed"
    parser = argparse.ArgumentParser()
    add_eval_parser(parser.add_subparsers(dest="kind"))
    args = parser.parse_args(["brightfield", "--data", str(data), "--model", str(weights),
                              "--json", "--max-images", "1", "--device", "cpu"])
    assert args.func(args) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(AP_KEYS) <= set(out) and out["n_images"] == 1
    args = parser.parse_args(["brightfield", "--data", str(data), "--baseline", "watershed",
                              "--overlap-model", str(overlap_weights), "--max-images", "1",
                              "--device", "cpu"])
    assert args.func(args) == 0
    assert "seunet+watershed" in capsys.readouterr().out


def test_segment_cli_writes_dataset_and_maps(tiny_bf, tmp_path):
    import tifffile

    from blastoseg.commands.brightfield import add_segment_parser
    from blastoseg.io.dataset import read_dataset

    weights, data, _ = tiny_bf
    ds = read_dataset(data)
    stack = np.stack([ds.load_image(0), ds.load_image(1)])
    tifffile.imwrite(tmp_path / "stack.tif", stack)
    parser = argparse.ArgumentParser()
    add_segment_parser(parser.add_subparsers(dest="kind"))
    out = tmp_path / "seg"
    argv = ["brightfield", str(tmp_path / "stack.tif"), "--out", str(out), "--model",
            str(weights), "--device", "cpu", "--threshold", "0.0"]
    args = parser.parse_args(argv)
    assert args.func(args) == 0
    written = read_dataset(out / "dataset")
    assert len(written) == 2 and (out / "counts.csv").is_file()
    assert tifffile.imread(out / "overlap_probability.tif").shape == stack.shape
    assert tifffile.imread(out / "nuclei_probability.tif").dtype == np.float32
    with pytest.raises(BlastosegError):
        args.func(parser.parse_args(argv))  # no --overwrite
    assert args.func(parser.parse_args([*argv, "--overwrite"])) == 0


def test_validation_metrics_are_exact_on_known_predictions(tmp_path):
    """The task's validation (issue 18: it was only checked to lie in [0, 1]): a model that
    returns the ground truth scores mAP 1 exactly, one that finds nothing 0, and one that
    returns each cell shifted by half its width an AP50 of 0."""
    from types import SimpleNamespace

    from blastoseg.train.brightfield_data import BrightfieldDataset
    from blastoseg.train.brightfield_task import BrightfieldTask
    from blastoseg.train.job import TrainJob

    path, _, _ = _two_cells(tmp_path)
    task = BrightfieldTask()
    task.job = TrainJob(kind="brightfield", train_data=[], config={"model": TINY_SPARSE})
    task.device = torch.device("cpu")
    heads = task.build_model(task.job.config).heads
    val = BrightfieldDataset([path], heads, crop=None, augment=False, multiple=4)
    truth = val[0]["masks"].float()  # (n, H, W) of the one image
    assert len(truth) == 3  # the two cells and the sliver in the corner

    def model_returning(masks):
        def forward(image):
            n, (h, w) = len(masks), image.shape[-2:]
            logits = torch.full((1, max(n, 1), h, w), -20.0)
            logits[0, :n, :masks.shape[1], :masks.shape[2]] = masks * 40.0 - 20.0
            cls = torch.full((1, max(n, 1), 1), 10.0 if n else -10.0)
            return SimpleNamespace(class_logits=cls, mask_logits=logits, iou_logits=None)
        return forward

    perfect = task.validate(model_returning(truth), val)
    assert (perfect["mAP"], perfect["AP50"], perfect["AP75"], perfect["n_pred"]) == \
        (1.0, 1.0, 1.0, 3.0)
    nothing = task.validate(model_returning(truth[:0]), val)
    assert (nothing["mAP"], nothing["AP50"]) == (0.0, 0.0)
    shifted = task.validate(model_returning(torch.roll(truth, 14, dims=1)), val)  # 14 rows
    assert shifted["AP50"] == 0.0 and shifted["n_pred"] == 3.0  # each IoU under 0.4
