"""pix2pix phase -> brightfield translator (S4, thesis section 4.4.2): model, task, translator."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from blastoseg.models.pix2pix import Pix2Pix, Pix2PixConfig

#: small enough to train a few steps in about a second on a CPU
TINY = {"gen_width": 8, "gen_depth": 4, "disc_width": 8, "n_dropout": 2}


# --- the model ------------------------------------------------------------------------------

def test_shapes_and_config_round_trip():
    cfg = Pix2PixConfig(**TINY)
    assert Pix2PixConfig.from_dict(cfg.to_dict()) == cfg
    model = Pix2Pix(cfg)
    x = torch.randn(2, 1, 32, 48)
    with torch.no_grad():
        y = model(x)
    assert y.shape == (2, 2, 32, 48)
    assert float(y.abs().max()) <= 1.0
    assert model.discriminator(x, y).shape[:2] == (2, 1)
    # the defaults: 128 px crops fit, 70 x 70 PatchGAN
    default = Pix2Pix()
    assert default.config.multiple == 128
    with torch.no_grad():
        assert default(torch.zeros(1, 1, 128, 128)).shape == (1, 2, 128, 128)
    with pytest.raises(ValueError, match="multiples of 16"):
        model(torch.zeros(1, 1, 40, 40))
    with pytest.raises(ValueError):
        Pix2PixConfig.from_dict({"nope": 1})
    with pytest.raises(ValueError):
        Pix2PixConfig(norm="group")


def test_patchgan_receptive_field_is_70():
    # batch norm in eval mode is a per-channel affine map, so the gradient of one output
    # logit is non-zero exactly on its receptive field (instance norm would couple all pixels)
    cfg = Pix2PixConfig(**{**TINY, "norm": "batch"})
    disc = Pix2Pix(cfg).discriminator.eval()
    assert disc.receptive_field() == 70
    torch.manual_seed(0)
    cond = torch.randn(1, 1, 128, 128, requires_grad=True)
    out_img = torch.randn(1, 2, 128, 128, requires_grad=True)
    logits = disc(cond, out_img)
    cy, cx = logits.shape[-2] // 2, logits.shape[-1] // 2
    logits[0, 0, cy, cx].backward()
    grad = cond.grad[0, 0].abs() + out_img.grad[0].abs().sum(0)
    rows = np.flatnonzero(grad.sum(1).numpy() > 0)
    cols = np.flatnonzero(grad.sum(0).numpy() > 0)
    assert rows[-1] - rows[0] + 1 == 70
    assert cols[-1] - cols[0] + 1 == 70
    assert len(rows) == 70 and len(cols) == 70  # contiguous


def test_dropout_at_inference_only_when_stochastic():
    torch.manual_seed(0)
    gen = Pix2Pix(Pix2PixConfig(**TINY)).generator.eval()
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(gen(x), gen(x))  # eval, not stochastic: deterministic
        gen.stochastic = True
        a, b = gen(x), gen(x)
        assert not torch.allclose(a, b)  # dropout kept on: varied outputs
        s1 = gen(x, dropout_generator=torch.Generator().manual_seed(3))
        s2 = gen(x, dropout_generator=torch.Generator().manual_seed(3))
        s3 = gen(x, dropout_generator=torch.Generator().manual_seed(4))
        assert torch.equal(s1, s2) and not torch.allclose(s1, s3)  # seeded


def test_generator_and_discriminator_gradients_are_separate():
    torch.manual_seed(0)
    model = Pix2Pix(Pix2PixConfig(**TINY)).train()
    x = torch.randn(2, 1, 32, 32)
    y = torch.rand(2, 2, 32, 32) * 2 - 1
    g_params = list(model.generator.parameters())
    d_params = list(model.discriminator.parameters())

    def grads(loss, params):
        gs = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        return [torch.zeros_like(p) if g is None else g for g, p in zip(gs, params, strict=True)]

    torch.manual_seed(1)
    out = model.losses(x, y, l1_weight=100.0)
    gen_loss = out.gen_adv + 100.0 * out.l1
    # generator objective -> no gradient in the discriminator, and vice versa
    assert all(float(g.abs().max()) == 0 for g in grads(gen_loss, d_params))
    assert all(float(g.abs().max()) == 0 for g in grads(out.disc, g_params))
    # the adversarial term does reach the generator, and the D term the discriminator
    assert any(float(g.abs().max()) > 0 for g in grads(out.gen_adv, g_params))
    assert any(float(g.abs().max()) > 0 for g in grads(out.disc, d_params))
    # so the one backward of the summed loss gives each network its own gradient
    total_g = grads(out.loss, g_params)
    for a, b in zip(total_g, grads(gen_loss, g_params), strict=True):
        torch.testing.assert_close(a, b)
    for a, b in zip(grads(out.loss, d_params), grads(out.disc, d_params), strict=True):
        torch.testing.assert_close(a, b)


# --- a tiny dataset in the synthetic-brightfield layout --------------------------------------

def _blob_scene(rng, size):
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    phase = np.zeros((size, size), np.float32)
    masks = []
    for _ in range(int(rng.integers(2, 4))):
        cy, cx = rng.uniform(8, size - 8, 2)
        a, b = rng.uniform(5, 11, 2)
        r2 = ((yy - cy) / a) ** 2 + ((xx - cx) / b) ** 2
        masks.append(r2 < 1)
        phase += np.clip(1 - r2, 0, None) ** 0.5 * rng.uniform(0.5, 1.2)
    from scipy import ndimage as ndi

    lap = ndi.laplace(ndi.gaussian_filter(phase, 1.0))
    bg = rng.uniform(30000, 45000)
    planes = np.stack([bg * np.exp(-s * 0.8 * lap) for s in (-1, 1)])
    planes = planes + rng.normal(0, 50, planes.shape)
    return phase, np.clip(planes, 0, 65535).astype(np.uint16), np.array(masks)


def make_pairs_dataset(folder, n=4, size=48, seed=0, source="render"):
    """A hand-made dataset in the contract's layout (two entries per scene)."""
    import tifffile

    from blastoseg.instances import FrameInstances
    from blastoseg.io.dataset import Sample, write_dataset

    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    samples = []
    for s in range(1, n + 1):
        phase, planes, masks = _blob_scene(rng, size)
        stem = f"images/scene_{s:06d}"
        tifffile.imwrite(folder / f"{stem}_phase.tif", phase)
        inst = FrameInstances(masks=masks)
        for p in (0, 1):
            samples.append(Sample(image=planes[p], instances=inst, file_name=f"{stem}_bf{p}.png",
                                  focal_plane=p,
                                  extra={"scene_id": s, "phase_file": f"{stem}_phase.tif",
                                         "source": source,
                                         "generator": "blastoseg.synth.brightfield"}))
    write_dataset(folder, samples, categories={1: "cell"})
    return folder


def test_dataset_pairs_and_normalisation(tmp_path):
    from blastoseg.train.pix2pix_task import Pix2PixPairs, find_scenes

    data = make_pairs_dataset(tmp_path / "d", n=2, size=40)
    make_pairs_dataset(tmp_path / "cp", n=2, size=40, source="copy_paste")
    scenes, skipped = find_scenes([data, tmp_path / "cp"])
    assert len(scenes) == 2 and skipped["not_render"] == 4  # copy-paste scenes are ignored
    pre = {"phase_scale": 1.0, "bf_span": 0.5}
    train = Pix2PixPairs(scenes, pre, crop=32, repeats=3, seed=0)
    assert len(train) == 6
    item = train[0]
    assert item["phase"].shape == (1, 32, 32) and item["target"].shape == (2, 32, 32)
    assert float(item["target"].abs().max()) <= 1.0
    val = Pix2PixPairs(scenes, pre, crop=None, multiple=16)
    item = val[1]
    assert item["phase"].shape == (1, 48, 48) and float(item["valid"].sum()) == 40 * 40
    # background (outside the cells) maps to ~0: planes were divided by their background
    x, y = val.pair(0)
    cells = scenes[0].dataset.instances(scenes[0].plane_indices[0]).masks.any(0)
    assert abs(float(np.median(y[:, ~cells]))) < 0.02


def _synthetic(folder, n, seed, copy_paste=0.0, translator=None):
    """Renderer scenes (the real writer), 64 px."""
    from blastoseg.synth.brightfield.config import BrightfieldConfig
    from blastoseg.synth.brightfield.writer import write_synthetic_brightfield

    write_synthetic_brightfield(folder, n, seed=seed, config=BrightfieldConfig().for_size(64),
                                copy_paste=copy_paste, translator=translator)
    return folder


def test_task_trains_and_translator_loads(tmp_path, monkeypatch):
    monkeypatch.setenv("BLASTOSEG_HOME", str(tmp_path / "home"))
    import blastoseg.train.pix2pix_task  # noqa: F401  (registers the kind)
    from blastoseg.synth.brightfield.translate import PhaseTranslator
    from blastoseg.train import EXIT_OK, create_job, run_job

    # copy-paste scenes in the training data are skipped (no true brightfield)
    data = _synthetic(tmp_path / "data", 6, seed=0, copy_paste=0.34)
    val = _synthetic(tmp_path / "val", 2, seed=1)
    config = {"pix2pix": TINY, "data": {"crop": 32, "repeats": 2}}
    job = create_job("pix2pix", data, tmp_path / "job", val_data=val, config=config,
                     hyper={"max_steps": 12, "batch_size": 2, "lr": 2e-3, "log_every": 1,
                            "val_every": 6, "weight_decay": 0.0},
                     device="cpu", name="tiny-pix2pix")
    assert run_job(job, stdout=False, handle_signals=False) == EXIT_OK
    events = [json.loads(line) for line in (job / "events.jsonl").read_text().splitlines()]
    start = [e for e in events if e["event"] == "start"][0]
    assert start["n_train"] == 4 * 2  # 4 rendered scenes x 2 repeats
    vals = [e["metrics"]["val_l1"] for e in events if e["event"] == "validation"]
    steps = [e["losses"]["l1"] for e in events if e["event"] == "step"]
    assert vals and np.isfinite(vals).all() and np.isfinite(steps).all()
    assert np.mean(steps[-4:]) < np.mean(steps[:4])  # the L1 term falls
    done = [e for e in events if e["event"] == "done"][0]
    card = json.loads((job / "output" / "tiny-pix2pix.json").read_text())
    assert card["kind"] == "pix2pix" and card["config"]["pix2pix"]["gen_depth"] == 4
    assert card["config"]["preprocess"]["phase_scale"] > 0  # estimated from the data
    assert done["model"] == "tiny-pix2pix"

    tr = PhaseTranslator("tiny-pix2pix", device="cpu")
    phase = np.zeros((37, 53), np.float32)
    phase[10:25, 12:30] = 0.8
    a = tr(phase, np.random.default_rng(0))
    assert a.shape == (2, 37, 53) and a.dtype == np.float32 and np.isfinite(a).all()
    lo, hi = tr.background
    assert 0.5 * lo < float(np.median(a)) < 1.5 * hi  # grey levels like the renderer's planes
    b = tr(phase, np.random.default_rng(0))
    c = tr(phase, np.random.default_rng(1))
    np.testing.assert_array_equal(a, b)  # seeded by the rng
    assert not np.array_equal(a, c)
    # larger than a tile: overlapping tiles, any size; relative output with background=1
    tiled = PhaseTranslator("tiny-pix2pix", device="cpu", tile=32, overlap=8, background=1.0,
                            stochastic=False)
    calls = []
    out = tiled(np.pad(phase, ((0, 30), (0, 20))), np.random.default_rng(0),
                progress=lambda d, t: calls.append((d, t)))
    assert out.shape == (2, 67, 73) and np.isfinite(out).all()
    assert calls[-1][0] == calls[-1][1] > 1
    assert tiled(phase[:20], np.random.default_rng(0)).shape == (2, 20, 53)  # one side > tile
    from blastoseg.errors import InvalidImageError

    with pytest.raises(InvalidImageError):
        tr(np.zeros((2, 8, 8), np.float32), np.random.default_rng(0))
    with pytest.raises(InvalidImageError):
        tr(np.full((8, 8), np.nan, np.float32), np.random.default_rng(0))
    # plugged into the writer: copy-pasted phase scenes become brightfield planes
    out = _synthetic(tmp_path / "cp", 2, seed=4, copy_paste=1.0, translator=tr)
    from blastoseg.io.dataset import read_dataset

    ds = read_dataset(out)
    assert {e["source"] for e in ds.images} == {"copy_paste+pix2pix"}
    assert ds.load_image(0).dtype == np.uint16


def test_no_rendered_scenes_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("BLASTOSEG_HOME", str(tmp_path / "home"))
    import blastoseg.train.pix2pix_task  # noqa: F401
    from blastoseg.train import EXIT_FAILED, create_job, run_job

    data = make_pairs_dataset(tmp_path / "cp", n=1, size=32, source="copy_paste")
    job = create_job("pix2pix", data, tmp_path / "job", config={"pix2pix": TINY,
                     "data": {"crop": 32}}, hyper={"max_steps": 1}, device="cpu")
    assert run_job(job, stdout=False, handle_signals=False) == EXIT_FAILED
    events = [json.loads(line) for line in (job / "events.jsonl").read_text().splitlines()]
    assert "no rendered brightfield scenes" in events[-1]["message"]
