"""Overlap-aware probability maps: values per variant, input forms, bad input, and the
incremental cache of the live preview (must equal the full computation exactly)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage as ndi

from blastoseg.errors import BlastosegError, InvalidImageError
from blastoseg.instances import FrameInstances
from blastoseg.targets import (
    PROBABILITY_VARIANTS,
    VARIANT_DESCRIPTIONS,
    VARIANT_PARAMS,
    ProbabilityMapCache,
    ProbabilityParams,
    probability_map,
)

MAPPED = [v for v in PROBABILITY_VARIANTS if v != "none"]


def _disc(shape, cy, cx, r):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r ** 2


def _outline(m):
    return m & ~ndi.binary_erosion(m)


@pytest.fixture
def two_discs():
    return np.stack([_disc((64, 64), 32, 22, 14), _disc((64, 64), 32, 40, 14)])


def _random_labels(rng, shape=(96, 96), n=8):
    labels = np.zeros(shape, np.int32)
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    for label in range(1, n + 1):
        cy, cx = rng.uniform(10, shape[0] - 10), rng.uniform(10, shape[1] - 10)
        a, b = rng.uniform(6, 16, 2)
        labels[((yy - cy) / a) ** 2 + ((xx - cx) / b) ** 2 <= 1] = label
    return labels


def test_variants_documented():
    assert set(PROBABILITY_VARIANTS) == set(VARIANT_PARAMS) == set(VARIANT_DESCRIPTIONS)
    assert {"border", "nuclei", "overlap_extended", "combined_border_overlap",
            "combined_nuclei_overlap", "none"} == set(PROBABILITY_VARIANTS)
    fields = set(ProbabilityParams().to_dict())
    for names in VARIANT_PARAMS.values():
        assert set(names) <= fields


@pytest.mark.parametrize("variant", PROBABILITY_VARIANTS)
def test_background_and_range(two_discs, variant):
    nuclei = _disc((64, 64), 32, 18, 3)
    p = probability_map(two_discs, variant, nuclei=nuclei)
    assert p.dtype == np.float32 and p.shape == (64, 64)
    fg = two_discs.any(axis=0)
    if variant == "none":
        assert (p == 1).all()
        return
    np.testing.assert_allclose(p[~fg], 0.1)
    assert p[fg].min() >= 0.1 - 1e-6 and p.max() <= 1.0
    assert p[fg].max() == pytest.approx(1.0)


def test_border_formula_and_monotone_in_distance():
    m = _disc((48, 48), 24, 24, 15)
    a, f = 10.0, 0.1
    p = probability_map(m[None], "border", log_scale=a, floor=f)
    e = ndi.distance_transform_edt(m)
    d = (e - 1) / (e.max() - 1)
    expected = f + (1 - f) * (1 - np.log1p(a * d) / math.log1p(a))
    np.testing.assert_allclose(p[m], expected[m], rtol=1e-6)
    assert (p[_outline(m)] == 1).all()  # maximum on the outline
    assert p[24, 24] == pytest.approx(f)  # floor at the centre
    order = np.argsort(e[m], kind="stable")
    assert (np.diff(p[m][order]) <= 1e-7).all()  # non-increasing with the distance
    # a = 0 is linear in the distance
    lin = probability_map(m[None], "border", log_scale=0)
    np.testing.assert_allclose(lin[m], (f + (1 - f) * (1 - d))[m], rtol=1e-6)
    # larger a concentrates the weight on the outline: lower P inside
    assert probability_map(m[None], log_scale=100)[m].mean() < p[m].mean()


def test_border_inside_overlap_is_high(two_discs):
    p = probability_map(FrameInstances(masks=two_discs), "border")
    inner_outline = _outline(two_discs[1]) & two_discs[0]
    assert inner_outline.sum() > 5
    assert (p[inner_outline] == 1).all()  # disc 1's outline stays visible inside disc 0
    # the overlap lens is close to two outlines: higher P than a single disc's interior
    lens = two_discs[0] & two_discs[1]
    single = probability_map(two_discs[:1], "border")
    assert p[lens].mean() > single[lens].mean()


def test_nuclei_variant():
    m = _disc((48, 48), 24, 24, 15)
    nuc = _disc((48, 48), 20, 28, 3)
    p = probability_map(m[None], "nuclei", nuclei=nuc)
    assert (p[nuc] == 1).all()  # maximum on the nucleus
    dist = ndi.distance_transform_edt(~nuc)
    order = np.argsort(dist[m], kind="stable")
    assert (np.diff(p[m][order]) <= 1e-7).all()  # decays with the distance from it
    far = np.unravel_index(np.argmax(np.where(m, dist, -1)), m.shape)
    assert p[far] == pytest.approx(0.1)
    # no nucleus: seeded at the cell's innermost point
    q = probability_map(m[None], "nuclei")
    assert q[24, 24] == 1 and q.max() == 1 and (q[m] < 1).sum() == m.sum() - 1


def test_nuclei_labels_pick_the_cells_own_nucleus():
    cell = _disc((48, 48), 24, 20, 14)
    labels = np.zeros((48, 48), np.int32)
    labels[_disc((48, 48), 24, 18, 4)] = 1  # this cell's nucleus
    labels[_disc((48, 48), 24, 36, 4)] = 2  # a neighbour's nucleus, partly under the cell
    under = (labels == 2) & cell
    assert under.any()
    by_label = probability_map(cell[None], "nuclei", nuclei=labels)
    as_mask = probability_map(cell[None], "nuclei", nuclei=labels > 0)
    assert (by_label[under] < 1).all() and (as_mask[under] == 1).all()
    assert (by_label[labels == 1] == 1).all()


def test_overlap_extended(two_discs):
    lens = two_discs[0] & two_discs[1]
    fg = two_discs.any(axis=0)
    w = 5
    p = probability_map(two_discs, "overlap_extended", overlap_width=w)
    assert (p[lens] == 1).all()
    dist = ndi.distance_transform_edt(~lens)
    band = fg & (dist > 0) & (dist < w)
    assert (p[band] < 1).all() and (p[band] > 0.1).all()
    np.testing.assert_allclose(p[fg & (dist >= w)], 0.1)
    order = np.argsort(dist[fg], kind="stable")
    assert (np.diff(p[fg][order]) <= 1e-7).all()
    # a label image cannot overlap, but an annotated overlap can be given
    labels = two_discs[0].astype(np.int32)
    labels[two_discs[1] & ~two_discs[0]] = 2
    assert (probability_map(labels, "overlap_extended")[fg] == np.float32(0.1)).all()
    given = probability_map(labels, "overlap_extended", overlap=lens, overlap_width=w)
    np.testing.assert_array_equal(given, p)


@pytest.mark.parametrize("base", ["border", "nuclei"])
def test_combined_is_the_maximum(two_discs, base):
    nuclei = _disc((64, 64), 32, 16, 3)
    fg = two_discs.any(axis=0)
    a = probability_map(two_discs, base, nuclei=nuclei)
    b = probability_map(two_discs, "overlap_extended", nuclei=nuclei)
    c = probability_map(two_discs, f"combined_{base}_overlap", nuclei=nuclei)
    np.testing.assert_array_equal(c[fg], np.maximum(a, b)[fg])


def test_input_forms_agree():
    rng = np.random.default_rng(3)
    labels = _random_labels(rng)
    values = [v for v in np.unique(labels) if v]
    stack = np.stack([labels == v for v in values])
    for variant in MAPPED:
        a = probability_map(labels, variant)
        np.testing.assert_array_equal(a, probability_map(stack, variant))
        np.testing.assert_array_equal(a, probability_map(FrameInstances(masks=stack), variant))
        np.testing.assert_array_equal(a, probability_map(labels.astype(np.float32), variant))
    # huge sparse label values are fine
    big = np.where(labels > 0, labels.astype(np.int64) * 1_000_003, 0)
    np.testing.assert_array_equal(probability_map(big), probability_map(labels))


def test_bad_input_and_edge_cases():
    labels = np.zeros((32, 32), np.float32)
    labels[4:10, 4:10] = 1.5
    with pytest.raises(InvalidImageError, match="integer labels"):
        probability_map(labels)
    with pytest.raises(InvalidImageError, match="integer labels"):
        probability_map(np.full((8, 8), np.nan))
    with pytest.raises(InvalidImageError, match=">= 0"):
        probability_map(-np.ones((8, 8), np.int32))
    with pytest.raises(InvalidImageError, match="2D label image"):
        probability_map(np.zeros((2, 2, 8, 8), np.int32))
    with pytest.raises(InvalidImageError, match="same size"):
        probability_map(np.ones((8, 8), np.int32), "nuclei", nuclei=np.zeros((4, 4), bool))
    with pytest.raises(BlastosegError, match="unknown probability-map variant"):
        probability_map(np.ones((8, 8), np.int32), "gaussian")
    with pytest.raises(BlastosegError, match="unknown probability-map parameter"):
        probability_map(np.ones((8, 8), np.int32), sigma=3)
    with pytest.raises(BlastosegError, match=r"\[0, 1\]"):
        probability_map(np.ones((8, 8), np.int32), background=2)
    # no cells: all background; one cell: fine; a cell covering the whole image: fine
    for variant in MAPPED:
        empty = probability_map(np.zeros((16, 16), np.uint16), variant, background=0.2)
        assert (empty == np.float32(0.2)).all()
        one = np.zeros((16, 16), np.uint8)
        one[3:12, 4:10] = 9
        p = probability_map(one, variant)
        assert (p[one == 0] == np.float32(0.1)).all()
        # one cell has no overlap: overlap_extended leaves it at the floor
        assert p.max() == (np.float32(0.1) if variant == "overlap_extended" else 1.0)
        full = probability_map(np.ones((16, 16), np.int32), variant)
        assert np.isfinite(full).all() and full.min() >= 0.1
    assert (probability_map(np.ones((16, 16), bool), "border")[0] == 1).all()


# --- incremental cache ----------------------------------------------------------------------

def _edits(labels):
    """A sequence of edited label images: change, grow, add, delete, relabel, move."""
    yy, xx = np.mgrid[:labels.shape[0], :labels.shape[1]]
    out = []
    cur = labels.copy()
    cur[(yy - 30) ** 2 + (xx - 30) ** 2 <= 36] = cur.max()  # paint into a cell
    out.append(cur.copy())
    cur[cur == 2] = 0  # delete a cell
    out.append(cur.copy())
    cur[80:92, 4:20] = 50  # add a cell
    out.append(cur.copy())
    cur[cur == 3] = 7  # relabel (merges into 7)
    out.append(cur.copy())
    cur[cur == 50] = 0
    cur[2:14, 70:90] = 50  # move a cell far away
    out.append(cur.copy())
    cur[:] = cur  # no change
    out.append(cur.copy())
    return out


@pytest.mark.parametrize("variant", PROBABILITY_VARIANTS)
def test_cache_equals_full_compute(variant):
    rng = np.random.default_rng(7)
    labels = _random_labels(rng)
    nuclei = ndi.binary_erosion(labels > 0, iterations=5)
    cache = ProbabilityMapCache(variant, nuclei=nuclei, overlap_width=4)
    assert cache.map is None
    first = cache.update(labels)
    np.testing.assert_array_equal(first, probability_map(labels, variant, nuclei=nuclei,
                                                          overlap_width=4))
    for edited in _edits(labels):
        got = cache.update(edited)
        want = probability_map(edited, variant, nuclei=nuclei, overlap_width=4)
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(cache.map, want)


@pytest.mark.parametrize("variant", ["combined_border_overlap", "overlap_extended", "nuclei"])
def test_cache_on_overlapping_label_layers(variant):
    rng = np.random.default_rng(11)
    layers = np.stack([_random_labels(rng, n=4), _random_labels(rng, n=4) * 10])
    assert ((layers[0] > 0) & (layers[1] > 0)).any()  # the layers overlap
    cache = ProbabilityMapCache(variant)
    cache.update(layers)
    edited = layers.copy()
    edited[1][edited[1] == 10] = 0
    edited[0, 40:60, 40:60] = 4
    got = cache.update(edited)
    np.testing.assert_array_equal(got, probability_map(edited, variant))
    assert set(cache.last_recomputed) <= {(1, 10), (0, 4), *((0, v) for v in range(1, 5))}
    assert (1, 10) in cache.last_recomputed


def test_cache_recomputes_only_edited_cells():
    rng = np.random.default_rng(5)
    labels = _random_labels(rng)
    cache = ProbabilityMapCache("border")
    cache.update(labels)
    assert len(cache.last_recomputed) == len(np.unique(labels)) - 1
    edited = labels.copy()
    edited[edited == 4] = 0
    cache.update(edited)
    assert cache.last_recomputed == ((0, 4),)
    cache.update(edited)
    assert cache.last_recomputed == ()
    # a new size is a new image: full computation
    p = cache.update(labels[:64, :80])
    np.testing.assert_array_equal(p, probability_map(labels[:64, :80]))


def test_cache_set_nuclei_and_bad_labels():
    rng = np.random.default_rng(2)
    labels = _random_labels(rng)
    cache = ProbabilityMapCache("combined_nuclei_overlap")
    cache.update(labels)
    nuclei = ndi.binary_erosion(labels > 0, iterations=4)
    cache.set_nuclei(nuclei)
    np.testing.assert_array_equal(cache.map, probability_map(labels, "combined_nuclei_overlap",
                                                             nuclei=nuclei))
    with pytest.raises(InvalidImageError):
        cache.update(labels + 0.25)
    with pytest.raises(BlastosegError):
        ProbabilityMapCache("nope")
