"""Augmentation of (image, instances) pairs that keeps every mask aligned with the image.

Every transform is a small callable ``t(image, instances, rng) -> (image, instances)`` taking
a float32 (H, W) image (~0..1), a :class:`~blastoseg.instances.FrameInstances` and a numpy
``Generator``; :class:`Compose` chains them. :func:`build_augment` turns an
:class:`AugmentConfig` into the default chain (geometry, then intensity, blur, noise), so
any model kind can reuse it::

    aug = build_augment(AugmentConfig(strength=0.5))   # mild, e.g. for fine-tuning
    image, inst = aug(image, inst, np.random.default_rng(seed))

Geometric transforms resample amodal and visible masks with the image (bilinear, > 0.5), drop
instances that end up (almost) entirely outside the frame and recompute the occlusion map
(pixels in two or more amodal masks) from the transformed amodal masks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np
from scipy import ndimage

from blastoseg.instances import FrameInstances, flat_masks

__all__ = [
    "AugmentConfig",
    "Compose",
    "RandomAffine",
    "RandomBlur",
    "RandomFlip",
    "RandomIntensity",
    "RandomNoise",
    "RandomRot90",
    "Transform",
    "affine_pair",
    "build_augment",
    "finish_instances",
]

Transform = Callable[[np.ndarray, FrameInstances, np.random.Generator],
                     tuple[np.ndarray, FrameInstances]]


@dataclass
class AugmentConfig:
    """Augmentation strengths; ``strength`` scales every magnitude (0 = off, 1 = default,
    2 = heavy). Probabilities are not scaled.

    Attributes
    ----------
    strength
        Multiplier of all magnitudes below; 0 turns augmentation off entirely.
    flip, rot90
        Random horizontal/vertical flips, random multiples of 90 degrees (lossless).
    rotate_deg, p_rotate
        Arbitrary rotation, uniform in +-rotate_deg (x strength), with probability p_rotate.
    scale, p_scale
        Zoom factor log-uniform in [scale[0], scale[1]] (range widened/narrowed by strength in
        log space), with probability p_scale; zooming out pads, zooming in crops.
    translate, p_translate
        Shift up to +-translate x image size (x strength), with probability p_translate.
    brightness, contrast, gamma, p_intensity
        Additive offset up to +-brightness, contrast factor and gamma log-uniform in
        [1/(1+x), 1+x] (x strength), applied together with probability p_intensity.
    blur_sigma, p_blur
        Gaussian blur, sigma uniform in [0, blur_sigma x strength] px.
    noise_sd, p_noise
        Gaussian noise sd uniform in [0, noise_sd x strength].
    poisson_photons, p_poisson
        Poisson (shot) noise with a photon count per unit intensity log-uniform in the range;
        the count is divided by strength (stronger = noisier).
    min_keep_fraction
        An instance is dropped when less than this fraction of its (zoom-corrected) area stays
        inside the frame.
    """

    strength: float = 1.0
    flip: bool = True
    rot90: bool = True
    rotate_deg: float = 180.0
    p_rotate: float = 0.5
    scale: tuple[float, float] = (0.7, 1.4)
    p_scale: float = 0.5
    translate: float = 0.08
    p_translate: float = 0.5
    brightness: float = 0.1
    contrast: float = 0.25
    gamma: float = 0.3
    p_intensity: float = 0.8
    blur_sigma: float = 1.5
    p_blur: float = 0.3
    noise_sd: float = 0.04
    p_noise: float = 0.5
    poisson_photons: tuple[float, float] = (30.0, 300.0)
    p_poisson: float = 0.3
    min_keep_fraction: float = 0.1

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> AugmentConfig:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        for k in ("scale", "poisson_photons"):
            if k in known:
                known[k] = tuple(known[k])
        return cls(**known)


# --- helpers ----------------------------------------------------------------------------
def finish_instances(inst: FrameInstances, masks: np.ndarray, vis: np.ndarray | None,
                     expected_area: np.ndarray | None, min_keep_fraction: float
                     ) -> FrameInstances:
    """New instances from transformed masks: drop those (almost) outside, recompute occlusion."""
    masks = np.asarray(masks, dtype=bool)
    if vis is not None:
        vis = np.asarray(vis, dtype=bool) & masks
    out = replace(inst, masks=masks, visible_masks=vis, occlusion=None, meta=dict(inst.meta))
    if len(masks):
        area = flat_masks(masks).sum(axis=1)
        keep = area > 0
        if expected_area is not None:
            keep &= area >= min_keep_fraction * np.asarray(expected_area, dtype=np.float64)
        if not keep.all():
            out = out.select(keep)
    return replace(out, occlusion=(out.masks.sum(axis=0) >= 2).astype(np.float32))


def affine_pair(image: np.ndarray, inst: FrameInstances, matrix: np.ndarray,
                offset: np.ndarray, zoom: float = 1.0, min_keep_fraction: float = 0.1,
                fill: float | None = None) -> tuple[np.ndarray, FrameInstances]:
    """Apply ``input_index = matrix @ output_index + offset`` to the image and its masks.

    The image is resampled bilinearly (outside filled with ``fill``, default the median of
    the image border, so no mirrored cells appear); masks bilinearly and thresholded at 0.5,
    outside empty. ``zoom`` (output px per input px) sets the expected area used to drop
    instances that left the frame.
    """
    shape = image.shape
    if fill is None:
        fill = float(np.median(np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])))
    img = ndimage.affine_transform(image, matrix, offset=offset, output_shape=shape, order=1,
                                   mode="constant", cval=fill).astype(np.float32)

    def warp(stack: np.ndarray) -> np.ndarray:
        out = np.zeros((len(stack), *shape), dtype=bool)
        for k, m in enumerate(stack):
            if m.any():
                out[k] = ndimage.affine_transform(m.astype(np.float32), matrix, offset=offset,
                                                  output_shape=shape, order=1, mode="constant",
                                                  cval=0.0) > 0.5
        return out

    masks = warp(inst.masks)
    vis = None if inst.visible_masks is None else warp(inst.visible_masks)
    expected = inst.areas * zoom * zoom
    return img, finish_instances(inst, masks, vis, expected, min_keep_fraction)


def _geometric_exact(image: np.ndarray, inst: FrameInstances, fn: Callable[[np.ndarray], np.ndarray]
                     ) -> tuple[np.ndarray, FrameInstances]:
    img = np.ascontiguousarray(fn(image))
    masks = np.ascontiguousarray(fn(np.moveaxis(inst.masks, 0, -1)))
    masks = np.moveaxis(masks, -1, 0)
    vis = None
    if inst.visible_masks is not None:
        vis = np.moveaxis(np.ascontiguousarray(fn(np.moveaxis(inst.visible_masks, 0, -1))), -1, 0)
    return img, finish_instances(inst, masks, vis, None, 0.0)


# --- transforms -------------------------------------------------------------------------
@dataclass
class Compose:
    """Apply transforms in order."""

    transforms: Sequence[Transform]

    def __call__(self, image: np.ndarray, inst: FrameInstances, rng: np.random.Generator
                 ) -> tuple[np.ndarray, FrameInstances]:
        for t in self.transforms:
            image, inst = t(image, inst, rng)
        return image, inst


@dataclass
class RandomFlip:
    """Horizontal and vertical flips, each with probability ``p``."""

    p: float = 0.5

    def __call__(self, image, inst, rng):
        if rng.random() < self.p:
            image, inst = _geometric_exact(image, inst, lambda a: a[:, ::-1])
        if rng.random() < self.p:
            image, inst = _geometric_exact(image, inst, lambda a: a[::-1])
        return image, inst


@dataclass
class RandomRot90:
    """Rotation by a uniform multiple of 90 degrees (non-square frames swap H and W)."""

    def __call__(self, image, inst, rng):
        k = int(rng.integers(4))
        if k:
            image, inst = _geometric_exact(image, inst, lambda a: np.rot90(a, k, axes=(0, 1)))
        return image, inst


@dataclass
class RandomAffine:
    """Rotation, zoom and translation about the image centre, in one resampling."""

    rotate_deg: float = 180.0
    p_rotate: float = 0.5
    scale: tuple[float, float] = (0.7, 1.4)
    p_scale: float = 0.5
    translate: float = 0.08
    p_translate: float = 0.5
    min_keep_fraction: float = 0.1

    def __call__(self, image, inst, rng):
        angle = (np.deg2rad(rng.uniform(-self.rotate_deg, self.rotate_deg))
                 if self.rotate_deg > 0 and rng.random() < self.p_rotate else 0.0)
        lo, hi = self.scale
        zoom = (float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
                if hi > lo and rng.random() < self.p_scale else 1.0)
        h, w = image.shape
        shift = (rng.uniform(-self.translate, self.translate, 2) * (h, w)
                 if self.translate > 0 and rng.random() < self.p_translate else np.zeros(2))
        if angle == 0.0 and zoom == 1.0 and not shift.any():
            return image, inst
        # output index o -> input index: c_in + R^-1 (o - c_out - shift) / zoom
        c = np.array([(h - 1) / 2.0, (w - 1) / 2.0])
        cos, sin = np.cos(angle), np.sin(angle)
        rinv = np.array([[cos, sin], [-sin, cos]]) / zoom
        offset = c - rinv @ (c + shift)
        return affine_pair(image, inst, rinv, offset, zoom, self.min_keep_fraction)


@dataclass
class RandomIntensity:
    """Brightness offset, contrast about the mean, gamma (all together, probability ``p``)."""

    brightness: float = 0.1
    contrast: float = 0.25
    gamma: float = 0.3
    p: float = 0.8

    def __call__(self, image, inst, rng):
        if rng.random() >= self.p:
            return image, inst
        a = image.astype(np.float32)
        if self.gamma > 0:
            g = np.exp(rng.uniform(-np.log1p(self.gamma), np.log1p(self.gamma)))
            a = np.clip(a, 0.0, None) ** np.float32(g)
        if self.contrast > 0:
            c = np.exp(rng.uniform(-np.log1p(self.contrast), np.log1p(self.contrast)))
            m = float(a.mean())
            a = (a - m) * np.float32(c) + np.float32(m)
        if self.brightness > 0:
            a = a + np.float32(rng.uniform(-self.brightness, self.brightness))
        return np.clip(a, 0.0, 1.0).astype(np.float32), inst


@dataclass
class RandomBlur:
    """Gaussian blur with sigma uniform in [0, sigma] px, probability ``p``."""

    sigma: float = 1.5
    p: float = 0.3

    def __call__(self, image, inst, rng):
        if self.sigma > 0 and rng.random() < self.p:
            image = ndimage.gaussian_filter(image, rng.uniform(0.0, self.sigma),
                                            mode="nearest").astype(np.float32)
        return image, inst


@dataclass
class RandomNoise:
    """Poisson (shot) noise and additive Gaussian noise."""

    sd: float = 0.04
    p: float = 0.5
    photons: tuple[float, float] = (30.0, 300.0)
    p_poisson: float = 0.3

    def __call__(self, image, inst, rng):
        a = image.astype(np.float32)
        lo, hi = self.photons
        if hi > 0 and rng.random() < self.p_poisson:
            n = float(np.exp(rng.uniform(np.log(max(lo, 1e-3)), np.log(max(hi, lo, 1e-3)))))
            a = (rng.poisson(np.clip(a, 0.0, None) * n) / n).astype(np.float32)
        if self.sd > 0 and rng.random() < self.p:
            a = a + rng.normal(0.0, rng.uniform(0.0, self.sd), a.shape).astype(np.float32)
        return np.clip(a, 0.0, 1.0).astype(np.float32), inst


def build_augment(config: AugmentConfig | None) -> Compose:
    """The default chain for a config: flips, rot90, affine, intensity, blur, noise.

    ``None`` or ``strength == 0`` gives an empty chain (identity).
    """
    if config is None or config.strength <= 0:
        return Compose([])
    s = float(config.strength)
    lo, hi = config.scale
    ts: list[Transform] = []
    if config.flip:
        ts.append(RandomFlip())
    if config.rot90:
        ts.append(RandomRot90())
    ts.append(RandomAffine(
        rotate_deg=min(180.0, config.rotate_deg * s), p_rotate=config.p_rotate,
        scale=(float(np.exp(np.log(lo) * s)), float(np.exp(np.log(hi) * s))),
        p_scale=config.p_scale, translate=config.translate * s, p_translate=config.p_translate,
        min_keep_fraction=config.min_keep_fraction))
    ts.append(RandomIntensity(config.brightness * s, config.contrast * s, config.gamma * s,
                              config.p_intensity))
    ts.append(RandomBlur(config.blur_sigma * s, config.p_blur))
    lo_p, hi_p = config.poisson_photons
    ts.append(RandomNoise(config.noise_sd * s, config.p_noise, (lo_p / s, hi_p / s),
                          config.p_poisson))
    return Compose(ts)
