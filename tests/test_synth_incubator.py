"""Incubator full frames and the embryo circle ground truth (small frames: seconds)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from blastoseg.errors import BlastosegError
from blastoseg.synth import (
    EmbryoConfig,
    optics,
    render_embryo,
    render_timelapse,
    write_synthetic_embryos,
)

S = 160
INC = EmbryoConfig(image_size=(S, S), mode="incubator")
# a bare zona: round, no cumulus/debris/fragments, so its optical path is the zona alone
BARE = dict(zona_ellipticity=(0.0, 0.0), cumulus_clusters=(0.0, 0.0), debris_particles=(0.0, 0.0),
            fragments=(0.0, 0.0), floating_cumulus=(0.0, 0.0), specks=(0.0, 0.0))


def _capture_opl(monkeypatch) -> list[np.ndarray]:
    """Record the optical path map every render passes to the relief model."""
    seen: list[np.ndarray] = []
    real = optics.relief_image

    def spy(opl, *args, **kw):
        seen.append(opl.copy())
        return real(opl, *args, **kw)

    monkeypatch.setattr(optics, "relief_image", spy)
    return seen


def _zona_edge(opl: np.ndarray, cells: np.ndarray, cx: float, cy: float, r: float) -> float:
    """Radius where the zona's path (median over directions, cells masked) falls to 10 %."""
    yy, xx = np.mgrid[0:opl.shape[0], 0:opl.shape[1]]
    rr = np.hypot(xx - cx, yy - cy)
    base = np.median(opl[(rr > r + 8) & (rr < r + 14)])
    radii = np.arange(r - 8, r + 8, 0.25)
    prof = np.array([np.median(opl[(np.abs(rr - k) < 0.5) & ~cells]) - base for k in radii])
    peak = prof.max()
    return float(radii[np.nonzero(prof > 0.1 * peak)[0].max()])


@pytest.mark.parametrize("mode,seed", [("crop", 1), ("incubator", 2), ("incubator", 5)])
def test_embryo_circle_is_the_zona_outer_face(monkeypatch, mode: str, seed: int) -> None:
    seen = _capture_opl(monkeypatch)
    cfg = EmbryoConfig(image_size=(S, S), mode=mode, **BARE)
    fr = render_embryo(3, seed=seed, config=cfg)
    cx, cy, r = fr.meta["embryo_circle"]
    assert fr.instances.meta["embryo_circle"] == [cx, cy, r]
    assert r == pytest.approx(fr.meta["zona_outer_radius_px"])
    # the circle's centre is the embryo centre (the zona is placed at whole pixels)
    ex, ey = fr.meta["embryo_center_xy"]
    assert abs(cx - ex) <= 0.5 and abs(cy - ey) <= 0.5
    edge = _zona_edge(seen[-1], fr.instances.masks.any(axis=0), cx, cy, r)
    assert abs(edge - r) <= 1.5, (edge, r)
    # every blastomere lies inside the circle
    yy, xx = np.nonzero(fr.instances.masks.any(axis=0))
    assert np.hypot(xx - cx, yy - cy).max() < r


def test_embryo_circle_follows_the_timelapse_drift(monkeypatch) -> None:
    seen = _capture_opl(monkeypatch)
    cfg = EmbryoConfig(image_size=(S, S), mode="incubator", drift_um=3.0, **BARE)
    tl = render_timelapse(4, seed=4, config=cfg, max_cells=2)
    circles = tl.meta["embryo_circles"]
    assert len(circles) == 4 and len({tuple(c[:2]) for c in circles}) > 1  # it moved
    for k, (cx, cy, r) in enumerate(circles):
        cells = tl.frames[k].masks.any(axis=0)
        assert abs(_zona_edge(seen[k], cells, cx, cy, r) - r) <= 1.5
        assert tl.frames[k].meta["embryo_circle"] == [cx, cy, r]
        # the embryo stays inside its micro-well
        if tl.meta["container"] == "well":
            wx, wy, wr = tl.meta["container_circle"]
            assert np.hypot(cx - wx, cy - wy) + r <= wr + 1.0


def test_incubator_frame_has_a_bright_rim_outside_the_embryo() -> None:
    cfg = EmbryoConfig(image_size=(S, S), mode="incubator", dish_edge_prob=0.0,
                       partial_rim_prob=0.0, rim_brightness=(0.7, 1.0), vignetting_prob=0.0,
                       bubble_prob=0.0, pipette_prob=0.0, incubator_text_prob=0.0)
    sizes = []
    for seed in range(6):
        fr = render_embryo(2, seed=seed, config=cfg)
        cx, cy, r = fr.meta["embryo_circle"]
        wx, wy, wr = fr.meta["container_circle"]
        assert fr.meta["mode"] == "incubator" and fr.meta["container"] == "well"
        sizes.append(2 * r / S)
        assert 1.6 * r - 0.5 <= wr <= 3.0 * r + 0.5  # well radius 1.6-3x the embryo's
        assert np.hypot(cx - wx, cy - wy) + r <= wr + 0.5  # embryo inside the well
        assert 0 <= cx < S and 0 <= cy < S
        img = fr.image.astype(float)
        yy, xx = np.mgrid[0:S, 0:S]
        dw = np.hypot(xx - wx, yy - wy) - wr
        de = np.hypot(xx - cx, yy - cy) - r
        ring = (dw > 0) & (dw < 0.05 * S)
        medium = (dw < -3) & (de > 6)
        if ring.sum() < 30 or medium.sum() < 30:
            continue  # the rim is out of view for this layout
        assert np.percentile(img[ring], 95) > np.median(img[medium]) + 25
        assert not (ring & (de < 0)).any()  # the rim never crosses the embryo
    assert min(sizes) >= 0.25 - 1e-6 and max(sizes) <= 0.70 + 1e-6


def test_incubator_deterministic_and_mixed() -> None:
    a = render_embryo(4, seed=3, config=INC)
    b = render_embryo(4, seed=3, config=INC)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.instances.masks, b.instances.masks)
    assert a.meta == b.meta
    assert not np.array_equal(a.image, render_embryo(4, seed=4, config=INC).image)
    # crop mode is the default and is not changed by the incubator knobs
    crop = render_embryo(4, seed=3, config=EmbryoConfig(image_size=(S, S)))
    other = render_embryo(4, seed=3, config=EmbryoConfig(image_size=(S, S), well_ratio=(2, 2)))
    np.testing.assert_array_equal(crop.image, other.image)
    assert crop.meta["mode"] == "crop" and "container" not in crop.meta
    # mixed: each frame draws its mode; a frame equals the same seed rendered in that mode
    mixed = EmbryoConfig(image_size=(S, S), mode="mixed")
    modes = [render_embryo(1, seed=s, config=mixed).meta["mode"] for s in range(12)]
    assert set(modes) == {"crop", "incubator"}
    s = modes.index("incubator")
    np.testing.assert_array_equal(render_embryo(1, seed=s, config=mixed).image,
                                  render_embryo(1, seed=s, config=INC).image)


def test_invalid_mode() -> None:
    with pytest.raises(BlastosegError, match="mode"):
        EmbryoConfig(mode="full")
    with pytest.raises(BlastosegError, match="appearance"):
        EmbryoConfig(appearance="fancy")


def test_written_datasets_carry_the_circle(tmp_path) -> None:
    out = write_synthetic_embryos(tmp_path / "f", n=3, seed=0, config=INC)
    entries = json.loads(out.read_text())["images"]
    assert all(len(e["embryo_circle"]) == 3 and e["mode"] == "incubator" for e in entries)
    out = write_synthetic_embryos(tmp_path / "v", n=1, seed=0, timelapse=3,
                                  config=EmbryoConfig(image_size=(S, S)))
    entries = json.loads(out.read_text())["images"]
    assert len(entries) == 3 and all(len(e["embryo_circle"]) == 3 for e in entries)


def test_cli_mode_flag(tmp_path) -> None:
    from blastoseg.cli import main

    out = tmp_path / "inc"
    assert main(["synth", "embryos", "--n", "2", "--seed", "1", "--out", str(out), "--size",
                 "128", "--mode", "incubator"]) == 0
    data = json.loads((out / "annotations.json").read_text())
    assert data["info"]["config"]["mode"] == "incubator"
    for e in data["images"]:
        assert e["mode"] == "incubator"
        cx, cy, r = e["embryo_circle"]
        assert 0.25 * 128 <= 2 * r <= 0.7 * 128 + 1e-6
    with pytest.raises(SystemExit):
        main(["synth", "embryos", "--n", "1", "--out", str(tmp_path / "x"), "--mode", "full"])


# --- the wide appearance ---------------------------------------------------------------------

WIDE = EmbryoConfig(image_size=(S, S), appearance="wide")


@pytest.mark.parametrize("n,seed", [(2, 0), (5, 1), (8, 2), (8, 3)])
def test_wide_appearance_ground_truth(n: int, seed: int) -> None:
    fr = render_embryo(n, seed=seed, config=WIDE)
    inst = fr.instances
    assert fr.image.dtype == np.uint8 and fr.image.std() > 3
    assert inst.count == n and fr.meta["appearance"] == "wide"
    assert not np.any(inst.visible_masks & ~inst.masks)
    assert inst.visible_masks.sum(axis=0).max() <= 1
    np.testing.assert_array_equal(inst.visible_masks.any(axis=0), inst.masks.any(axis=0))
    np.testing.assert_array_equal(inst.occlusion > 0.5, inst.masks.sum(axis=0) >= 2)
    assert all(m.any() for m in inst.masks)
    a = render_embryo(n, seed=seed, config=WIDE)
    np.testing.assert_array_equal(a.image, fr.image)
    np.testing.assert_array_equal(a.instances.masks, inst.masks)


def test_wide_eight_cells_stack_deep_and_looks_vary() -> None:
    frames = [render_embryo(8, seed=s, config=WIDE) for s in range(6)]
    depths = [f.instances.coverage().max() for f in frames]
    assert min(depths) >= 3 and np.median(depths) >= 4
    # the look is randomised: background level and contrast spread far more than by default
    means = [float(np.median(f.image)) for f in frames]
    assert max(means) - min(means) > 25


def test_wide_is_off_by_default() -> None:
    a = render_embryo(4, seed=1, config=EmbryoConfig(image_size=(S, S)))
    b = render_embryo(4, seed=1, config=WIDE)
    assert a.meta["appearance"] == "default"
    assert not np.array_equal(a.image, b.image)


def test_pressed_cells_keep_their_volume_and_share_a_flat_face() -> None:
    from blastoseg.synth import geometry as geo

    r = 20.0
    cells = [geo.Cell(center=np.array([x, 0.0, 0.0]), volume=4 / 3 * np.pi * r**3, track_id=i)
             for i, x in enumerate((-14.0, 14.0))]  # 28 px apart: 12 px interpenetration
    for c in cells:
        c.axes = np.full(3, r)
    pressed = geo.press(cells, n_iter=3)
    for (c, pl), orig in zip(pressed, cells, strict=True):
        assert len(pl) == 1
        np.testing.assert_allclose(pl[0, :3], np.sign(-orig.center[0]) * np.array([1, 0, 0]))
        assert pl[0, 3] == pytest.approx(14.0)  # equal cells: the face is the mid-plane
        assert geo.clipped_volume(c, pl) == pytest.approx(orig.volume, rel=0.03)
    # projected side by side (the face between pixel columns 50 and 51), the two bodies meet
    # there without overlapping and without a gap
    projs = [geo.project(c, (50.5, 50.0), (101, 101), planes=pl) for c, pl in pressed]
    amodal, _, _ = geo.masks_from_projections(projs, (101, 101))
    assert not (amodal[0] & amodal[1]).any()
    cols = [np.nonzero(m.any(axis=0))[0] for m in amodal]
    assert cols[0].max() == 50 and cols[1].min() == 51
    # inflated to keep their volume: wider across the face than the uncut spheres
    assert projs[0].thickness.max() > 2 * r + 0.3


def test_cli_appearance_flag(tmp_path) -> None:
    from blastoseg.cli import main

    out = tmp_path / "wide"
    assert main(["synth", "embryos", "--n", "2", "--seed", "1", "--out", str(out), "--size",
                 "128", "--mode", "mixed", "--appearance", "wide"]) == 0
    data = json.loads((out / "annotations.json").read_text())
    assert data["info"]["config"]["appearance"] == "wide"
    assert data["info"]["config"]["mode"] == "mixed"
    assert all(e["appearance"] == "wide" and len(e["embryo_circle"]) == 3
               for e in data["images"])
