"""Metrics: COCO mask AP through pycocotools, counting, centroid matching, the combined report."""

from __future__ import annotations

import json

import numpy as np
import pytest

from blastoseg.instances import FrameInstances
from blastoseg.metrics import (
    AP_KEYS,
    MetricsError,
    centroid_metrics,
    count_metrics,
    evaluate_amodal,
    evaluate_masks,
    format_report,
)

SHAPE = (64, 64)


def disk(cy: float, cx: float, r: float, shape=SHAPE) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def frame(*masks, scores=None, visible=None) -> FrameInstances:
    if not masks:
        return FrameInstances.empty(SHAPE)
    return FrameInstances(np.stack(masks), scores=scores,
                          visible_masks=None if visible is None else np.stack(visible))


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def overlapping_pair() -> FrameInstances:
    """Two cells, the left one on top: the right one's visible part is its amodal mask minus
    the left cell."""
    front, back = disk(32, 24, 14), disk(32, 40, 14)
    return frame(front, back, visible=[front, back & ~front])


def three_cells() -> FrameInstances:
    return frame(disk(16, 16, 9), disk(16, 46, 9), disk(46, 30, 12))


# --- COCO mask AP ---------------------------------------------------------------------------

def test_perfect_predictions_score_one():
    gt = [three_cells(), overlapping_pair()]
    res = evaluate_masks(gt, gt)
    assert res["mAP"] == pytest.approx(1.0)
    assert res["AP50"] == pytest.approx(1.0)
    assert res["AP75"] == pytest.approx(1.0)
    assert res["AR"] == pytest.approx(1.0)
    assert res["n_gt"] == res["n_pred"] == 5
    full = evaluate_amodal(gt, gt)
    assert full["mAP"] == pytest.approx(1.0) and full["count_exact"] == 1.0
    assert full["count_mae"] == 0.0 and full["n_images"] == 2


def test_shifted_masks_pass_ap50_but_not_ap75():
    a, b = disk(32, 20, 10), disk(32, 44, 10)
    sa, sb = disk(32, 25, 10), disk(32, 49, 10)  # shifted 5 px to the right
    for g, p in ((a, sa), (b, sb)):
        assert 0.5 < iou(g, p) < 0.75
    res = evaluate_masks([frame(a, b)], [frame(sa, sb)])
    assert res["AP50"] == pytest.approx(1.0)
    assert res["AP75"] == pytest.approx(0.0)
    assert 0.0 < res["mAP"] < 0.5


def test_missing_instance_lowers_recall_and_map():
    gt = three_cells()
    pred = gt.select([0, 1])
    res = evaluate_masks([gt], [pred])
    assert res["AR"] == pytest.approx(2 / 3)
    # precision is 1 up to recall 2/3, then nothing: 67 of COCO's 101 recall points
    assert res["mAP"] == pytest.approx(67 / 101)
    assert evaluate_amodal([gt], [pred])["count_exact"] == 0.0


def test_low_score_false_positive_barely_matters_high_score_one_does():
    gt = frame(disk(20, 20, 10), disk(44, 44, 10))
    fp_mask = disk(20, 48, 8)  # nowhere near a true cell
    good = [disk(20, 20, 10), disk(44, 44, 10)]
    low = evaluate_amodal([gt], [frame(*good, fp_mask, scores=[0.9, 0.9, 0.1])])
    high = evaluate_amodal([gt], [frame(*good, fp_mask, scores=[0.9, 0.9, 0.99])])
    assert low["mAP"] >= 0.99
    assert low["count_exact"] == 1.0  # below the 0.5 counting threshold
    # ranked first, the false positive halves precision at low recall: AP = 2/3 everywhere
    assert high["mAP"] == pytest.approx(2 / 3, abs=0.01)
    assert high["count_exact"] == 0.0 and high["count_mae"] == 1.0


def test_empty_frames():
    empty = frame()
    res = evaluate_masks([empty, empty], [empty, empty])
    assert res["n_gt"] == 0
    assert all(res[k] is None for k in AP_KEYS)
    # ground truth but no prediction: AP and recall are 0, not undefined
    res = evaluate_masks([three_cells(), empty], [empty, empty])
    assert res["mAP"] == 0.0 and res["AR"] == 0.0
    # a confident prediction on a frame without cells is a false positive
    gt = [three_cells(), empty]
    pred = [FrameInstances(three_cells().masks, scores=[0.9, 0.9, 0.9]),
            frame(disk(30, 30, 10), scores=[0.99])]
    res = evaluate_masks(gt, pred)
    assert res["mAP"] == pytest.approx(0.75, abs=0.01)  # precision 3/4 at every recall
    full = evaluate_amodal([empty], [empty])
    json.dumps(full, allow_nan=False)
    assert full["mAP"] is None and full["count_exact"] == 1.0


def test_visible_evaluation_differs_from_amodal():
    gt = overlapping_pair()
    # a modal-only model: it returns the visible parts as its "amodal" masks
    vis = list(gt.visible_masks)
    modal_pred = frame(*vis, visible=vis)
    assert iou(gt.masks[1], gt.visible_masks[1]) < 0.75
    amodal = evaluate_masks([gt], [modal_pred])
    visible = evaluate_masks([gt], [modal_pred], use_visible=True)
    assert visible["mAP"] == pytest.approx(1.0)
    assert amodal["mAP"] < 0.75
    res = evaluate_amodal([gt], [modal_pred])
    assert res["visible_evaluated"] is True
    assert res["visible_mAP"] == pytest.approx(1.0) and res["mAP"] < 0.75


def test_visible_evaluation_needs_visible_ground_truth():
    gt = three_cells()
    with pytest.raises(MetricsError, match="visible"):
        evaluate_masks([gt], [gt], use_visible=True)
    res = evaluate_amodal([gt], [gt])
    assert res["visible_evaluated"] is False and "visible_mAP" not in res
    assert "ground truth" in res["visible_skipped"]


def test_mismatched_inputs_raise_clear_errors():
    gt = three_cells()
    with pytest.raises(MetricsError, match="frames"):
        evaluate_masks([gt, gt], [gt])
    with pytest.raises(MetricsError, match="prediction"):
        evaluate_masks([gt], [FrameInstances.empty((32, 32))])
    with pytest.raises(MetricsError, match="categories"):
        evaluate_masks([gt], [gt], categories={2: "fragment"})


def test_map_by_true_cell_count():
    one, three = frame(disk(30, 30, 12)), three_cells()
    res = evaluate_amodal([one, three], [one, three.select([0, 1])])
    assert res["mAP_by_count"][1]["mAP"] == pytest.approx(1.0)
    assert res["mAP_by_count"][3]["mAP"] < 0.7
    assert res["by_count"][1]["exact"] == 1.0 and res["by_count"][3]["mae"] == 1.0


# --- counting and centroids -------------------------------------------------------------------

def test_count_metrics_hand_made():
    res = count_metrics([2, 2, 4, 4, 8], [2, 3, 4, 2, 8])
    assert res["n_images"] == 5
    assert res["count_exact"] == pytest.approx(3 / 5)
    assert res["count_mae"] == pytest.approx(3 / 5)
    assert res["count_within1"] == pytest.approx(4 / 5)
    assert res["count_bias"] == pytest.approx(-1 / 5)
    assert res["by_count"] == {
        2: {"n_images": 2, "exact": 0.5, "mae": 0.5, "bias": 0.5},
        4: {"n_images": 2, "exact": 0.5, "mae": 1.0, "bias": -1.0},
        8: {"n_images": 1, "exact": 1.0, "mae": 0.0, "bias": 0.0},
    }
    assert count_metrics([], [])["count_exact"] is None
    with pytest.raises(MetricsError):
        count_metrics([1, 2], [1])
    with pytest.raises(MetricsError):
        count_metrics([1, -2], [1, 2])


def test_centroid_metrics_hand_made():
    gt = np.array([[10, 10], [50, 50], [90, 90]], float)
    pred = np.array([[12, 10], [50, 53], [200, 200], [11, 11]], float)
    res = centroid_metrics(gt, pred, max_dist=5)
    assert (res["tp"], res["fp"], res["fn"]) == (2, 2, 1)
    assert res["precision"] == pytest.approx(0.5)
    assert res["recall"] == pytest.approx(2 / 3)
    assert res["f1"] == pytest.approx(4 / 7)
    assert res["mean_distance"] == pytest.approx((np.sqrt(2) + 3) / 2)


def test_centroid_matching_maximises_matches():
    # nearest-first would pair P-B (2 px) and leave A and Q unmatched (10 px apart);
    # the assignment pairs P-A and Q-B, both within 5 px
    gt, pred = np.array([[0, 0], [0, 6]], float), np.array([[0, 4], [0, 10]], float)
    res = centroid_metrics([gt], [pred], max_dist=5)
    assert res["tp"] == 2 and res["f1"] == 1.0
    # frames and FrameInstances input; empty frames count their misses
    f = three_cells()
    res = centroid_metrics([f, f], [f, frame()], max_dist=2)
    assert (res["tp"], res["fn"], res["fp"]) == (3, 3, 0)
    assert res["precision"] == 1.0 and res["recall"] == 0.5
    assert centroid_metrics(np.zeros((0, 2)), np.zeros((0, 2)), 3)["f1"] is None


# --- the combined report ----------------------------------------------------------------------

def _plain(obj) -> bool:
    if isinstance(obj, dict):
        return all(isinstance(k, (str, int)) and _plain(v) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return all(_plain(v) for v in obj)
    return obj is None or type(obj) in (bool, int, float, str)


def test_result_is_json_serialisable_and_formats():
    gt = [three_cells(), overlapping_pair(), frame()]
    pred = [three_cells().select([0, 2]), overlapping_pair(), frame(disk(30, 30, 5),
                                                                     scores=[0.3])]
    res = evaluate_amodal(gt, pred, score_threshold=0.5)
    assert _plain(res)
    text = json.dumps(res, allow_nan=False)
    for key in ("mAP", "AP50", "AP75", "count_exact", "count_mae", "n_images"):
        assert key in res
    assert res["n_images"] == 3 and res["count_exact"] == pytest.approx(2 / 3)
    table = format_report(res)
    assert "mAP" in table and "by true cell count" in table and "66.7%" in table
    assert format_report(json.loads(text)) == table  # string keys after a JSON round trip


def test_ground_truth_read_from_a_dataset_folder(tmp_path):
    from blastoseg.io.dataset import Sample, read_dataset, write_dataset

    frames = [overlapping_pair(), three_cells(), frame()]
    write_dataset(tmp_path / "ds", [Sample(np.zeros(SHAPE, np.uint8), f) for f in frames])
    ds = read_dataset(tmp_path / "ds")
    gt = [ds.instances(i) for i in range(len(ds))]
    res = evaluate_amodal(gt, frames, categories=ds.categories)
    assert res["mAP"] == pytest.approx(1.0) and res["count_exact"] == 1.0
    # only the first frame has visible masks on disk: visible AP needs them on every frame
    assert res["visible_evaluated"] is False
