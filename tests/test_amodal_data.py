"""Augmentation (blastoseg.train.augment) and the amodal training dataset."""

import numpy as np
import pytest
import torch

from blastoseg.instances import FrameInstances
from blastoseg.synth import EmbryoConfig, write_synthetic_embryos
from blastoseg.train.amodal_data import AmodalDataset, collate_detection, make_target
from blastoseg.train.augment import (
    AugmentConfig,
    RandomAffine,
    RandomFlip,
    RandomRot90,
    build_augment,
)

S = 64


def _disk(cy, cx, r, shape=(S, S)):
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def _pair():
    """An image whose pixel values encode position, and two overlapping disks + one small."""
    yy, xx = np.mgrid[0:S, 0:S]
    image = ((yy * S + xx) / (S * S)).astype(np.float32)
    masks = np.stack([_disk(20, 20, 10), _disk(28, 28, 10), _disk(50, 45, 6)])
    inst = FrameInstances(masks=masks, visible_masks=masks.copy(), track_ids=[5, 6, 7],
                          occlusion=(masks.sum(0) >= 2).astype(np.float32))
    return image, inst


def _encoded_mean(image, mask):
    return float(image[mask].mean())


@pytest.mark.parametrize("transform", [RandomFlip(p=1.0), RandomRot90()])
def test_exact_geometry_moves_masks_with_image(transform):
    image, inst = _pair()
    before = [_encoded_mean(image, m) for m in inst.masks]
    for seed in range(4):
        img2, inst2 = transform(image, inst, np.random.default_rng(seed))
        assert inst2.masks.dtype == bool and len(inst2) == 3
        # the pixel values under each mask are the same ones as before (they moved together)
        after = [_encoded_mean(img2, m) for m in inst2.masks]
        assert np.allclose(before, after, atol=1e-6)
        assert np.array_equal(inst2.occlusion, (inst2.masks.sum(0) >= 2).astype(np.float32))
        assert list(inst2.track_ids) == [5, 6, 7]


def test_affine_keeps_alignment_and_binary():
    image, inst = _pair()
    t = RandomAffine(rotate_deg=40, p_rotate=1.0, scale=(0.8, 1.2), p_scale=1.0,
                     translate=0.03, p_translate=1.0)
    img2, inst2 = t(image, inst, np.random.default_rng(3))
    assert img2.dtype == np.float32 and img2.shape == image.shape
    assert inst2.masks.dtype == bool and inst2.visible_masks.dtype == bool
    assert not (inst2.visible_masks & ~inst2.masks).any()
    for m0, m1 in zip(inst.masks, inst2.masks, strict=True):
        # bilinear image values under the mask stay close to the original values there
        assert abs(_encoded_mean(image, m0) - _encoded_mean(img2, m1)) < 0.03
    assert np.array_equal(inst2.occlusion, (inst2.masks.sum(0) >= 2).astype(np.float32))


def test_out_of_frame_instances_are_dropped():
    image, inst = _pair()
    # shift everything by (+60, +60) px: every disk leaves the 64 px frame
    t = RandomAffine(rotate_deg=0, p_rotate=0, scale=(1, 1), p_scale=0,
                     translate=60 / S, p_translate=1.0)

    class Fixed:  # a generator whose uniform() returns the upper bound
        def random(self):
            return 0.0

        def uniform(self, lo, hi, size=None):
            return np.full(size, hi) if size is not None else hi

    img2, inst2 = t(image, inst, Fixed())
    assert len(inst2) == 0
    assert inst2.masks.shape == (0, S, S) and inst2.occlusion.shape == (S, S)
    assert not inst2.occlusion.any()
    # a 20 px shift keeps the first two and the occlusion moves with them; the third leaves
    t.translate = 20 / S
    _, inst3 = t(image, inst, Fixed())
    assert list(inst3.track_ids) == [5, 6]
    assert inst3.occlusion[40:52, 40:52].any() and not inst3.occlusion[:30].any()


def test_build_augment_strength_and_determinism():
    image, inst = _pair()
    off = build_augment(AugmentConfig(strength=0))
    img, out = off(image, inst, np.random.default_rng(0))
    assert img is image and out is inst
    heavy = build_augment(AugmentConfig(strength=1.5))
    a = heavy(image, inst, np.random.default_rng(7))
    b = heavy(image, inst, np.random.default_rng(7))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1].masks, b[1].masks)
    assert a[0].dtype == np.float32 and a[0].min() >= 0 and a[0].max() <= 1
    assert a[1].masks.dtype == bool
    cfg = AugmentConfig(strength=0.5, scale=(0.8, 1.25))
    assert AugmentConfig.from_dict(cfg.to_dict()) == cfg


def _check_item(item, size, with_visible=True):
    image, target = item
    assert image.shape == (1, size, size) and image.dtype == torch.float32
    n = len(target["labels"])
    assert target["boxes"].shape == (n, 4) and target["boxes"].dtype == torch.float32
    assert target["labels"].dtype == torch.int64 and bool((target["labels"] == 1).all())
    assert target["masks"].shape == (n, size, size) and target["masks"].dtype == torch.uint8
    assert target["occlusion"].shape == (size, size)
    assert target["occlusion"].dtype == torch.float32
    assert target["image_id"].dtype == torch.int64
    if with_visible:
        assert target["visible_masks"].shape == (n, size, size)
    if n:
        b = target["boxes"]
        assert bool(((b[:, 2] - b[:, 0]) >= 2).all() and ((b[:, 3] - b[:, 1]) >= 2).all())
        cover = target["masks"].sum(0) >= 2
        assert torch.equal(cover.float(), target["occlusion"])
    return n


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    write_synthetic_embryos(root, n=3, seed=0, config=EmbryoConfig(image_size=(128, 128)))
    return root


def test_dataset_from_folder(tiny_dataset):
    ds = AmodalDataset(tiny_dataset, working_size=96, augment=AugmentConfig(), seed=1)
    assert len(ds) == 3
    counts = [_check_item(ds[i], 96) for i in range(3)]
    assert sum(counts) > 0
    plain = AmodalDataset(tiny_dataset, working_size=96, use_localisation=False)
    img, tgt = plain[0]
    _check_item((img, tgt), 96)
    assert len(tgt["labels"]) == len(plain.datasets[0].annotations(0))


def test_dataset_synthetic_deterministic_and_epochs():
    cfg = EmbryoConfig(image_size=(96, 96))
    ds = AmodalDataset([], working_size=64, augment=AugmentConfig(strength=0.5),
                       synth_per_epoch=2, seed=3, synth_config=cfg, max_cells=4)
    assert len(ds) == 2
    a = ds[1]
    _check_item(a, 64)
    b = AmodalDataset(None, working_size=64, augment=AugmentConfig(strength=0.5),
                      synth_per_epoch=2, seed=3, synth_config=cfg, max_cells=4)[1]
    assert torch.equal(a[0], b[0]) and torch.equal(a[1]["masks"], b[1]["masks"])
    seeds0 = [ds.raw(i)[2]["seed"] for i in range(2)]
    ds.set_epoch(1)
    seeds1 = [ds.raw(i)[2]["seed"] for i in range(2)]
    assert not set(seeds0) & set(seeds1)
    assert all(1 <= ds.raw(i)[2]["n_cells"] <= 4 for i in range(2))


def test_empty_frame_and_collate():
    target = make_target(FrameInstances.empty((32, 32)), image_id=4)
    assert target["boxes"].shape == (0, 4) and target["masks"].shape == (0, 32, 32)
    assert target["labels"].shape == (0,) and target["occlusion"].shape == (32, 32)
    # a degenerate (1 px wide) instance is dropped
    m = np.zeros((2, 32, 32), bool)
    m[0, 5:20, 5:20] = True
    m[1, 3:20, 9] = True
    t2 = make_target(FrameInstances(masks=m), image_id=5)
    assert t2["boxes"].shape == (1, 4)
    assert torch.equal(t2["boxes"][0], torch.tensor([5.0, 5.0, 20.0, 20.0]))
    imgs, tgts = collate_detection([(torch.zeros(1, 32, 32), target),
                                    (torch.ones(1, 32, 32), t2)])
    assert len(imgs) == 2 and len(tgts) == 2 and tgts[1]["image_id"].item() == 5


def test_dataset_needs_frames():
    with pytest.raises(ValueError, match="no frames"):
        AmodalDataset([], synth_per_epoch=0)


def test_framing_jitter_frames_around_the_labelled_circle():
    from blastoseg.synth import EmbryoConfig, render_embryo

    cfg = EmbryoConfig(image_size=(200, 200), mode="incubator")
    ds = AmodalDataset(synth_per_epoch=3, working_size=64, synth_config=cfg, seed=4,
                       framing_jitter=0.08)
    for i in range(3):
        _, _, info = ds.framed(i)
        cx, cy, r = info["embryo_circle"]
        box = info["box"]
        assert box["source"] == "given"
        assert np.hypot(box["cx"] - cx, box["cy"] - cy) <= 0.08 * r + 1e-6
        assert 0.92 * r - 1e-6 <= box["radius"] <= 1.08 * r + 1e-6
    # the same frame gets another jitter in another epoch, the same one again in its own
    a = ds.framed(0)[2]["box"]
    ds.set_epoch(1)
    ds.set_epoch(0)
    assert ds.framed(0)[2]["box"] == a
    with pytest.raises(ValueError, match="framing_jitter"):
        AmodalDataset(synth_per_epoch=1, framing_jitter=0.7)
    # without jitter the localiser frames it, as at inference
    plain = AmodalDataset(synth_per_epoch=1, working_size=64, synth_config=cfg, seed=4)
    assert plain.framed(0)[2]["box"]["source"] != "given"
    assert render_embryo(2, seed=1, config=cfg).meta["embryo_circle"] is not None
