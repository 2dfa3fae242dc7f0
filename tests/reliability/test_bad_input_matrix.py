"""The bad-input matrix (issue 18, "a reliability suite that stays"): every CLI verb against
every bad input of its kind (images, datasets, weights, options), and the public library
functions against bad arrays.

Each cell asserts a clear error or a documented result, never a traceback:

* CLI: a non-zero exit, stderr whose error is one line starting with ``blastoseg: error:``
  (or argparse's ``blastoseg VERB: error:``) and naming the problem (``expect``), and no
  "Traceback". A verb that lists several problems at once (``train`` checking its data)
  gives one ``blastoseg: error:`` line followed by its list.
* Library: a :class:`~blastoseg.errors.BlastosegError`, ``ValueError`` or ``TypeError`` with a
  message naming the problem; never IndexError, KeyError, AttributeError, MemoryError or
  ZeroDivisionError from deep inside.

The bad inputs themselves are made by ``bad_inputs.py``. Cases kept elsewhere, not repeated
here: option values of the segment verbs (``test_cli_bad_options.py``), broken model cards
(``test_model_files.py``), corrupt RLE in the decoder (``test_corrupt_rle.py``), LabelMe NaN
and one unreadable frame among many (``test_small_defects.py``).

Fast by design: frames of 32-64 px, and no cell loads a model before refusing its input
except where the failure can only show after (a dataset's images are read lazily, after
the model): those use the shipped models on one or two 64 x 64 frames.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from bad_inputs import DATASET_INPUTS, IMAGE_INPUTS, WEIGHTS_INPUTS, good_dataset

from blastoseg.cli import build_parser, main
from blastoseg.errors import BlastosegError

ERROR_LINE = re.compile(r"^blastoseg( [\w-]+)*: error: ")


def _run(argv, capsys) -> tuple[int, str]:
    """Run the CLI in this process: (exit status, stderr). An uncaught exception fails the
    test with its traceback, which is what the matrix forbids."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse
        code = exc.code
    return code, capsys.readouterr().err


def assert_clear_error(code, err: str, expect: str, *, listed: bool = False) -> None:
    assert code not in (0, None), f"exit 0 on a bad input; stderr: {err!r}"
    assert "Traceback" not in err, err
    lines = [ln for ln in err.strip().splitlines()
             if ln.strip() and not ln.startswith(("blastoseg: warning", "blastoseg: note",
                                                  "usage:", "  ", "checking the training"))]
    errors = [ln for ln in lines if ERROR_LINE.match(ln)]
    assert len(errors) == 1, f"expected one error line, got: {err!r}"
    if not listed:  # argparse's usage lines and the data check's list are filtered above
        assert lines[-1] == errors[0], f"lines after the error: {err!r}"
    assert re.search(expect, err), f"{expect!r} not in {err!r}"


@pytest.fixture
def no_model(monkeypatch):
    """Fail the cell if a predictor is built: the input must be refused before a model
    loads."""
    from blastoseg.predict.base import PredictorBase

    def refuse(self, *a, **k):
        raise AssertionError("a model was loaded before the bad input was refused")

    monkeypatch.setattr(PredictorBase, "__init__", refuse)


def test_the_matrix_covers_every_verb():
    """A verb added to the CLI must get its row here (or a reason in NOT_IN_MATRIX)."""
    parser = build_parser()
    verbs = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    seen = set()
    for name, sub in verbs.items():
        kinds = [a for a in sub._actions if a.__class__.__name__ == "_SubParsersAction"]
        if kinds:
            seen |= {f"{name} {k}" for k in kinds[0].choices}
        else:
            seen.add(name)
    covered = (set(IMAGE_VERBS) | set(DATASET_VERBS) | set(WEIGHTS_VERBS)
               | {" ".join(a[:2]) for a, _ in OPTION_CASES} | {a[0] for a, _ in OPTION_CASES}
               | set(NOT_IN_MATRIX))
    missing = sorted(seen - covered)
    assert not missing, f"verbs without a row in the bad-input matrix: {missing}"


#: verbs whose bad inputs are tested elsewhere, or that take none
NOT_IN_MATRIX = {
    "models list": "takes no input but --kind (a choice list, refused by argparse)",
    "models rename": "names only: see OPTION_CASES and test_small_defects.py",
    "models delete": "names only: test_cli_bad_options.py, test_small_defects.py",
}


# --- images: every verb that reads an image, a stack or a frame folder ----------------------

IMAGE_VERBS = {
    "segment amodal": ["segment", "amodal", "{IN}", "--out", "{OUT}"],
    "segment overlap": ["segment", "overlap", "{IN}", "--out", "{OUT}"],
    "segment brightfield": ["segment", "brightfield", "{IN}", "--out", "{OUT}"],
    "segment count": ["segment", "count", "{IN}", "--out", "{OUT}", "--model", "any-count"],
    "segment localiser": ["segment", "localiser", "{IN}", "--out", "{OUT}"],
    "segment oocyte": ["segment", "oocyte", "{IN}", "--out", "{OUT}", "--model", "any-oocyte"],
    "timeline": ["timeline", "{IN}", "--out", "{OUT}"],
    "batch": ["batch", "{IN}", "--out", "{OUT}", "--threads", "--workers", "1"],
}

#: what the error names, per bad image (a verb may override below)
IMAGE_EXPECT = {
    "missing file": "no such file",
    "empty file": r"the file is empty \(0 bytes\)",
    "empty .tif": r"the file is empty \(0 bytes\)",
    "truncated PNG": "corrupt or truncated",
    "truncated TIFF": "may be corrupt",
    "text file named .png": "may be corrupt",
    "text file named .tif": "may be corrupt or not a TIFF",
    "unsupported extension": "unsupported file type '.txt'",
    "NaN float TIFF": "NaN or infinite pixels",
    "infinite float TIFF": "NaN or infinite pixels",
    "1 x 1 image": r"at least \d+ (x \d+ )?pixels",
    "3 x 200 strip": r"at least \d+ (x \d+ )?pixels",
    "complex TIFF": "dtype complex64",
    "5D TIFF with 5 channels": "5 channels are not supported",
    "5D TIFF without axes": "unsupported TIFF axes",
    "4D TIFF with 5 channels": "5 channels are not supported",
    "6D TIFF": "unsupported TIFF axes",
    "7-channel TIFF": "7 channels are not supported",
    "empty folder": "no images found",
    "folder of text files named .png": "may be corrupt|none of the 3 frames can be read",
    "folder without images": "no images found",
    "a dataset folder": "is a dataset folder",
}

_SINGLE_FRAME = "is a single frame; a timeline needs a time-lapse of at least 2 frames"
IMAGE_OVERRIDES = {
    # the timeline refuses a single picture before looking at its pixels (documented)
    **{("timeline", row): _SINGLE_FRAME for row in (
        "NaN float TIFF", "infinite float TIFF", "1 x 1 image", "3 x 200 strip",
        "complex TIFF")},
    # batch takes a folder of embryos; everything else is refused as such
    **{("batch", row): "not a folder; batch takes a folder" for row in IMAGE_INPUTS
       if "folder" not in row},
    ("batch", "empty folder"): "no embryos found",
    ("batch", "folder without images"): "no embryos found",
    ("batch", "folder of text files named .png"): "looks like the frames of one embryo",
}

#: documented results that are not errors: (verb, row) -> why
IMAGE_DOCUMENTED = {
    ("timeline", "a dataset folder"): "a dataset folder is a timeline input (one per video)",
    ("batch", "a dataset folder"): "a dataset folder is a batch input (one embryo per video)",
}


@pytest.mark.parametrize("row", list(IMAGE_INPUTS))
@pytest.mark.parametrize("verb", list(IMAGE_VERBS))
def test_bad_images(verb, row, tmp_path, capsys, no_model):
    if (verb, row) in IMAGE_DOCUMENTED:
        pytest.skip(IMAGE_DOCUMENTED[(verb, row)])
    bad = IMAGE_INPUTS[row](tmp_path)
    argv = [a.replace("{IN}", str(bad)).replace("{OUT}", str(tmp_path / "out"))
            for a in IMAGE_VERBS[verb]]
    code, err = _run(argv, capsys)
    assert_clear_error(code, err, IMAGE_OVERRIDES.get((verb, row), IMAGE_EXPECT[row]))
    assert not (tmp_path / "out").exists() or verb == "batch"


# --- datasets: every verb that reads --data ---------------------------------------------------

DATASET_VERBS = {
    "eval amodal": ["eval", "amodal", "--data", "{D}"],
    "eval overlap": ["eval", "overlap", "--data", "{D}"],
    "eval brightfield": ["eval", "brightfield", "--data", "{D}"],
    "eval count": ["eval", "count", "--data", "{D}", "--model", "any-count"],
    "eval localiser": ["eval", "localiser", "--data", "{D}"],
    "eval oocyte": ["eval", "oocyte", "--data", "{D}", "--model", "any-oocyte"],
    "eval timeline": ["eval", "timeline", "--data", "{D}"],
    "calibrate amodal": ["calibrate", "amodal", "--data", "{D}"],
    "calibrate oocyte": ["calibrate", "oocyte", "--data", "{D}"],
    "train amodal": ["train", "amodal", "--data", "{D}", "--out", "{T}/job", "--epochs", "1",
                     "--quiet"],
    "train overlap": ["train", "overlap", "--data", "{D}", "--out", "{T}/job", "--epochs", "1",
                      "--quiet"],
}

DATASET_EXPECT = {
    "missing folder": "dataset folder does not exist|dataset not found",
    "a file, not a folder": "dataset folder does not exist|dataset not found",
    "folder without annotations.json": "no annotations.json in this folder",
    "malformed JSON": "invalid JSON",
    "JSON that is a list": "top level must be a JSON object",
    "JSON without images": "missing required list 'images'",
    "images pointing at missing files": "which does not exist",
    "corrupt image file": "the file may be corrupt",
    "image of another size than its entry": r"image is \(32, 32\) but annotations.json says",
    "mask of another size (RLE size)": r"RLE size \[32, 32\] does not match",
    "corrupt RLE counts": "cannot decode segmentation",
    "annotation of an unknown image": "unknown image id 999",
    "height that is a string": "must be integers",
}

#: the rows whose problem shows only when an image or mask is read, after the model loads
_LAZY = ("images pointing at missing files", "corrupt image file",
         "image of another size than its entry", "corrupt RLE counts")

DATASET_SKIP = {
    # no shipped count model: past the structure check the model is needed first
    **{("eval count", row): "needs a trained model before the images are read (none is "
                            "shipped)" for row in _LAZY},
    # the timeline reads per-frame counts, the localiser the embryo circles, not masks: a
    # corrupt mask changes neither result (documented)
    ("eval timeline", "corrupt RLE counts"): "documented: masks are not decoded (counts only)",
    ("eval localiser", "corrupt RLE counts"): "documented: masks are not decoded (circles)",
}

#: (verb, row) -> what the error names where a verb reads the input its own way
DATASET_OVERRIDES = {
    # the bad datasets are embryo datasets: eval oocyte refuses their categories first
    **{(verb, row): "are not oocyte classes" for row in _LAZY
       if row != "corrupt RLE counts" for verb in ("eval oocyte", "calibrate oocyte")},
    # the timeline also takes a TIFF stack or a frame folder, so it says what it found
    ("eval timeline", "missing folder"): "no such file or folder",
    ("eval timeline", "a file, not a folder"): "unsupported file type '.csv'",
    ("eval timeline", "folder without annotations.json"): "no time-lapse of 2 frames or more",
}

#: verbs whose error line is followed by a list of every problem found
DATASET_LISTED = {"train amodal"}


@pytest.mark.parametrize("row", list(DATASET_INPUTS))
@pytest.mark.parametrize("verb", list(DATASET_VERBS))
def test_bad_datasets(verb, row, tmp_path, capsys, request):
    if (verb, row) in DATASET_SKIP:
        pytest.skip(DATASET_SKIP[(verb, row)])
    if row not in _LAZY:
        request.getfixturevalue("no_model")  # refused on the structure, before any model
    data = DATASET_INPUTS[row](tmp_path)
    argv = [a.replace("{D}", str(data)).replace("{T}", str(tmp_path)) for a in DATASET_VERBS[verb]]
    code, err = _run(argv, capsys)
    expect = DATASET_OVERRIDES.get((verb, row), DATASET_EXPECT[row])
    if verb == "train overlap" and code == 1:
        # the overlap task reads its data in the job (kinds without instance masks are not
        # checked before it): exit 1 with one "blastoseg train: ..." line
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        assert err.startswith("blastoseg train: ") and re.search(expect, err), err
        return
    assert_clear_error(code, err, expect, listed=verb in DATASET_LISTED)


def test_an_empty_dataset_is_refused_by_every_eval(tmp_path, capsys, no_model):
    """A dataset with no images (or --max-images below 1) printed empty metrics with exit
    0 (eval amodal, overlap, brightfield; calibrate warned 'mean of empty slice')."""
    from bad_inputs import empty_images_list

    data = empty_images_list(tmp_path)
    for argv in (["eval", "amodal", "--data", data], ["eval", "overlap", "--data", data],
                 ["eval", "brightfield", "--data", data], ["calibrate", "amodal", "--data", data],
                 ["eval", "localiser", "--data", data]):
        code, err = _run(argv, capsys)
        assert_clear_error(code, err, "no images to evaluate|no frames to calibrate|"
                                      "no image with an embryo_circle")


# --- weights: every verb that takes --model (or a model argument) ---------------------------

WEIGHTS_VERBS = {
    "segment amodal": (["segment", "amodal", "{IMG}", "--out", "{T}/o", "--model", "{M}"],
                       "overlap-default"),
    "segment overlap": (["segment", "overlap", "{IMG}", "--out", "{T}/o", "--model", "{M}"],
                        "amodal-default"),
    "segment brightfield": (["segment", "brightfield", "{IMG}", "--out", "{T}/o", "--model",
                             "{M}"], "amodal-default"),
    "segment count": (["segment", "count", "{IMG}", "--out", "{T}/o", "--model", "{M}"],
                      "amodal-default"),
    "segment localiser": (["segment", "localiser", "{IMG}", "--out", "{T}/o", "--model", "{M}"],
                          "amodal-default"),
    "segment oocyte": (["segment", "oocyte", "{IMG}", "--out", "{T}/o", "--model", "{M}"],
                       "amodal-default"),
    "eval amodal": (["eval", "amodal", "--data", "{DS}", "--model", "{M}"], "brightfield-default"),
    "eval count": (["eval", "count", "--data", "{DS}", "--model", "{M}"], "overlap-default"),
    "eval localiser": (["eval", "localiser", "--data", "{DS}", "--model", "{M}"],
                       "overlap-default"),
    "timeline": (["timeline", "{DS}", "--out", "{T}/o", "--model", "{M}"], "overlap-default"),
    "calibrate amodal": (["calibrate", "amodal", "--data", "{DS}", "--model", "{M}"],
                         "overlap-default"),
    "calibrate oocyte": (["calibrate", "oocyte", "--data", "{DS}", "--model", "{M}"],
                         "amodal-default"),
    "models import": (["models", "import", "{M}"], None),
    "models verify": (["models", "verify", "{M}"], None),
    "models show": (["models", "show", "{M}"], None),
    "models interpolate": (["models", "interpolate", "amodal-default", "{M}", "--alpha", "0.5",
                            "--name", "mix", "--out", "{T}/mix"], "overlap-default"),
    "train amodal": (["train", "amodal", "--data", "{DS}", "--out", "{T}/job", "--base", "{M}"],
                     "overlap-default"),
    "synth brightfield": (["synth", "brightfield", "--n", "1", "--size", "64", "--copy-paste",
                           "1", "--out", "{T}/bf", "--translator", "{M}"], "amodal-default"),
    "synth oocytes": (["synth", "oocytes", "--n", "1", "--size", "64", "--out", "{T}/oo",
                       "--translator", "{M}"], "amodal-default"),
    "demo": (["demo", "--frames", "2", "--out", "{T}/demo", "--model", "{M}"],
             "overlap-default"),
}

WEIGHTS_EXPECT = {
    "missing .safetensors": "weights file not found|no model named",
    "text file named .safetensors": "has no model card|no model named",
    # the timeline refuses the card's kind (overlap) before it reads the weights
    "text .safetensors beside a real card": "is not a valid safetensors file|holds a 'overlap' "
                                            "model|cannot mix|no model named|"
                                            "is of kind 'overlap'; the timeline",
    "empty .safetensors": "has no model card|no model named",
    "unknown model name": "no model named 'no-such-model-name'",
    "folder that is not a job": "not a training job folder|holds no finished model|"
                                "no model named",
    "another kind's model": r"is a '[\w-]+' model, but a '[\w-]+' model is needed|"
                            r"is of kind 'overlap'; the timeline|cannot mix",
}

WEIGHTS_ROWS = [*WEIGHTS_INPUTS, "another kind's model"]


@pytest.mark.parametrize("row", WEIGHTS_ROWS)
@pytest.mark.parametrize("verb", list(WEIGHTS_VERBS))
def test_bad_weights(verb, row, tmp_path, capsys):
    from PIL import Image

    template, other_kind = WEIGHTS_VERBS[verb]
    if row == "another kind's model":
        if other_kind is None:
            pytest.skip("takes any kind")
        model = other_kind
    else:
        model = WEIGHTS_INPUTS[row](tmp_path)
    img = tmp_path / "frame.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), np.uint8)).save(img)
    ds = good_dataset(tmp_path) if any("{DS}" in a for a in template) else None
    argv = [a.replace("{M}", str(model)).replace("{T}", str(tmp_path))
            .replace("{IMG}", str(img)).replace("{DS}", str(ds)) for a in template]
    code, err = _run(argv, capsys)
    assert_clear_error(code, err, WEIGHTS_EXPECT[row])


# --- options: out-of-range values of the verbs test_cli_bad_options.py does not cover ---------

OPTION_CASES = [
    (["synth", "embryos", "--n", "0"], "n must be at least 1"),
    (["synth", "embryos", "--size", "5"], "at least 32x32 pixels"),
    (["synth", "embryos", "--size", "100000"], "at most 4096 pixels"),
    (["synth", "embryos", "--seed", "-1"], "argument --seed: expected a whole number >= 0"),
    (["synth", "embryos", "--timelapse", "0"], "at least 2 frames"),
    (["synth", "brightfield", "--n", "0"], "n must be at least 1"),
    (["synth", "brightfield", "--size", "100000"], "at most 4096 pixels"),
    (["synth", "brightfield", "--copy-paste", "nan"], "between 0 and 1; got nan"),
    (["synth", "brightfield", "--overlap", "a"], "two numbers LO,HI"),
    (["synth", "brightfield", "--overlap", "5,1"], "0 <= lo <= hi < 1"),
    (["synth", "oocytes", "--size", "4"], "at least 32 px"),
    (["synth", "oocytes", "--seed", "-3"], "expected a whole number >= 0"),
    (["demo", "--frames", "0"], "at least 2 frames"),
    (["demo", "--seed", "-1"], "expected a whole number >= 0"),
    (["timeline", "{STACK}", "--interval-min", "-5"], "positive number of minutes"),
    (["timeline", "{STACK}", "--interval-min", "nan"], "positive number of minutes"),
    (["timeline", "{STACK}", "--interval-min", "10", "--start-h", "inf"], "number of hours"),
    (["timeline", "{STACK}", "--out", ""], "output folder is empty"),
    (["timeline", "{STACK}", "--out", "{STACK}"], "is a file, not a folder"),
    (["eval", "overlap", "--data", "{DS}", "--max-images", "0"], "--max-images: expected a "
                                                                 "whole number >= 1"),
    (["eval", "count", "--data", "{DS}", "--model", "m", "--max-images", "-1"], ">= 1"),
    (["eval", "overlap", "--data", "{DS}", "--overlap-threshold", "abc"], "from 0 to 1"),
    (["eval", "overlap", "--data", "{DS}", "--overlap-threshold", "2"], "from 0 to 1"),
    (["eval", "brightfield", "--data", "{DS}", "--threshold", "-1"], "from 0 to 1"),
    (["eval", "amodal", "--data", "{DS}", "--threshold", "2"], "from 0 to 1"),
    (["calibrate", "amodal", "--data", "{DS}", "--frames", "0"], ">= 1"),
    (["models", "interpolate", "amodal-default", "amodal-default", "--alpha", "nan", "--name",
      "x", "--out", "{T}/mix"], "alpha must be a number from 0"),
    (["models", "interpolate", "amodal-default", "amodal-default", "--alpha", "0.5", "--name",
      "../x"], "invalid model name"),
    (["models", "rename", "amodal-default", "x"], "is bundled"),
    (["models", "--kind", "bogus"], "invalid choice"),
    (["train", "amodal", "--data", "{DS}", "--epochs", "0"], "'epochs' must be a positive"),
    (["train", "amodal", "--data", "{DS}", "--minutes", "nan"], "expected a finite number > 0"),
    (["train", "amodal", "--data", "{DS}", "--minutes", "-1"], "expected a finite number > 0"),
    (["train", "amodal", "--data", "{DS}", "--seed", "-1"], "expected a whole number >= 0"),
    (["train", "amodal", "--data", "{DS}", "--epochs", "1", "--nproc", "0"], ">= 1"),
    (["train", "amodal", "--data", "{DS}", "--epochs", "1", "--config", "{T}/none.json"],
     "cannot read config file"),
    (["train", "amodal", "--data", "{DS}", "--epochs", "1", "--config", "{IMG}"],
     "cannot read config file"),
    (["train", "amodal", "--data", "{DS}", "--epochs", "1", "--config", "{LISTJSON}"],
     "expected a JSON object"),
    (["train", "no-such-kind", "--data", "{DS}"], "neither a job folder"),
    (["train", "{T}"], "neither a job folder"),
    (["train", "amodal"], "needs --data"),
    (["segment", "amodal", "{IMG}", "--diameter", "nan"], "--diameter must be a positive"),
    (["segment", "amodal", "{IMG}", "--embryo", "10,10,-3"], "positive radius"),
    (["segment", "amodal", "{IMG}", "--diameter", "5", "--diameter-unit", "um"],
     "needs the pixel size"),
    (["segment", "count", "{IMG}", "--model", "m", "--diameter-px", "-1"], "finite number > 0"),
    (["segment", "oocyte", "{IMG}", "--model", "m", "--pixel-size-um", "0"], "finite number > 0"),
    (["segment", "localiser", "{IMG}", "--plane", "3"], "--plane 3: the input has no focal "
                                                        "planes"),
    (["segment", "count", "{IMG}", "--model", "m", "--out", "{IMG}"], "is a file, not a folder"),
    (["segment", "localiser", "{IMG}", "--out", "{IMG}"], "is a file, not a folder"),
    (["segment", "oocyte", "{IMG}", "--model", "m", "--out", "{IMG}"], "is a file, not a folder"),
    (["segment", "overlap", "{IMG}", "--out", "{IMG}"], "is a file, not a folder"),
    (["batch", "{T}", "--workers", "0"], ">= 1"),
    (["batch", "{T}", "--tasks", "bogus"], "unknown task"),
    (["batch", "{T}", "--model", "amodal"], "expected TASK=MODEL"),
    (["import", "labelme", "{T}/none"], "no such file or folder"),
    (["import", "labelme", "{EMPTY}"], "no LabelMe .json files"),
    (["import", "labelme", "{LISTJSON}"], "not a LabelMe file"),
    (["import", "labelme", "{IMG}"], "invalid JSON"),
]


def _option_id(case) -> str:
    return " ".join(a for a in case[0] if not a.startswith("{"))


@pytest.mark.parametrize("case", OPTION_CASES, ids=[_option_id(c) for c in OPTION_CASES])
def test_bad_options(case, tmp_path, capsys, no_model):
    import tifffile
    from bad_inputs import empty_folder, json_not_an_object
    from PIL import Image

    argv, expect = case
    img = tmp_path / "frame.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), np.uint8)).save(img)
    stack = tmp_path / "stack.tif"
    tifffile.imwrite(stack, np.random.default_rng(1).integers(0, 255, (4, 64, 64), np.uint8),
                     imagej=True, metadata={"axes": "TYX"})
    values = {"{IMG}": img, "{STACK}": stack, "{T}": tmp_path,
              "{DS}": good_dataset(tmp_path) if "{DS}" in argv else "",
              "{LISTJSON}": json_not_an_object(tmp_path) / "annotations.json",
              "{EMPTY}": empty_folder(tmp_path)}
    argv = list(argv)
    if argv[0] in ("synth", "demo", "train", "import", "timeline") and "--out" not in argv \
            and not (argv[0] == "train" and len(argv) == 2):
        argv += ["--out", str(tmp_path / "out")]
    if argv[0] == "segment" and "--out" not in argv:
        argv += ["--out", str(tmp_path / "out")]
    if argv[0] == "batch" and "--out" not in argv:
        argv += ["--out", str(tmp_path / "out")]
    for key, value in values.items():
        argv = [str(a).replace(key, str(value)) for a in argv]
    code, err = _run(argv, capsys)
    assert_clear_error(code, err, re.escape(expect) if "(" not in expect else expect)


@pytest.mark.parametrize("verb", [["segment", "amodal", "{IMG}"], ["segment", "overlap", "{IMG}"],
                                  ["eval", "brightfield", "--data", "{DS}"]])
def test_an_unknown_device(verb, tmp_path, capsys):
    """The device is resolved as the model loads (a second at most on the shipped models)."""
    from PIL import Image

    img = tmp_path / "frame.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), np.uint8)).save(img)
    ds = good_dataset(tmp_path)
    argv = [a.replace("{IMG}", str(img)).replace("{DS}", str(ds)) for a in verb]
    argv += ["--device", "bogus"]
    if verb[0] == "segment":
        argv += ["--out", str(tmp_path / "out")]
    code, err = _run(argv, capsys)
    assert_clear_error(code, err, "unknown device 'bogus'")


# --- library: the public functions against bad arrays -----------------------------------------

ALLOWED = (BlastosegError, ValueError, TypeError)
FORBIDDEN = (IndexError, KeyError, AttributeError, ZeroDivisionError, MemoryError)

BAD_ARRAYS = {
    "5D array": (np.zeros((2, 2, 2, 64, 64), np.uint8), "expected a 2D frame"),
    "(T, Z, Y, X) stack": (np.zeros((2, 2, 64, 64), np.uint8), "choose one focal plane"),
    "1D array": (np.zeros(64, np.uint8), "expected a 2D frame"),
    "0D array": (np.array(5.0), "expected a 2D frame"),
    "empty 2D": (np.zeros((0, 0), np.uint8), "the image is empty"),
    "empty stack": (np.zeros((0, 64, 64), np.uint8), "the image is empty"),
    "all NaN": (np.full((64, 64), np.nan, np.float32), "NaN or infinite"),
    "complex": (np.zeros((64, 64), np.complex64), "dtype complex64"),
    "object": (np.empty((64, 64), object), "dtype object"),
    "bool": (np.zeros((64, 64), bool), "dtype bool"),
    "strings": (np.full((64, 64), "a"), "dtype <U1"),
    "None": (None, "dtype object"),
    "1 x 1": (np.zeros((1, 1), np.uint8), "at least 8 pixels"),
    "five channels last": (np.zeros((64, 64, 5), np.uint8), "5 channels"),
    "100000 x 100000 (a broadcast view, no memory)": (
        np.broadcast_to(np.uint8(0), (100000, 100000)), "from 64 to 4096 pixels"),
    "a constant frame": (np.full((64, 64), 7, np.uint16), "constant"),
}


@pytest.mark.parametrize("row", list(BAD_ARRAYS))
def test_segment_amodal_bad_arrays(row):
    import blastoseg

    arr, expect = BAD_ARRAYS[row]
    with pytest.raises(ALLOWED, match=re.escape(expect)) as info:
        blastoseg.segment_amodal(arr)
    assert not isinstance(info.value, FORBIDDEN)


FRAME_INSTANCES = {
    "2D masks": (dict(masks=np.zeros((64, 64), bool)), "must be (N, H, W)"),
    "None masks": (dict(masks=None), "must be (N, H, W)"),
    "3 scores for 2 masks": (dict(masks=np.zeros((2, 8, 8), bool), scores=np.ones(3)),
                             "scores has 3 entries for 2"),
    "1 class id for 2 masks": (dict(masks=np.zeros((2, 8, 8), bool), class_ids=[1]),
                               "class_ids has 1 entries for 2"),
    "5 track ids for 2 masks": (dict(masks=np.zeros((2, 8, 8), bool), track_ids=np.ones(5)),
                                "track_ids has 5 entries for 2"),
    "visible masks of another size": (dict(masks=np.zeros((2, 8, 8), bool),
                                           visible_masks=np.zeros((2, 4, 4), bool)),
                                      "must match amodal masks"),
    "occlusion of another size": (dict(masks=np.zeros((2, 8, 8), bool),
                                       occlusion=np.zeros((4, 4))), "occlusion map"),
}


@pytest.mark.parametrize("row", list(FRAME_INSTANCES))
def test_frame_instances_bad_arrays(row):
    from blastoseg import FrameInstances

    kwargs, expect = FRAME_INSTANCES[row]
    with pytest.raises(ALLOWED, match=re.escape(expect)) as info:
        FrameInstances(**kwargs)
    assert not isinstance(info.value, FORBIDDEN)


def _sample(image, masks=None):
    from blastoseg import FrameInstances
    from blastoseg.io import Sample

    return Sample(image=image, instances=FrameInstances(
        masks=np.zeros((0, 16, 16), bool) if masks is None else masks))


WRITE_DATASET = {
    "4D image": (lambda: [_sample(np.zeros((2, 2, 16, 16), np.uint8))], "must be (H, W)"),
    "complex image": (lambda: [_sample(np.zeros((16, 16), np.complex64))], "dtype complex64"),
    "object image": (lambda: [_sample(np.empty((16, 16), object))], "dtype object"),
    "masks of another size": (lambda: [_sample(np.zeros((16, 16), np.uint8),
                                               np.zeros((1, 8, 8), bool))],
                              "instance masks are (8, 8)"),
    "not a Sample": (lambda: [42], "expected a blastoseg.io.Sample"),
}


@pytest.mark.parametrize("row", list(WRITE_DATASET))
def test_write_dataset_bad_samples(row, tmp_path):
    from blastoseg.io import write_dataset

    make, expect = WRITE_DATASET[row]
    with pytest.raises(ALLOWED, match=re.escape(expect)) as info:
        write_dataset(tmp_path / "ds", make())
    assert not isinstance(info.value, FORBIDDEN)


@pytest.mark.parametrize("row", [r for r in IMAGE_INPUTS if r != "a dataset folder"])
def test_read_images_bad_files(row, tmp_path):
    """The library reader behind every verb: a BlastosegError naming the file, or (for files
    it reads fine, whose pixels the models refuse) an array that ``as_frames`` refuses."""
    from blastoseg.io import read_images
    from blastoseg.io.frames import as_frames, grey_frame

    bad = IMAGE_INPUTS[row](tmp_path)
    with pytest.raises(BlastosegError) as info:
        stack = read_images(bad)
        frames, _ = as_frames(stack.data)
        for frame in frames:
            grey_frame(frame)
    assert re.search(IMAGE_EXPECT[row], str(info.value)), str(info.value)


@pytest.mark.parametrize("row", list(DATASET_INPUTS))
def test_read_dataset_bad_folders(row, tmp_path):
    """The library dataset reader: the structure on open, each image and mask on use."""
    from blastoseg.io import read_dataset

    data = DATASET_INPUTS[row](tmp_path)
    with pytest.raises(BlastosegError) as info:
        ds = read_dataset(data)
        for i in range(len(ds)):
            ds.load_image(i)
            ds.instances(i)
    assert re.search(DATASET_EXPECT[row], str(info.value)), str(info.value)


def test_path_of_the_wrong_type():
    from blastoseg.io import read_dataset, read_image, read_images

    for fn in (read_image, read_images, read_dataset):
        with pytest.raises(TypeError, match="os.PathLike"):
            fn(None)
