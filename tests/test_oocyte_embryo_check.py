"""The rule behind the oocyte model's "looks like an embryo" warning, on known detections."""

from __future__ import annotations

import numpy as np

from blastoseg.predict.oocyte_embryo_check import EmbryoCheck, blastomere_count


def test_blastomere_count_skips_low_scores_and_small_pieces():
    scores = np.array([0.99, 0.95, 0.7, 0.3])
    areas = np.array([1000, 150, 900, 2000])  # a polar body (150) and a weak big box (0.3)
    assert blastomere_count(scores, areas, 0.6, 0.2) == 2  # the polar body is too small
    assert blastomere_count(scores, areas, 0.6, 0.1) == 3
    assert blastomere_count(scores, areas, 0.2, 0.2) == 3  # 2000 is the largest now
    assert blastomere_count(np.zeros(0), np.zeros(0), 0.5, 0.2) == 0


def test_rule_two_sure_cells_or_three_likely_ones():
    check = EmbryoCheck()
    one_oocyte = (np.array([0.99]), np.array([17000]))
    oocyte_and_polar_body = (np.array([0.99, 0.97]), np.array([17000, 900]))
    two_cells = (np.array([0.99, 0.95]), np.array([9000, 8000]))
    a_sure_and_a_doubtful = (np.array([0.99, 0.7]), np.array([9000, 8000]))
    three_likely = (np.array([0.8, 0.7, 0.65]), np.array([5000, 6000, 5500]))
    assert not check.looks_like_embryo(*one_oocyte)
    assert not check.looks_like_embryo(*oocyte_and_polar_body)
    assert check.looks_like_embryo(*two_cells)
    assert not check.looks_like_embryo(*a_sure_and_a_doubtful)
    assert check.looks_like_embryo(*three_likely)
    assert not check.looks_like_embryo(np.zeros(0), np.zeros(0))
