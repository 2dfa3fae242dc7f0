"""End to end with tiny models: train a shape prior and an amodal detector through the CLI,
then segment and evaluate with the registered model. Also the predictor's bad-input errors."""

import json

import numpy as np
import pytest

from blastoseg.cli import main
from blastoseg.errors import BlastosegError, InvalidImageError


def test_trained_model_is_registered_and_segments_a_stack(tiny_models, capsys):
    from blastoseg.io import read_dataset
    from blastoseg.predict.amodal import AmodalPredictor
    from blastoseg.progress import run_with_progress
    from blastoseg.synth import render_timelapse

    tmp, _ = tiny_models
    assert main(["models", "--kind", "amodal"]) == 0
    assert "tiny-amodal" in capsys.readouterr().out
    lapse = render_timelapse(3, seed=1)
    predictor = AmodalPredictor("tiny-amodal", device="cpu", score_threshold=0.0)
    seen = []
    results = predictor.predict(lapse.images, progress=lambda d, t: seen.append((d, t)))
    assert len(results) == 3 and seen[-1] == (3, 3)
    # streaming: each frame is handed over in order and not kept
    streamed = []
    gen = predictor.iter_predict(list(lapse.images), on_result=lambda i, r: streamed.append((i, r)))
    kept = run_with_progress(gen)
    assert kept == [] and [i for i, _ in streamed] == [0, 1, 2]
    assert [len(r) for _, r in streamed] == [len(r) for r in results]
    for inst in results:
        assert inst.shape == lapse.images.shape[1:]
        assert inst.occlusion is not None and inst.occlusion.shape == inst.shape
        if len(inst):
            # visible masks are disjoint and lie inside the amodal masks
            assert (inst.visible_masks.sum(axis=0) <= 1).all()
            assert not (inst.visible_masks & ~inst.masks).any()
    import tifffile

    tifffile.imwrite(tmp / "stack.tif", lapse.images, photometric="minisblack")
    out = tmp / "seg"
    assert main(["segment", "amodal", str(tmp / "stack.tif"), "--out", str(out),
                 "--model", "tiny-amodal", "--device", "cpu"]) == 0
    ds = read_dataset(out / "dataset")
    assert len(ds) == 3 and ds.images[0]["video_id"] == 1
    assert (out / "counts.csv").read_text().count("\n") == 4


def test_eval_json_has_the_documented_keys(tiny_models, capsys):
    _, data = tiny_models
    capsys.readouterr()
    assert main(["eval", "amodal", "--data", str(data), "--model", "tiny-amodal",
                 "--device", "cpu", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("mAP", "AP50", "AP75", "count_exact", "count_mae", "n_images"):
        assert key in result
    assert result["n_images"] == 6


def test_bad_inputs_give_clear_errors(tiny_models, tmp_path):
    from blastoseg.predict.amodal import AmodalPredictor

    predictor = AmodalPredictor("tiny-amodal", device="cpu")
    good = np.random.default_rng(0).integers(0, 255, (128, 128)).astype(np.uint8)
    nan = good.astype(float)
    nan[5, 5] = np.nan
    cases = {
        "NaN": nan,
        "constant": np.full((128, 128), 7, np.uint8),
        "64": np.zeros((32, 32), np.uint8) + np.arange(32, dtype=np.uint8),
        "focal plane": np.zeros((2, 3, 128, 128), np.uint8),
    }
    for words, image in cases.items():
        with pytest.raises(InvalidImageError, match=words):
            predictor.predict(image)
    bogus = tmp_path / "bogus.safetensors"
    bogus.write_bytes(b"not weights at all")
    with pytest.raises(BlastosegError):
        AmodalPredictor(str(bogus), device="cpu")
    with pytest.raises(BlastosegError, match="no-such-model"):
        AmodalPredictor("no-such-model", device="cpu")


def test_calibration_is_written_to_the_card_and_used(tiny_models, capsys):
    from blastoseg.predict.amodal import AmodalPredictor

    _, data = tiny_models
    assert main(["calibrate", "amodal", "--data", str(data), "--model", "tiny-amodal",
                 "--device", "cpu", "--frames", "3", "--write"]) == 0
    out = capsys.readouterr().out
    assert "best: mask NMS IoU" in out
    predictor = AmodalPredictor("tiny-amodal", device="cpu")
    chosen = out.split("best: mask NMS IoU ")[1]
    assert predictor.mask_nms_iou == float(chosen.split(",")[0])
    assert predictor.calibrated_threshold == predictor.score_threshold
    assert main(["models", "verify", "tiny-amodal"]) == 0  # weights untouched


def test_training_calibrates_counting_on_its_validation_data(tiny_models, tmp_path):
    """A trained (or fine-tuned) amodal model's card carries calibrated post-processing; a
    fine-tune with too few validation frames to calibrate on keeps the base model's."""
    from blastoseg.train.events import read_events
    from blastoseg.weights import resolve_model

    tmp, data = tiny_models
    events = [e["event"] for e in read_events(tmp / "j2" / "events.jsonl")]
    assert "calibrated" in events and events.index("calibrated") < events.index("done")
    base = resolve_model("tiny-amodal", kind="amodal").card.config["postprocess"]
    assert base["calibration"]["data"] == str(data)
    assert 0.0 < base["score_threshold"] < 1.0

    cfg = tmp_path / "ft.json"
    cfg.write_text(json.dumps({"hyper": {"max_steps": 1, "batch_size": 2}}))
    # fewer validation frames than calib_min_frames: the base's calibration is kept too
    assert main(["train", "amodal", "--data", str(data), "--val", str(data), "--base",
                 "tiny-amodal", "--out", str(tmp_path / "ft"), "--config", str(cfg),
                 "--name", "tiny-ft", "--quiet"]) == 0
    ft = resolve_model("tiny-ft", kind="amodal").card.config["postprocess"]
    assert ft["score_threshold"] == base["score_threshold"]
    assert ft["mask_nms_iou"] == base["mask_nms_iou"]


def test_a_cards_layer_rule_is_used_and_kept_by_calibration(tiny_models, tmp_path):
    """A ``layer_rule`` block in the card switches the predictor to the layer rule (the
    result carries its layer estimate); re-calibrating the threshold keeps the block."""
    import shutil

    from blastoseg.predict.amodal import AmodalPredictor
    from blastoseg.predict.calibrate import write_postprocess
    from blastoseg.weights import resolve_model

    _, data = tiny_models
    entry = resolve_model("tiny-amodal", kind="amodal")
    weights = tmp_path / "ruled.safetensors"
    shutil.copy(entry.weights_path, weights)
    card = json.loads(entry.card_path.read_text())
    rule = {"table": [1.0, 1.5, 2.0], "edges": [0.0, 0.3], "min_count": 1.0}
    card["config"].setdefault("postprocess", {})["layer_rule"] = rule
    card_path = weights.with_suffix(".json")
    card_path.write_text(json.dumps(card))
    plain = AmodalPredictor("tiny-amodal", device="cpu")
    ruled = AmodalPredictor(str(weights), device="cpu")
    assert plain.layer_rule is None and ruled.layer_rule is not None
    from blastoseg.io import read_dataset

    frame = read_dataset(data).load_image(0)
    assert "layer_estimate" not in plain.predict(frame).meta
    result = ruled.predict(frame)
    if len(result.scores):  # the estimate needs at least one kept cell
        assert result.meta["layer_estimate"] > 0
    write_postprocess(card_path, {"score_threshold": 0.4, "mask_nms_iou": 0.7,
                                  "count_exact": 0.5, "count_mae": 1.0, "n_frames": 3,
                                  "data": "x"})
    post = json.loads(card_path.read_text())["config"]["postprocess"]
    assert post["layer_rule"] == rule and post["score_threshold"] == 0.4
