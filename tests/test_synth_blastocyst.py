"""Synthetic day 5-6 blastocysts: ground truth, determinism, modes, writer and CLI."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from scipy import ndimage as ndi

from blastoseg.errors import BlastosegError
from blastoseg.synth import EmbryoConfig, render_blastocyst, render_embryo, write_synthetic_embryos

S = 200
CROP = EmbryoConfig(image_size=(S, S))
INC = EmbryoConfig(image_size=(S, S), mode="incubator")
SUB_STAGES = ("early", "full", "expanded", "hatching")


def _sha(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def test_cleavage_frames_are_byte_identical_to_before_the_blastocyst_stage() -> None:
    # hashes computed on main at 42cb7ae, before the blastocyst stage was added
    fr = render_embryo(4, seed=3, config=EmbryoConfig(image_size=(128, 128)))
    assert _sha(fr.image) == "ff30ecd92c8f559d74f1946bbdf29b8dcb8f71da43de2a7f057de13b67552f37"
    assert _sha(fr.instances.masks) == (
        "8a32f4e7b38093faa53deb9fb7c85eff5e74307a1ffeef65faac89342dea1421")
    assert fr.meta["embryo_circle"] == [58.0, 64.0, 47.32] and fr.meta["stage"] == "cleavage"
    cfg = EmbryoConfig(image_size=(160, 160), mode="incubator", appearance="wide")
    fr = render_embryo(6, seed=11, config=cfg)
    assert _sha(fr.image) == "f19b8c9045bfd7d60b6d8e38ede253779e2659149a67f84b96e812dd0d39e149"
    assert _sha(fr.instances.masks) == (
        "0aba94d3eee77f4c20e78d0dc5a7d8aff12ddf02df83925f7a83ae9e4ab09614")


@pytest.mark.parametrize("sub", SUB_STAGES)
def test_blastocyst_frame_shapes_and_ground_truth(sub: str) -> None:
    fr = render_blastocyst(seed=5, config=CROP, sub_stage=sub)
    assert fr.image.shape == (S, S) and fr.image.dtype == np.uint8
    assert len(fr.instances) == 0 and fr.instances.masks.shape == (0, S, S)
    m = fr.meta
    assert m["stage"] == "blastocyst" and m["blastocyst_stage"] == sub
    assert m["n_cells"] is None and m["count_applicable"] is False
    assert m["hatching"] == (sub == "hatching" and not m["collapsed"])
    cx, cy, r = m["embryo_circle"]
    assert 0 <= cx < S and 0 <= cy < S and r == pytest.approx(m["zona_outer_radius_px"])
    json.dumps(m)  # goes into annotations.json as it is
    comp = fr.components
    assert set(comp) == {"zona", "trophectoderm", "blastocoel", "inner_cell_mass"}
    assert all(c.shape == (S, S) and c.dtype == bool and c.any() for c in comp.values())
    yy, xx = np.mgrid[0:S, 0:S]
    rr = np.hypot(xx - cx, yy - cy)
    # the zona's outer face is the labelled circle (it is at most a few % elliptical)
    outer = rr[comp["zona"]].max()
    assert not comp["zona"][int(round(cy)), int(round(cx))]  # a ring, not a disc
    assert rr[comp["zona"]].min() >= m["zona_inner_radius_px"] * (1 - 0.07) - 1.0
    assert abs(outer - r) <= 0.07 * r + 1.0, (outer, r)
    # the cavity and the ICM lie inside the zona; the ICM sits in the cavity's disc
    assert rr[comp["blastocoel"]].max() < m["zona_inner_radius_px"]
    assert rr[comp["inner_cell_mass"]].max() < m["zona_inner_radius_px"]
    ix, iy = m["icm_center_xy"]
    assert comp["blastocoel"][int(round(iy)), int(round(ix))] or \
        comp["inner_cell_mass"][int(round(iy)), int(round(ix))]


def _rim_radius(image: np.ndarray, cx: float, cy: float, r: float) -> float:
    """Outermost radius where the angular mean of the image's gradient is still strong."""
    g = ndi.gaussian_gradient_magnitude(image.astype(float), 1.0)
    yy, xx = np.mgrid[0:image.shape[0], 0:image.shape[1]]
    rr = np.hypot(xx - cx, yy - cy)
    radii = np.arange(0.7 * r, 1.3 * r, 0.5)
    prof = np.array([g[np.abs(rr - k) < 0.5].mean() for k in radii])
    base = np.median(prof[radii > 1.15 * r])
    strong = prof > base + 0.3 * (prof.max() - base)
    return float(radii[np.nonzero(strong)[0].max()])


@pytest.mark.parametrize("seed,sub", [(1, "early"), (2, "full"), (3, "expanded"), (4, "expanded")])
def test_rendered_zona_rim_is_at_the_labelled_radius(seed: int, sub: str) -> None:
    cfg = EmbryoConfig(image_size=(S, S), off_centre=0.0, vignetting_prob=0.0,
                       well_edge_prob=0.0, text_prob=0.0)
    fr = render_blastocyst(seed=seed, config=cfg, sub_stage=sub)
    cx, cy, r = fr.meta["embryo_circle"]
    rim = _rim_radius(fr.image, cx, cy, r)
    assert abs(rim - r) <= 0.06 * r, (rim, r)


def test_blastocyst_determinism_per_seed() -> None:
    a = render_blastocyst(seed=7, config=INC)
    b = render_blastocyst(seed=7, config=INC)
    np.testing.assert_array_equal(a.image, b.image)
    assert a.meta == b.meta
    for k in a.components:
        np.testing.assert_array_equal(a.components[k], b.components[k])
    assert not np.array_equal(a.image, render_blastocyst(seed=8, config=INC).image)
    # the frame around it (mode, well) is the one the cleavage embryo of that seed gets
    cl = render_embryo(3, seed=7, config=INC)
    assert a.meta["container_circle"] == cl.meta["container_circle"]
    assert a.meta["embryo_circle"][:2] == cl.meta["embryo_circle"][:2]


def test_blastocyst_in_incubator_mode_sits_in_its_well() -> None:
    for seed in range(5):
        fr = render_blastocyst(seed=seed, config=INC)
        m = fr.meta
        assert m["mode"] == "incubator"
        cx, cy, r = m["embryo_circle"]
        assert 0 <= cx < S and 0 <= cy < S
        assert 0.25 * S - 1e-6 <= 2 * r <= 0.7 * S + 1e-6
        if m["container"] == "well":
            wx, wy, wr = m["container_circle"]
            assert np.hypot(cx - wx, cy - wy) + r <= wr + 1.0


def test_expanded_zona_is_thinner_and_hatching_breaks_through() -> None:
    early = [render_blastocyst(seed=s, config=CROP, sub_stage="early").meta for s in range(3)]
    exp = [render_blastocyst(seed=s, config=CROP, sub_stage="expanded").meta for s in range(3)]

    def zona_um(m: dict) -> float:
        return (m["zona_outer_radius_px"] - m["zona_inner_radius_px"]) * m["pixel_size_um"]

    assert max(zona_um(m) for m in exp) < min(zona_um(m) for m in early)
    assert min(m["blastocoel_radius_px"] / m["trophectoderm_radius_px"] for m in exp) > max(
        m["blastocoel_radius_px"] / m["trophectoderm_radius_px"] for m in early)
    cfg = EmbryoConfig(image_size=(S, S), blastocyst_collapse_prob=0.0)
    fr = render_blastocyst(seed=2, config=cfg, sub_stage="hatching")
    cx, cy, r = fr.meta["embryo_circle"]
    yy, xx = np.mgrid[0:S, 0:S]
    te_out = fr.components["trophectoderm"] & (np.hypot(xx - cx, yy - cy) > r + 2)
    assert fr.meta["hatching"] and te_out.sum() > 20  # TE outside the zona


def test_collapsed_trophectoderm_lets_go_of_the_zona() -> None:
    cfg = EmbryoConfig(image_size=(S, S), blastocyst_collapse_prob=1.0)
    m = render_blastocyst(seed=3, config=cfg, sub_stage="expanded").meta
    assert m["collapsed"] and m["trophectoderm_radius_px"] < 0.86 * m["zona_inner_radius_px"]


def test_invalid_stage() -> None:
    with pytest.raises(BlastosegError, match="stage"):
        EmbryoConfig(stage="morula")
    with pytest.raises(BlastosegError, match="stage"):
        render_blastocyst(seed=0, config=CROP, sub_stage="morula")


def test_written_blastocysts_have_no_instances_and_train(tmp_path) -> None:
    from blastoseg.io.dataset import read_dataset
    from blastoseg.train.amodal_data import make_target

    cfg = EmbryoConfig(image_size=(96, 96), stage="mixed")
    out = write_synthetic_embryos(tmp_path / "m", n=8, seed=0, config=cfg)
    doc = json.loads(out.read_text())
    stages = [e["stage"] for e in doc["images"]]
    assert set(stages) == {"cleavage", "blastocyst"}
    with_anns = {a["image_id"] for a in doc["annotations"]}
    for e in doc["images"]:
        assert len(e["embryo_circle"]) == 3
        assert (e["id"] in with_anns) == (e["stage"] == "cleavage")
    ds = read_dataset(tmp_path / "m")
    k = stages.index("blastocyst")
    inst = ds.instances(k)
    assert len(inst) == 0 and ds.extra(k)["n_cells"] is None
    target = make_target(inst, 0)  # a frame without cells is a valid training target
    assert target["boxes"].shape == (0, 4) and target["masks"].shape[0] == 0
    # the cleavage frames of a mixed set are those of a cleavage set with the same seed
    plain = write_synthetic_embryos(tmp_path / "c", n=8, seed=0,
                                    config=EmbryoConfig(image_size=(96, 96)))
    seeds = [e["seed"] for e in json.loads(plain.read_text())["images"]]
    assert [e["seed"] for e in doc["images"]] == seeds
    with pytest.raises(BlastosegError, match="time-lapse"):
        write_synthetic_embryos(tmp_path / "t", n=1, seed=0, timelapse=3,
                                config=EmbryoConfig(image_size=(96, 96), stage="blastocyst"))


def test_cli_stage_flag(tmp_path) -> None:
    from blastoseg.cli import main

    out = tmp_path / "b"
    assert main(["synth", "embryos", "--n", "2", "--seed", "1", "--out", str(out), "--size",
                 "128", "--mode", "incubator", "--stage", "blastocyst"]) == 0
    data = json.loads((out / "annotations.json").read_text())
    assert data["info"]["config"]["stage"] == "blastocyst"
    assert "blastocysts" in data["info"]["description"]
    assert data["annotations"] == []
    assert all(e["stage"] == "blastocyst" and e["mode"] == "incubator" for e in data["images"])
    default = tmp_path / "d"
    assert main(["synth", "embryos", "--n", "1", "--seed", "1", "--out", str(default),
                 "--size", "96"]) == 0
    data = json.loads((default / "annotations.json").read_text())
    assert data["info"]["config"]["stage"] == "cleavage" and data["annotations"]
    with pytest.raises(SystemExit):
        main(["synth", "embryos", "--n", "1", "--out", str(tmp_path / "x"), "--stage", "morula"])
