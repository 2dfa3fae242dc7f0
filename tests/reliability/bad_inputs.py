"""Factories of bad inputs for the bad-input matrix (``test_bad_input_matrix.py``).

Each factory takes a folder (a test's ``tmp_path``) and returns the path of one bad input;
everything is tiny (32 x 32 to 64 x 64 pixels), so the whole matrix stays fast. The names
are the rows of the matrix.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

SIDE = 64


def _frame(seed: int = 0, side: int = SIDE) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (side, side), dtype=np.uint8)


def _png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _tiff_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    tifffile.imwrite(buf, arr)
    return buf.getvalue()


# --- images ----------------------------------------------------------------------------------

def missing_file(tmp: Path) -> Path:
    return tmp / "no_such_image.png"


def empty_file(tmp: Path) -> Path:
    (p := tmp / "empty.png").write_bytes(b"")
    return p


def empty_tiff(tmp: Path) -> Path:
    (p := tmp / "empty.tif").write_bytes(b"")
    return p


def truncated_png(tmp: Path) -> Path:
    data = _png_bytes(_frame())
    (p := tmp / "truncated.png").write_bytes(data[: len(data) // 2])
    return p


def truncated_tiff(tmp: Path) -> Path:
    data = _tiff_bytes(np.stack([_frame(0), _frame(1), _frame(2)]))
    (p := tmp / "truncated.tif").write_bytes(data[: len(data) // 3])
    return p


def text_as_png(tmp: Path) -> Path:
    (p := tmp / "notes.png").write_text("these are my notes, not a picture\n")
    return p


def text_as_tiff(tmp: Path) -> Path:
    (p := tmp / "notes.tif").write_text("II*\0 and then nothing that makes sense\n")
    return p


def unsupported_extension(tmp: Path) -> Path:
    (p := tmp / "frame.txt").write_text("0 0 0\n")
    return p


def nan_tiff(tmp: Path) -> Path:
    arr = _frame().astype(np.float32)
    arr[10:20, 10:20] = np.nan
    tifffile.imwrite(p := tmp / "nan.tif", arr)
    return p


def inf_tiff(tmp: Path) -> Path:
    arr = _frame().astype(np.float32)
    arr[5, 5] = np.inf
    tifffile.imwrite(p := tmp / "inf.tif", arr)
    return p


def one_pixel_png(tmp: Path) -> Path:
    Image.fromarray(np.full((1, 1), 128, np.uint8)).save(p := tmp / "one_pixel.png")
    return p


def thin_strip_png(tmp: Path) -> Path:
    Image.fromarray(np.full((3, 200), 128, np.uint8)).save(p := tmp / "strip.png")
    return p


def complex_tiff(tmp: Path) -> Path:
    tifffile.imwrite(p := tmp / "complex.tif", _frame().astype(np.complex64))
    return p


def tiff_5d_channels(tmp: Path) -> Path:
    """An ImageJ (T, Z, C, Y, X) = (2, 2, 5, 32, 32) stack: five channels."""
    arr = np.zeros((2, 2, 5, 32, 32), np.uint8)
    tifffile.imwrite(p := tmp / "five_d.tif", arr, imagej=True, metadata={"axes": "TZCYX"})
    return p


def tiff_5d_plain(tmp: Path) -> Path:
    """A plain TIFF holding a (2, 2, 2, 32, 32) array: axes tifffile cannot name."""
    tifffile.imwrite(p := tmp / "five_d_plain.tif", np.zeros((2, 2, 2, 32, 32), np.uint8))
    return p


def tiff_4d_channels(tmp: Path) -> Path:
    """(T, Y, X, 5): a stack of five-channel frames."""
    tifffile.imwrite(p := tmp / "four_d.tif", np.zeros((2, 32, 32, 5), np.uint8),
                     photometric="minisblack", planarconfig="contig")
    return p


def tiff_6d(tmp: Path) -> Path:
    """A plain (non-ImageJ) TIFF series of 6 axes."""
    arr = np.zeros((2, 2, 2, 2, 16, 16), np.uint8)
    tifffile.imwrite(p := tmp / "six_d.tif", arr, metadata={"axes": "QQQQYX"})
    return p


def tiff_many_channels(tmp: Path) -> Path:
    """A (Y, X, 7) TIFF: seven channels last, neither grey nor colour."""
    arr = np.zeros((32, 32, 7), np.uint8)
    tifffile.imwrite(p := tmp / "seven_channels.tif", arr, photometric="minisblack",
                     planarconfig="contig")
    return p


def a_dataset_folder(tmp: Path) -> Path:
    """A dataset folder given where a frame, stack or frame folder is expected."""
    return good_dataset(tmp, "a_dataset")


def empty_folder(tmp: Path) -> Path:
    (p := tmp / "empty_folder").mkdir()
    return p


def folder_of_text(tmp: Path) -> Path:
    (p := tmp / "texts").mkdir()
    for i in range(3):
        (p / f"frame_{i}.png").write_text("not a picture")
    return p


def folder_of_notes(tmp: Path) -> Path:
    """A folder with files, none of them an image type."""
    (p := tmp / "notes").mkdir()
    (p / "readme.txt").write_text("hello")
    (p / "data.csv").write_text("a,b\n1,2\n")
    return p


#: every image-input row: name -> factory
IMAGE_INPUTS = {
    "missing file": missing_file,
    "empty file": empty_file,
    "empty .tif": empty_tiff,
    "truncated PNG": truncated_png,
    "truncated TIFF": truncated_tiff,
    "text file named .png": text_as_png,
    "text file named .tif": text_as_tiff,
    "unsupported extension": unsupported_extension,
    "NaN float TIFF": nan_tiff,
    "infinite float TIFF": inf_tiff,
    "1 x 1 image": one_pixel_png,
    "3 x 200 strip": thin_strip_png,
    "complex TIFF": complex_tiff,
    "5D TIFF with 5 channels": tiff_5d_channels,
    "5D TIFF without axes": tiff_5d_plain,
    "4D TIFF with 5 channels": tiff_4d_channels,
    "6D TIFF": tiff_6d,
    "7-channel TIFF": tiff_many_channels,
    "empty folder": empty_folder,
    "folder of text files named .png": folder_of_text,
    "folder without images": folder_of_notes,
    "a dataset folder": a_dataset_folder,
}


# --- datasets ----------------------------------------------------------------------------------

def good_dataset(tmp: Path, name: str = "good_ds", n: int = 2) -> Path:
    """A valid two-frame dataset of 64 x 64 frames with one cell each (video 1, frames 0, 1)."""
    from blastoseg.instances import FrameInstances
    from blastoseg.io import Sample, write_dataset

    samples = []
    for i in range(n):
        m = np.zeros((1, SIDE, SIDE), bool)
        m[0, 16:48, 16 + i:48] = True
        samples.append(Sample(image=_frame(i), instances=FrameInstances(masks=m),
                              video_id=1, frame_index=i,
                              extra={"embryo_circle": [32.0, 32.0, 20.0]}))
    write_dataset(tmp / name, samples)
    return tmp / name


def _edit_annotations(folder: Path, edit) -> Path:
    path = folder / "annotations.json"
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))
    return folder


def missing_dataset(tmp: Path) -> Path:
    return tmp / "no_such_dataset"


def folder_without_annotations(tmp: Path) -> Path:
    (p := tmp / "just_images").mkdir()
    Image.fromarray(_frame()).save(p / "a.png")
    return p


def malformed_json(tmp: Path) -> Path:
    (p := tmp / "bad_json").mkdir()
    (p / "annotations.json").write_text('{"images": [ {"id": 1, ')
    return p


def json_not_an_object(tmp: Path) -> Path:
    (p := tmp / "json_list").mkdir()
    (p / "annotations.json").write_text("[1, 2, 3]")
    return p


def json_missing_keys(tmp: Path) -> Path:
    (p := tmp / "json_keys").mkdir()
    (p / "annotations.json").write_text('{"info": {}}')
    return p


def empty_images_list(tmp: Path) -> Path:
    (p := tmp / "no_images").mkdir()
    (p / "annotations.json").write_text(json.dumps(
        {"images": [], "annotations": [], "categories": [{"id": 1, "name": "blastomere"}]}))
    return p


def images_missing(tmp: Path) -> Path:
    ds = good_dataset(tmp, "images_missing")
    for f in (ds / "images").iterdir():
        f.unlink()
    return ds


def image_corrupt(tmp: Path) -> Path:
    ds = good_dataset(tmp, "image_corrupt")
    for f in (ds / "images").iterdir():
        f.write_bytes(b"not a png")
    return ds


def wrong_size_mask(tmp: Path) -> Path:
    def edit(doc):
        for a in doc["annotations"]:
            a["segmentation"]["size"] = [SIDE // 2, SIDE // 2]
    return _edit_annotations(good_dataset(tmp, "wrong_size"), edit)


def corrupt_rle(tmp: Path) -> Path:
    def edit(doc):
        for a in doc["annotations"]:
            a["segmentation"]["counts"] = a["segmentation"]["counts"][:-3] + "~~"
    return _edit_annotations(good_dataset(tmp, "corrupt_rle"), edit)


def wrong_image_size(tmp: Path) -> Path:
    """The image entry says 64 x 64, the file is 32 x 32."""
    ds = good_dataset(tmp, "wrong_image_size")
    for f in (ds / "images").iterdir():
        Image.fromarray(_frame(side=SIDE // 2)).save(f)
    return ds


def annotation_of_unknown_image(tmp: Path) -> Path:
    def edit(doc):
        doc["annotations"][0]["image_id"] = 999
    return _edit_annotations(good_dataset(tmp, "unknown_image"), edit)


def string_for_number(tmp: Path) -> Path:
    def edit(doc):
        doc["images"][0]["height"] = "sixty-four"
    return _edit_annotations(good_dataset(tmp, "string_height"), edit)


def dataset_file_not_folder(tmp: Path) -> Path:
    (p := tmp / "a_file.csv").write_text("x")
    return p


#: every dataset-input row (``--data``): name -> factory
DATASET_INPUTS = {
    "missing folder": missing_dataset,
    "a file, not a folder": dataset_file_not_folder,
    "folder without annotations.json": folder_without_annotations,
    "malformed JSON": malformed_json,
    "JSON that is a list": json_not_an_object,
    "JSON without images": json_missing_keys,
    "images pointing at missing files": images_missing,
    "corrupt image file": image_corrupt,
    "image of another size than its entry": wrong_image_size,
    "mask of another size (RLE size)": wrong_size_mask,
    "corrupt RLE counts": corrupt_rle,
    "annotation of an unknown image": annotation_of_unknown_image,
    "height that is a string": string_for_number,
}


# --- weights ----------------------------------------------------------------------------------

def missing_weights(tmp: Path) -> str:
    return str(tmp / "no_such_model.safetensors")


def text_as_safetensors(tmp: Path) -> str:
    (p := tmp / "fake.safetensors").write_text("these are not weights")
    return str(p)


def text_as_safetensors_with_card(tmp: Path) -> str:
    """A text file named .safetensors beside a copy of a real card (so the card is read)."""
    from blastoseg.weights import bundled_models_dir

    card = json.loads((bundled_models_dir() / "overlap-default.json").read_text())
    card["name"] = "fake-carded"
    card["sha256"] = ""
    (tmp / "fake-carded.json").write_text(json.dumps(card))
    (p := tmp / "fake-carded.safetensors").write_text("these are not weights")
    return str(p)


def empty_safetensors(tmp: Path) -> str:
    (p := tmp / "zero.safetensors").write_bytes(b"")
    return str(p)


def unknown_model_name(tmp: Path) -> str:
    return "no-such-model-name"


def folder_not_a_job(tmp: Path) -> str:
    (p := tmp / "not_a_job").mkdir()
    return str(p)


#: every weights row (``--model``): name -> factory; "another kind's model" is added per verb
WEIGHTS_INPUTS = {
    "missing .safetensors": missing_weights,
    "text file named .safetensors": text_as_safetensors,
    "text .safetensors beside a real card": text_as_safetensors_with_card,
    "empty .safetensors": empty_safetensors,
    "unknown model name": unknown_model_name,
    "folder that is not a job": folder_not_a_job,
}
