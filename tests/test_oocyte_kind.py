"""The ``oocyte`` kind (S3) end to end on tiny sizes: synthetic oocytes and their class maps,
SMANet, the metrics, the measurements, ``blastoseg train/segment/eval oocyte`` and the
predictor contract."""

from __future__ import annotations

import json

import numpy as np
import pytest

TINY_OOCYTE = {"model": {"widths": [8, 8, 8, 8, 8], "reduced": 8, "decoder_channels": 8,
                         "working_size": 64, "psp_bins": [1, 2]},
               "hyper": {"max_steps": 2, "batch_size": 2, "val_frames": 2, "threads": 1,
                         "log_every": 1}}


def test_synthetic_oocyte_ground_truth_and_measurements_agree():
    from blastoseg.io.oocyte_classes import INCLUSION, OOPLASM, PVS, ZONA
    from blastoseg.measure.oocyte import measure_oocyte
    from blastoseg.synth.oocyte import OocyteConfig, render_oocyte

    for seed in (0, 3):
        o = render_oocyte(seed, OocyteConfig(image_size=(160, 160), cut_by_frame_prob=0.0))
        assert o.image.dtype == np.uint8 and o.image.shape == o.labels.shape == (160, 160)
        assert {ZONA, PVS, OOPLASM} <= set(np.unique(o.labels).tolist())
        # the shells nest: the zona surrounds the ooplasm, the image centre is inside it
        cy, cx = (int(v) for v in o.meta["centre_yx"])
        assert o.labels[cy, cx] != ZONA and o.labels[0, 0] == 0
        m = measure_oocyte(o.labels, o.meta["pixel_size_um"])
        assert m.unit == "um" and not m.warnings
        assert m.ooplasm_diameter == pytest.approx(o.meta["ooplasm_diameter_um"], abs=2.5)
        assert m.zona_thickness == pytest.approx(o.meta["zona_thickness_um"], abs=2.5)
        assert m.inclusion_count <= o.meta["n_inclusions"]
        assert (o.labels == INCLUSION).any() == (o.meta["n_inclusions"] > 0)
    same = render_oocyte(3, OocyteConfig(image_size=(160, 160), cut_by_frame_prob=0.0))
    assert np.array_equal(same.image, o.image)  # deterministic in the seed


def test_paper_label_maps_have_one_to_five_small_round_inclusions():
    from scipy import ndimage as ndi

    from blastoseg.io.oocyte_classes import INCLUSION, SER, VACUOLE
    from blastoseg.synth.oocyte import OocyteConfig, render_oocyte

    cfg = OocyteConfig(label_maps="paper")
    for seed in range(4):
        o = render_oocyte(seed, cfg)
        n = len(o.layout.inclusions)
        assert 1 <= n <= 5 and not o.layout.vacuoles and not o.layout.ser
        assert all(2.0 <= 2 * b.a <= 7.0 + 1e-6 for b in o.layout.inclusions)  # px at 256
        assert not np.isin(o.labels, (VACUOLE, SER)).any()
        assert ndi.label(o.labels == INCLUSION)[1] <= n


def test_written_dataset_reads_back_as_the_same_class_map(tmp_path):
    from blastoseg.errors import BlastosegError
    from blastoseg.io.dataset import read_dataset
    from blastoseg.io.oocyte_classes import OOCYTE_CATEGORIES, class_map
    from blastoseg.synth.oocyte import OocyteConfig, render_oocyte, write_synthetic_oocytes

    cfg = OocyteConfig(image_size=(64, 64))
    write_synthetic_oocytes(tmp_path / "d", n=2, seed=4, config=cfg)
    ds = read_dataset(tmp_path / "d")
    assert ds.categories == OOCYTE_CATEGORIES and len(ds) == 2
    seed = int(np.random.default_rng(4).integers(0, 2**31 - 1, size=2)[1])
    assert np.array_equal(class_map(ds.instances(1), ds.categories),
                          render_oocyte(seed, cfg).labels)
    with pytest.raises(ValueError, match="not oocyte classes"):
        class_map(ds.instances(0), {k: "blastomere" for k in ds.categories})
    with pytest.raises(BlastosegError, match="contrast"):
        OocyteConfig(contrast="phase")


def test_class_map_round_trips_through_objects():
    from blastoseg.io.oocyte_classes import class_map, instances_from_class_map
    from blastoseg.synth.oocyte import OocyteConfig, render_oocyte

    o = render_oocyte(6, OocyteConfig(image_size=(96, 96), vacuole_prob=1.0))
    inst = instances_from_class_map(o.labels)
    assert np.array_equal(class_map(inst), o.labels)
    assert (inst.class_ids == 3).sum() == 1  # the ooplasm is one region
    with pytest.raises(ValueError, match="not oocyte classes"):
        instances_from_class_map(np.full((8, 8), 9))


def test_smanet_two_attention_maps_and_shapes():
    import torch

    from blastoseg.models.smanet import SMANet, SMANetConfig

    net = SMANet(SMANetConfig(widths=(8, 8, 8, 8, 8), reduced=8, decoder_channels=8,
                              working_size=64)).eval()
    x = torch.rand(2, 1, 64, 64)
    logits, att = net(x, return_attention=True)
    assert logits.shape == (2, 7, 64, 64)
    assert att.shape == (2, 2, 8, 8)  # one map per scale, on the 1/8 grid
    assert torch.allclose(att.sum(1), torch.ones(2, 8, 8), atol=1e-5)
    with pytest.raises(ValueError, match="multiples of 8"):
        net(torch.rand(1, 1, 60, 64))
    with pytest.raises(ValueError, match="scales"):
        SMANetConfig(scales=(0.5, 1.0))
    net.train()
    net(x).mean().backward()
    assert net.attention.score[1].weight.grad is not None


def test_semantic_metrics_known_answers():
    from blastoseg.metrics.semantic import ComponentDetection, ConfusionMatrix

    truth = np.zeros((10, 10), int)
    truth[:, 5:] = 1
    pred = truth.copy()
    pred[0, :5] = 1  # 5 background pixels called class 1
    cm = ConfusionMatrix(3)
    cm.add(pred, truth)
    r = cm.metrics({0: "bg", 1: "a", 2: "b"})
    assert r["accuracy"] == pytest.approx(0.95)
    assert r["iou"]["bg"] == pytest.approx(45 / 50) and r["iou"]["a"] == pytest.approx(50 / 55)
    assert r["iou"]["b"] is None and r["mIoU"] == pytest.approx((0.9 + 50 / 55) / 2)
    det = ComponentDetection(1, min_px=3)
    t = np.zeros((12, 12), int)
    t[1:3, 1:3] = 1      # found
    t[8:10, 8:10] = 1    # missed
    t[5, 5] = 1          # below min_px: not counted
    p = np.zeros_like(t)
    p[2, 2] = 1
    p[5, 9:11] = 1       # a false detection
    det.add(p, t)
    assert det.metrics() == {"detection_rate": 0.5, "found": 1, "total": 2,
                             "false_detections": 1}


def test_measurement_warnings_for_bad_input():
    from blastoseg.io.oocyte_classes import OOPLASM, ZONA
    from blastoseg.measure.oocyte import measure_oocyte

    empty = measure_oocyte(np.zeros((64, 64), np.uint8))
    assert empty.ooplasm_diameter is None and "no ooplasm" in empty.warnings[0]
    two = np.zeros((64, 128), np.uint8)
    yy, xx = np.mgrid[0:64, 0:128]
    for cx in (32, 96):
        two[(yy - 32) ** 2 + (xx - cx) ** 2 < 28 ** 2] = ZONA
        two[(yy - 32) ** 2 + (xx - cx) ** 2 < 20 ** 2] = OOPLASM
    m = measure_oocyte(two)
    assert any("more than one oocyte" in w for w in m.warnings)
    assert m.ooplasm_diameter == pytest.approx(40, abs=1.5) and m.pvs_width is None
    cut = np.zeros((64, 64), np.uint8)
    cut[(yy[:, :64] - 32) ** 2 + (xx[:, :64] - 5) ** 2 < 20 ** 2] = OOPLASM
    assert any("cut" in w for w in measure_oocyte(cut).warnings)


def test_card_refuses_other_classes():
    from blastoseg.predict.cards import OocyteCard
    from blastoseg.weights import ModelCard, WeightsError

    with pytest.raises(WeightsError, match="classes"):
        OocyteCard.from_card(ModelCard(name="x", kind="oocyte",
                                       config={"classes": {"0": "background", "1": "cell"}}))
    with pytest.raises(WeightsError, match="SMANetConfig"):
        OocyteCard.from_card(ModelCard(name="x", kind="oocyte", config={"model": {"depth": 3}}))
    for bad in ([0.0] * 6, [0.0] * 6 + [float("nan")], "zero", [0.0] * 6 + ["x"]):
        with pytest.raises(WeightsError, match="logit_offsets"):
            OocyteCard.from_card(ModelCard(name="x", kind="oocyte",
                                           config={"postprocess": {"logit_offsets": bad}}))
    card = OocyteCard.from_card(ModelCard(name="x", kind="oocyte",
                                          config={"postprocess": {"logit_offsets": [1] * 7}}))
    assert card.logit_offsets == (1.0,) * 7


@pytest.fixture(scope="module")
def tiny_oocyte(tmp_path_factory, session_home):
    """A tiny SMANet ("tiny-oocyte") trained 2 steps through the CLI; yields the dataset."""
    from blastoseg.cli import main

    tmp = tmp_path_factory.mktemp("oocyte")
    mp = pytest.MonkeyPatch()
    mp.setenv("BLASTOSEG_HOME", str(session_home))
    data = tmp / "data"
    assert main(["synth", "oocytes", "--n", "3", "--seed", "7", "--size", "64",
                 "--out", str(data)]) == 0
    cfg = tmp / "oocyte.json"
    cfg.write_text(json.dumps(TINY_OOCYTE))
    assert main(["train", "oocyte", "--data", str(data), "--val", str(data),
                 "--out", str(tmp / "job"), "--config", str(cfg), "--name", "tiny-oocyte",
                 "--quiet"]) == 0
    events = [json.loads(line) for line in (tmp / "job" / "events.jsonl").read_text().split("\n")
              if line.strip()]
    val = [e for e in events if e["event"] == "validation"][-1]["metrics"]
    assert {"mIoU", "accuracy", "inclusion_detection", "val_loss"} <= set(val)
    yield data
    mp.undo()


def test_predictor_contract_frame_stack_stream_cancel(tiny_oocyte):
    from blastoseg.io.dataset import read_dataset
    from blastoseg.predict.oocyte import OocytePredictor, OocyteResult
    from blastoseg.progress import Cancelled

    ds = read_dataset(tiny_oocyte)
    frame = ds.load_image(0)
    pred = OocytePredictor("tiny-oocyte", device="cpu", batch_size=1)
    one = pred.predict(frame, pixel_size_um=0.5)
    assert isinstance(one, OocyteResult)
    assert one.labels.shape == frame.shape and one.labels.dtype == np.uint8
    assert one.labels.max() < 7 and one.confidence.shape == frame.shape
    assert one.measurements.unit == "um" and one.meta["model"] == "tiny-oocyte"
    wide = pred.predict(np.pad(frame, ((0, 0), (10, 30)), mode="edge"))
    assert wide.labels.shape == (64, 104)  # a non-square frame is padded, not distorted
    many = pred.predict(np.stack([ds.load_image(k) for k in range(3)]))
    assert [r.meta["frame"] for r in many] == [0, 1, 2]
    streamed = []
    work = pred.iter_predict([ds.load_image(k) for k in range(3)],
                             on_result=lambda i, r: streamed.append(i))
    assert list(work) == [(1, 3), (2, 3), (3, 3)] and streamed == [0, 1, 2]
    with pytest.raises(Cancelled):
        pred.predict(np.stack([frame] * 3), cancel=lambda: True)
    from blastoseg.errors import BlastosegError

    with pytest.raises(BlastosegError, match="pixel_size_um"):
        pred.predict(frame, pixel_size_um=-1)


def test_cli_segment_and_eval_oocyte(tiny_oocyte, tmp_path, capsys):
    from blastoseg.cli import main

    out = tmp_path / "out"
    image = sorted((tiny_oocyte / "images").iterdir())[0]
    assert main(["segment", "oocyte", str(image), "--out", str(out), "--model", "tiny-oocyte",
                 "--device", "cpu", "--pixel-size-um", "3.2"]) == 0
    rows = (out / "measurements.csv").read_text().splitlines()
    assert rows[0].startswith("frame,unit,inclusion_count,inclusion_area,vacuole_count")
    assert len(rows) == 2 and rows[1].startswith("0,um,")
    import tifffile

    assert tifffile.imread(out / "classes.tif").shape == (64, 64)
    assert "4,inclusion" in (out / "classes.csv").read_text()
    assert main(["segment", "oocyte", str(image), "--out", str(out), "--model", "tiny-oocyte",
                 "--device", "cpu"]) == 2  # refuses to overwrite
    capsys.readouterr()
    assert main(["eval", "oocyte", "--data", str(tiny_oocyte), "--model", "tiny-oocyte",
                 "--device", "cpu", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("mIoU", "accuracy", "iou", "n_images", "inclusion_detection"):
        assert key in result
    assert result["n_images"] == 3 and set(result["iou"]) >= {"zona", "inclusion"}
    assert 0.0 <= result["accuracy"] <= 1.0


def test_translator_trains_and_renders_label_maps(tiny_oocyte, tmp_path):
    """``train oocyte-translator`` (the S4 pix2pix on label map -> image pairs) and
    ``synth oocytes --translator``: same label maps, images from the generator."""
    from blastoseg.cli import main
    from blastoseg.io.dataset import read_dataset
    from blastoseg.synth.oocyte.translate import OocyteTranslator

    cfg = tmp_path / "tr.json"
    cfg.write_text(json.dumps({
        "pix2pix": {"gen_width": 4, "gen_depth": 5, "disc_width": 4, "n_dropout": 2},
        "data": {"crop": 32, "repeats": 1},
        "hyper": {"max_steps": 2, "batch_size": 2, "val_frames": 2, "threads": 1}}))
    assert main(["train", "oocyte-translator", "--data", str(tiny_oocyte), "--val",
                 str(tiny_oocyte), "--out", str(tmp_path / "job"), "--config", str(cfg),
                 "--name", "tiny-translator", "--quiet"]) == 0
    args = ["synth", "oocytes", "--n", "2", "--seed", "3", "--size", "64"]
    assert main([*args, "--out", str(tmp_path / "plain")]) == 0
    assert main([*args, "--translator", "tiny-translator", "--out", str(tmp_path / "tr")]) == 0
    plain, translated = read_dataset(tmp_path / "plain"), read_dataset(tmp_path / "tr")
    assert translated.info["translator"] == "tiny-translator"
    assert translated.images[0]["contrast"] == "translated"
    assert np.array_equal(plain.instances(1).masks, translated.instances(1).masks)
    assert not np.array_equal(plain.load_image(1), translated.load_image(1))
    tr = OocyteTranslator("tiny-translator", device="cpu")
    labels = np.zeros((40, 50), np.uint8)
    labels[10:30, 10:40] = 3
    a, b = tr.translate(labels, seed=1), tr.translate(labels, seed=1)
    assert a.shape == (40, 50) and a.dtype == np.uint8 and np.array_equal(a, b)
    from blastoseg.errors import BlastosegError

    with pytest.raises(BlastosegError):
        OocyteTranslator("tiny-oocyte")  # a segmentation model is not a translator


def test_seunet_comparison_trains_and_predicts_through_the_kind(tiny_oocyte, tmp_path):
    """The S4 SE-U-Net (``architecture: seunet``) is an oocyte model like SMANet."""
    from blastoseg.cli import main
    from blastoseg.io.dataset import read_dataset
    from blastoseg.predict.oocyte import OocytePredictor

    cfg = tmp_path / "seu.json"
    cfg.write_text(json.dumps({
        "architecture": "seunet", "seunet": {"base_width": 4, "depth": 2}, "working_size": 64,
        "hyper": {"max_steps": 1, "batch_size": 2, "val_frames": 1, "threads": 1}}))
    assert main(["train", "oocyte", "--data", str(tiny_oocyte), "--val", str(tiny_oocyte),
                 "--out", str(tmp_path / "job"), "--config", str(cfg), "--name", "tiny-seu",
                 "--quiet"]) == 0
    pred = OocytePredictor("tiny-seu", device="cpu")
    assert pred.card.network.architecture == "seunet" and pred.card.working_size == 64
    r = pred.predict(read_dataset(tiny_oocyte).load_image(0))
    assert r.labels.shape == (64, 64)


def test_finetuning_an_oocyte_model_the_synthetic_then_real_recipe(tiny_oocyte, tmp_path):
    """What the Fine-tune widget launches for an oocyte base model: the base's own network
    and class weights, its weights loaded, trained on the user's oocytes."""
    from blastoseg.train import run_job
    from blastoseg.train.finetune import create_finetune_job
    from blastoseg.weights import get_model

    job = create_finetune_job(str(tiny_oocyte), tmp_path / "ft", base="tiny-oocyte",
                              kind="oocyte", epochs=1, name="tiny-oocyte-ft",
                              hyper={"batch_size": 2, "threads": 1, "val_frames": 1})
    assert run_job(job, stdout=False) == 0
    entry = get_model("tiny-oocyte-ft")
    assert entry.kind == "oocyte"
    assert entry.card.config["model"] == get_model("tiny-oocyte").card.config["model"]


def test_median_frequency_class_weights_known_answer_and_through_training(tiny_oocyte, tmp_path):
    """loss.class_weights "median_frequency" (Eigen & Fergus 2015): w_c = median(f) / f_c
    over the classes present, absent classes 1, capped; computed from the training labels
    when the job starts and written as numbers into the model card."""
    from blastoseg.cli import main
    from blastoseg.train.oocyte_task import MAX_WEIGHT, class_weights, median_frequency_weights
    from blastoseg.train.task import TrainingError
    from blastoseg.weights import get_model

    labels = np.zeros((10, 10), np.int64)
    labels[:, 5:] = 1          # background 48 %, zona 50 %
    labels[0, :2] = 3          # ooplasm 2 %
    w = median_frequency_weights([labels])
    assert w[0] == pytest.approx(0.48 / 0.48) and w[1] == pytest.approx(0.48 / 0.50, rel=1e-3)
    assert w[3] == pytest.approx(0.48 / 0.02) and w[2] == w[4] == 1.0  # absent classes
    big = np.zeros((1000, 1000), np.int64)
    big[:, 500:] = 1
    big[0, 0] = 4              # one inclusion pixel in a million: 5e5, capped
    assert median_frequency_weights([big])[4] == MAX_WEIGHT
    with pytest.raises(TrainingError, match="median_frequency"):
        class_weights({"loss": {"class_weights": "inverse"}})
    with pytest.raises(TrainingError, match="empty"):
        median_frequency_weights([])

    cfg = tmp_path / "mfb.json"
    cfg.write_text(json.dumps({**TINY_OOCYTE, "loss": {"class_weights": "median_frequency"}}))
    assert main(["train", "oocyte", "--data", str(tiny_oocyte), "--val", str(tiny_oocyte),
                 "--out", str(tmp_path / "job"), "--config", str(cfg), "--name", "tiny-mfb",
                 "--quiet"]) == 0
    config = get_model("tiny-mfb").card.config
    loss = config["loss"]
    assert loss["class_weights_from"] == "median_frequency"
    assert len(loss["class_weights"]) == 7 and all(v > 0 for v in loss["class_weights"])
    assert loss["class_weights"][0] < 1 < loss["class_weights"][4]  # background < inclusion

    # the class-prior offsets were calibrated on the validation frames and are applied
    from blastoseg.io.dataset import read_dataset
    from blastoseg.predict.oocyte import OocytePredictor
    from blastoseg.predict.oocyte_calibrate import ALPHAS, logit_offsets

    post = config["postprocess"]
    alpha = post["calibration"]["alpha"]
    assert alpha in ALPHAS and set(post["calibration"]["mIoU_by_alpha"]) == {str(a) for a in ALPHAS}
    assert post["logit_offsets"] == logit_offsets(loss["class_weights"], alpha)
    pred = OocytePredictor("tiny-mfb", device="cpu")
    image = read_dataset(tiny_oocyte).load_image(0)
    import torch

    off = torch.tensor(post["logit_offsets"])[:, None, None]
    expected = (pred.frame_scores(image) + off).argmax(0).numpy()
    assert np.array_equal(pred.predict(image).labels, expected)


def test_calibrate_oocyte_cli_writes_offsets_and_refuses_unweighted_models(tiny_oocyte, tmp_path,
                                                                            capsys):
    """``blastoseg calibrate oocyte``: a user's class-weighted model gets offsets chosen on
    their data (--write stores them); a model trained without weights is a clear error."""
    from blastoseg.cli import main
    from blastoseg.weights import get_model

    cfg = tmp_path / "w.json"
    cfg.write_text(json.dumps({**TINY_OOCYTE, "loss": {"class_weights": [1, 1, 1, 1, 9, 3, 3]},
                               "hyper": {**TINY_OOCYTE["hyper"], "calibrate": False}}))
    assert main(["train", "oocyte", "--data", str(tiny_oocyte), "--out", str(tmp_path / "job"),
                 "--config", str(cfg), "--name", "tiny-weighted", "--quiet"]) == 0
    assert "postprocess" not in get_model("tiny-weighted").card.config  # calibrate: False
    capsys.readouterr()
    assert main(["calibrate", "oocyte", "--data", str(tiny_oocyte), "--model", "tiny-weighted",
                 "--device", "cpu", "--frames", "2", "--write"]) == 0
    out = capsys.readouterr().out
    assert "best: alpha" in out and "wrote" in out
    post = get_model("tiny-weighted").card.config["postprocess"]
    assert len(post["logit_offsets"]) == 7 and post["calibration"]["n_frames"] == 2
    assert main(["calibrate", "oocyte", "--data", str(tiny_oocyte), "--model", "tiny-oocyte",
                 "--device", "cpu"]) != 0
    assert "without class weights" in capsys.readouterr().err


def test_flip_average_is_the_mean_of_the_flipped_back_outputs():
    import torch

    from blastoseg.predict.test_time_flips import FOUR_FLIPS, flip_averaged

    x = torch.arange(2 * 1 * 3 * 4, dtype=torch.float32).reshape(2, 1, 3, 4)
    # a model that commutes with flips gives its own output back
    np.testing.assert_allclose(flip_averaged(lambda t: 2 * t, x), 2 * x)
    # one that does not (a column ramp added): the ramp's flips average out to its mean
    ramp = torch.arange(4, dtype=torch.float32)

    def model(t):
        return t + ramp

    np.testing.assert_allclose(flip_averaged(model, x), x + ramp.mean())
    np.testing.assert_allclose(flip_averaged(model, x, [()]), x + ramp)
    assert len(FOUR_FLIPS) == 4


def test_oocyte_predictor_with_flips(tiny_oocyte, tmp_path, capsys):
    import torch

    from blastoseg.cli import main
    from blastoseg.io.dataset import read_dataset
    from blastoseg.io.frames import grey_frame
    from blastoseg.predict.oocyte import OocytePredictor
    from blastoseg.predict.oocyte_input import class_scores_to_frame, fit_square

    image = np.asarray(read_dataset(tiny_oocyte).load_image(0))
    plain = OocytePredictor("tiny-oocyte", device="cpu", check_embryo=False)
    flipped = OocytePredictor("tiny-oocyte", device="cpu", check_embryo=False, flips=True)
    fitted, fit = fit_square(grey_frame(image, min_side=16), flipped.card.working_size)
    x = torch.from_numpy(fitted[None, None])
    with torch.no_grad():
        want = sum(torch.flip(plain.model(torch.flip(x, d)), d) for d in
                   ((), (-1,), (-2,), (-2, -1))) / 4
    scores = class_scores_to_frame(want[0].float(), fit)
    if flipped.card.logit_offsets is not None:
        scores = scores + torch.tensor(flipped.card.logit_offsets)[:, None, None]
    np.testing.assert_array_equal(flipped.predict(image).labels, scores.argmax(0).numpy())
    capsys.readouterr()
    assert main(["eval", "oocyte", "--data", str(tiny_oocyte), "--model", "tiny-oocyte",
                 "--device", "cpu", "--json", "--flips"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["flips"] is True
    out = tmp_path / "o"
    assert main(["segment", "oocyte", str(sorted((tiny_oocyte / "images").iterdir())[0]),
                 "--out", str(out), "--model", "tiny-oocyte", "--device", "cpu", "--flips",
                 "--no-embryo-check"]) == 0
    assert (out / "classes.tif").is_file()
