"""Framing options of the amodal predictor and CLI (issue 13, items 2 and 6): a given embryo
circle, one per frame, a diameter, --no-localise, the localiser's unsure guesses, the cache
of loaded predictors, and a training job folder as the model."""

from __future__ import annotations

import functools
import json
import os
import shutil

import numpy as np
import pytest

from blastoseg.cli import main
from blastoseg.predict import localise
from blastoseg.predict.amodal import AmodalPredictor, segment_amodal
from blastoseg.predict.base import clear_predictor_cache, load_predictor
from blastoseg.predict.embryo_box import UNSURE_CONFIDENCE, EmbryoBox
from blastoseg.predict.embryo_spec import FramingError, per_frame_embryos


def _frame(h: int = 120, w: int = 160, seed: int = 0) -> np.ndarray:
    """A textured disk (an 'embryo') on a noisy background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.indices((h, w))
    disk = (yy - h / 2) ** 2 + (xx - w / 2) ** 2 < (0.35 * h) ** 2
    img = 100 + 10 * rng.standard_normal((h, w)) + disk * 60 * rng.random((h, w))
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def predictor(tiny_models):
    return AmodalPredictor("tiny-amodal", device="cpu", score_threshold=0.0)


def _fake_localiser(monkeypatch, confidence: float, calls: list | None = None):
    """Make the localiser return a fixed circle with ``confidence`` (recording radius_px)."""

    def fake(image, *, radius_px=None, **kw):
        if calls is not None:
            calls.append(radius_px)
        h, w = np.asarray(image).shape[:2]
        return EmbryoBox(cx=50.0, cy=40.0, radius=30.0, confidence=confidence,
                         image_shape=(h, w),
                         source="localised" if radius_px is None else "diameter")

    monkeypatch.setattr(localise, "locate_embryo", fake)


# --- library --------------------------------------------------------------------------------

def test_given_circle_sets_the_framing(predictor):
    frame = _frame()
    res = predictor.predict(frame, embryo=(70, 60, 30))
    emb, crop = res.meta["embryo"], res.meta["embryo_box"]
    assert emb["source"] == "given" and (emb["cx"], emb["cy"], emb["radius"]) == (70, 60, 30)
    assert emb["image_shape"] == [120, 160] and res.meta["embryo_unsure"] is False
    assert "embryo_guess" not in res.meta
    half = 30 * (1 + predictor.margin)
    assert crop["side"] == pytest.approx(2 * half)
    assert crop["x0"] == pytest.approx(70.5 - half) and crop["y0"] == pytest.approx(60.5 - half)
    assert res.shape == (120, 160)
    # an EmbryoBox and a "CX,CY,R" string give the same framing
    for given in (EmbryoBox.from_circle(70, 60, 30, image_shape=(120, 160)), "70,60,30"):
        assert predictor.predict(frame, embryo=given).meta["embryo_box"] == crop
    # another circle, another crop
    other = predictor.predict(frame, embryo=(80, 60, 50)).meta["embryo_box"]
    assert other["side"] == pytest.approx(2 * 50 * (1 + predictor.margin))


def test_one_circle_per_frame_and_wrong_length(predictor, monkeypatch):
    _fake_localiser(monkeypatch, confidence=0.9)
    stack = np.stack([_frame(seed=s) for s in range(3)])
    given = [(70, 60, 30), None, EmbryoBox.from_circle(90, 50, 40)]
    results = predictor.predict(stack, embryo=given)
    circles = [(r.meta["embryo"]["source"], r.meta["embryo"]["cx"], r.meta["embryo"]["radius"])
               for r in results]
    assert circles == [("given", 70, 30), ("localised", 50, 30), ("given", 90, 40)]
    # one circle for the whole stack
    results = predictor.predict(stack, embryo=(70, 60, 30))
    assert {r.meta["embryo"]["cx"] for r in results} == {70}
    # a (T, 3) array is one circle per frame
    arr = np.array([[70, 60, 30], [71, 60, 30], [72, 60, 30]], float)
    assert [r.meta["embryo"]["cx"] for r in predictor.predict(stack, embryo=arr)] == [70, 71, 72]
    with pytest.raises(FramingError, match="2 circle.*3 frame"):
        predictor.predict(stack, embryo=[(70, 60, 30), None])
    with pytest.raises(FramingError, match="2 circle.*3 frame"):  # raised before any batch
        predictor.iter_predict(list(stack), embryo=[None, None])
    with pytest.raises(FramingError, match=r"embryo\[1\]"):
        predictor.predict(stack, embryo=[None, "nonsense", None])
    with pytest.raises(FramingError, match="positive radius"):
        predictor.predict(stack[0], embryo=(70, 60, -3))
    with pytest.raises(FramingError, match="outside"):
        predictor.predict(stack[0], embryo=(5000, 60, 30))
    with pytest.raises(FramingError, match="100 x 100 frame"):
        predictor.predict(stack[0], embryo=EmbryoBox(50, 50, 20, image_shape=(100, 100)))
    # [None, None, None] is three frames to localise, not a circle
    assert per_frame_embryos([None, None, None], 3) == [None, None, None]
    assert per_frame_embryos((1, 2, 3), 2) == [(1.0, 2.0, 3.0)] * 2


def test_no_localise_frames_the_whole_image(predictor, monkeypatch):
    calls = []
    _fake_localiser(monkeypatch, confidence=0.9, calls=calls)
    frame = _frame(120, 160)
    res = predictor.predict(frame, localise=False)
    assert res.meta["embryo"]["source"] == "whole frame" and res.meta["embryo_unsure"] is False
    assert res.meta["embryo_box"]["side"] == 160 and res.meta["embryo_box"]["y0"] == -20
    assert calls == []  # the localiser never ran
    assert predictor.locate(frame, localise=False) == EmbryoBox.full_frame((120, 160))
    assert predictor.locate(frame).source == "localised"


def test_diameter_fixes_the_localisers_radius(predictor, monkeypatch):
    calls = []
    _fake_localiser(monkeypatch, confidence=0.9, calls=calls)
    res = predictor.predict(_frame(), diameter_px=64)
    assert calls == [32.0] and res.meta["embryo"]["source"] == "diameter"
    with pytest.raises(FramingError, match="positive"):
        predictor.predict(_frame(), diameter_px=0)


def test_unsure_localisation_is_flagged_with_its_guess(predictor, monkeypatch):
    frame = _frame()
    # below the predictor's minimum: the whole frame is used, the guess is kept
    _fake_localiser(monkeypatch, confidence=predictor.min_confidence / 2)
    res = predictor.predict(frame)
    assert res.meta["embryo"]["source"] == "whole frame" and res.meta["embryo_unsure"] is True
    assert res.meta["embryo_guess"]["cx"] == 50 and res.meta["embryo_guess"]["radius"] == 30
    assert predictor.locate(frame).source == "whole frame"
    guess = predictor.locate_guess(frame)
    assert (guess.cx, guess.cy, guess.radius) == (50, 40, 30)
    # used, but below the 'unsure' confidence: flagged, the guess is the box used
    mid = (predictor.min_confidence + UNSURE_CONFIDENCE) / 2
    _fake_localiser(monkeypatch, confidence=mid)
    res = predictor.predict(frame)
    assert res.meta["embryo"]["source"] == "localised" and res.meta["embryo_unsure"] is True
    assert res.meta["embryo_guess"] == res.meta["embryo"]
    # confident: not flagged
    _fake_localiser(monkeypatch, confidence=0.95)
    res = predictor.predict(frame)
    assert res.meta["embryo_unsure"] is False and "embryo_guess" not in res.meta
    # a user's circle is never 'unsure', whatever the localiser would say
    _fake_localiser(monkeypatch, confidence=0.01)
    assert predictor.predict(frame, embryo=(70, 60, 30)).meta["embryo_unsure"] is False


def test_segment_amodal_keeps_the_loaded_predictor(tiny_models, tmp_path, monkeypatch):
    import blastoseg.predict.amodal as amodal
    from blastoseg.weights import resolve_model

    entry = resolve_model("tiny-amodal", kind="amodal")
    weights = tmp_path / "m.safetensors"
    shutil.copy2(entry.weights_path, weights)
    shutil.copy2(entry.card_path, tmp_path / "m.json")
    loads = []
    real_init = amodal.AmodalPredictor.__init__

    @functools.wraps(real_init)  # keeps the signature the predictor cache reads
    def counting_init(self, *args, **kwargs):
        loads.append(args[0] if args else kwargs.get("model"))
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(amodal.AmodalPredictor, "__init__", counting_init)
    clear_predictor_cache()

    def get(**options):
        return load_predictor(str(weights), "cpu", kind="amodal", **options)

    p1 = get(score_threshold=None, batch_size=4)  # what segment_amodal asks for
    assert get(score_threshold=None, batch_size=4) is p1 and len(loads) == 1
    frame = _frame()
    for _ in range(2):
        res = segment_amodal(frame, model=str(weights), device="cpu", embryo=(70, 60, 30))
        assert res.meta["embryo"]["source"] == "given"
    assert len(loads) == 1  # no reload per call
    # another threshold is another predictor; the first stays cached
    assert get(score_threshold=0.3, batch_size=4) is not p1
    assert get(score_threshold=None, batch_size=4) is p1 and len(loads) == 2
    # the weights file changed (retrained / replaced): loaded afresh
    st = weights.stat()
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 5 * 10**9))
    p2 = get(score_threshold=None, batch_size=4)
    assert p2 is not p1 and len(loads) == 3
    # so does the card (re-calibrated)
    card = tmp_path / "m.json"
    st = card.stat()
    os.utime(card, ns=(st.st_atime_ns, st.st_mtime_ns + 5 * 10**9))
    assert get(score_threshold=None, batch_size=4) is not p2
    clear_predictor_cache()
    assert get(score_threshold=None, batch_size=4) is not p2


# --- CLI ------------------------------------------------------------------------------------

def _write_stack(path, n=2, pixel_size_um=None):
    import tifffile

    data = np.stack([_frame(seed=s) for s in range(n)])
    if pixel_size_um is None:
        tifffile.imwrite(path, data, photometric="minisblack")
    else:
        tifffile.imwrite(path, data, imagej=True, metadata={"unit": "um", "axes": "TYX"},
                         resolution=(1 / pixel_size_um, 1 / pixel_size_um))
    return path


def _read_framing_csv(path):
    lines = path.read_text().strip().splitlines()
    head = lines[0].split(",")
    return [dict(zip(head, line.split(","), strict=True)) for line in lines[1:]]


def test_cli_embryo_circle_is_used_and_written(tiny_models, tmp_path, capsys):
    stack = _write_stack(tmp_path / "s.tif")
    out = tmp_path / "seg"
    assert main(["segment", "amodal", str(stack), "--out", str(out), "--model", "tiny-amodal",
                 "--device", "cpu", "--embryo", "70,60,30"]) == 0
    printed = capsys.readouterr().out
    assert "framing: the given embryo circle 70,60,30 on every frame" in printed
    assert "given 2" in printed
    doc = json.loads((out / "dataset" / "annotations.json").read_text())
    for im in doc["images"]:
        assert im["embryo"] == {"cx": 70.0, "cy": 60.0, "radius": 30.0, "confidence": 1.0,
                                "source": "given"}
        assert im["embryo_unsure"] is False
    rows = _read_framing_csv(out / "framing.csv")
    assert [(r["frame"], r["source"], r["cx"], r["radius"]) for r in rows] == [
        ("0", "given", "70.0", "30.0"), ("1", "given", "70.0", "30.0")]


def test_cli_embryo_bad_values_are_clear(tiny_models, tmp_path, capsys):
    stack = _write_stack(tmp_path / "s.tif")
    base = ["segment", "amodal", str(stack), "--out", str(tmp_path / "o"), "--model",
            "tiny-amodal", "--device", "cpu"]
    with pytest.raises(SystemExit) as exc:
        main([*base, "--embryo", "70,60"])
    assert exc.value.code == 2
    assert "CX,CY,R" in capsys.readouterr().err
    # outside the frame: the package's error, no traceback
    assert main([*base, "--embryo", "5000,60,30"]) == 2
    err = capsys.readouterr().err
    assert "outside" in err and "Traceback" not in err
    with pytest.raises(SystemExit):  # one framing option at a time
        main([*base, "--embryo", "70,60,30", "--no-localise"])
    assert "not allowed with" in capsys.readouterr().err


def test_cli_no_localise_and_unsure_warnings(tiny_models, tmp_path, capsys, monkeypatch):
    stack = _write_stack(tmp_path / "s.tif")
    out = tmp_path / "seg"
    assert main(["segment", "amodal", str(stack), "--out", str(out), "--model", "tiny-amodal",
                 "--device", "cpu", "--no-localise"]) == 0
    assert "framing: the whole frame (--no-localise)" in capsys.readouterr().out
    assert {r["source"] for r in _read_framing_csv(out / "framing.csv")} == {"whole frame"}
    # the localiser unsure: a warning per frame on stderr, its guess in framing.csv
    _fake_localiser(monkeypatch, confidence=0.01)
    out2 = tmp_path / "seg2"
    assert main(["segment", "amodal", str(stack), "--out", str(out2), "--model",
                 "tiny-amodal", "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert captured.err.count("the localiser is unsure") == 2
    assert "its guess was 50,40,30" in captured.err
    assert "(localiser unsure on 2)" in captured.out
    rows = _read_framing_csv(out2 / "framing.csv")
    assert [(r["source"], r["unsure"], r["guess_cx"]) for r in rows] == [
        ("whole frame", "1", "50.0")] * 2
    doc = json.loads((out2 / "dataset" / "annotations.json").read_text())
    assert doc["images"][0]["embryo_guess"]["radius"] == 30.0


def test_cli_diameter_in_um_uses_the_pixel_size(tiny_models, tmp_path, capsys, monkeypatch):
    calls = []
    _fake_localiser(monkeypatch, confidence=0.9, calls=calls)
    with_px = _write_stack(tmp_path / "px.tif", pixel_size_um=0.5)
    assert main(["segment", "amodal", str(with_px), "--out", str(tmp_path / "a"), "--model",
                 "tiny-amodal", "--device", "cpu", "--diameter", "40",
                 "--diameter-unit", "um"]) == 0
    assert calls == [40.0, 40.0]  # 40 um / 0.5 um per px = 80 px diameter, radius 40 px
    assert "diameter 80 px (40 um)" in capsys.readouterr().out
    calls.clear()
    assert main(["segment", "amodal", str(with_px), "--out", str(tmp_path / "b"), "--model",
                 "tiny-amodal", "--device", "cpu", "--diameter", "40"]) == 0
    assert calls == [20.0, 20.0]  # pixels by default
    no_px = _write_stack(tmp_path / "nopx.tif")
    capsys.readouterr()
    assert main(["segment", "amodal", str(no_px), "--out", str(tmp_path / "c"), "--model",
                 "tiny-amodal", "--device", "cpu", "--diameter", "40",
                 "--diameter-unit", "um"]) == 2
    err = capsys.readouterr().err
    assert "pixel size" in err and "--diameter-unit px" in err


def test_cli_training_job_folder_as_model(tiny_models, tmp_path, capsys, monkeypatch):
    from blastoseg.weights import resolve_model

    tmp, data = tiny_models
    job = tmp / "j2"  # the folder `blastoseg train amodal ... --out` made (conftest)
    entry = resolve_model(str(job), kind="amodal")
    assert entry.weights_path.parent.resolve() == (job / "output").resolve()
    assert entry.name == "tiny-amodal"
    stack = _write_stack(tmp_path / "s.tif")
    out = tmp_path / "seg"
    assert main(["segment", "amodal", str(stack), "--out", str(out), "--model", str(job),
                 "--device", "cpu", "--no-localise"]) == 0
    assert "model tiny-amodal on" in capsys.readouterr().out
    assert (out / "counts.csv").is_file()
    assert main(["eval", "amodal", "--data", str(data), "--model", str(job), "--device", "cpu",
                 "--json", "--no-localise"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["model"] == "tiny-amodal" and result["n_images"] == 6
    assert result["framing"]["whole frame"] == 6
    # eval --diameter in um: each image's own pixel size
    calls = []
    _fake_localiser(monkeypatch, confidence=0.9, calls=calls)
    doc = json.loads((data / "annotations.json").read_text())
    sizes = [im["pixel_size_um"] for im in doc["images"]]
    assert main(["eval", "amodal", "--data", str(data), "--model", str(job), "--device", "cpu",
                 "--diameter", "30", "--diameter-unit", "um", "--json"]) == 0
    assert calls == pytest.approx([15 / s for s in sizes])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["framing"]["diameter"] == 6
    # ... and a clear error where an image has none
    no_px = tmp_path / "nopx"
    shutil.copytree(data, no_px)
    for im in doc["images"]:
        im.pop("pixel_size_um")
    (no_px / "annotations.json").write_text(json.dumps(doc))
    assert main(["eval", "amodal", "--data", str(no_px), "--model", str(job), "--device",
                 "cpu", "--diameter", "30", "--diameter-unit", "um"]) == 2
    assert "pixel size" in capsys.readouterr().err
    # a job folder that has not finished is a clear error
    unfinished = tmp_path / "unfinished"
    (unfinished / "checkpoints").mkdir(parents=True)
    shutil.copy2(job / "job.json", unfinished / "job.json")
    (unfinished / "checkpoints" / "last.pt").write_bytes(b"x")
    assert main(["eval", "amodal", "--data", str(data), "--model", str(unfinished),
                 "--device", "cpu"]) == 2
    assert "has not finished" in capsys.readouterr().err
