"""Corrupt RLE masks are refused on load, never decoded into a different mask silently
(issue 18, item 14)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from blastoseg.io.coco_rle import decode_segmentation, encode_mask, run_lengths


def _mask():
    m = np.zeros((40, 50), bool)
    m[5:30, 10:41] = True
    m[12:18, 2:8] = True
    return m


def test_good_rle_decodes_exactly_in_both_flavours():
    m = _mask()
    rle = encode_mask(m)
    assert (decode_segmentation(rle, 40, 50) == m).all()
    runs = run_lengths(rle["counts"].encode())
    assert sum(runs) == 40 * 50
    assert (decode_segmentation({"size": [40, 50], "counts": runs}, 40, 50) == m).all()


@pytest.mark.parametrize("corrupt, message", [
    (lambda r: {**r, "counts": r["counts"][:-3]}, "RLE 'counts'"),
    (lambda r: {**r, "counts": r["counts"][:-1] + "~~"}, "RLE 'counts'"),
    (lambda r: {**r, "counts": run_lengths(r["counts"].encode())[:-1]}, "covers"),
    (lambda r: {**r, "counts": [*run_lengths(r["counts"].encode()), 7]}, "covers"),
    (lambda r: {**r, "counts": [-5, 2005]}, "negative"),
])
def test_corrupt_rle_is_refused(corrupt, message):
    rle = encode_mask(_mask())
    with pytest.raises(ValueError, match=message):
        decode_segmentation(corrupt(rle), 40, 50)


def test_eval_on_a_dataset_with_a_cut_rle_fails_clearly(tmp_path, capsys):
    from blastoseg.cli import main

    data = tmp_path / "data"
    assert main(["synth", "embryos", "--n", "2", "--seed", "3", "--size", "128",
                 "--out", str(data)]) == 0
    path = data / "annotations.json"
    doc = json.loads(path.read_text())
    seg = doc["annotations"][0]["segmentation"]
    seg["counts"] = seg["counts"][: len(seg["counts"]) // 2]
    path.write_text(json.dumps(doc))
    code = main(["eval", "amodal", "--data", str(data), "--model", "amodal-default",
                 "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "corrupt" in err or "cut short" in err
    assert "Traceback" not in err
