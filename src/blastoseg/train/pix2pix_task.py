"""Training task ``pix2pix``: the phase -> brightfield translator of S4 (thesis section 4.4.2).

``blastoseg train pix2pix --data DIR --val DIR --out JOB --config configs/pix2pix_default.json``

Data: synthetic brightfield datasets (``blastoseg synth brightfield``) hold one image entry per
focal plane; entries are grouped into scenes by ``(dataset, scene_id)``. Only scenes whose
``source`` is ``"render"`` are used (copy-pasted scenes have no true brightfield image). A
scene gives one pair: input = its ``phase_file`` (float32 .tif), target = the planes of
``focal_plane`` 0 and 1. Intensities follow :mod:`blastoseg.synth.brightfield.translate`:
input ``phase / phase_scale``; target ``clip((plane / background - 1) / bf_span, -1, 1)`` with
``background`` the median of the plane outside the (dilated) instance masks, so the scale the
planes were quantised at does not matter; the translator maps outputs back with
``1 + bf_span * t`` (background 1.0).

Config (``--config`` JSON)::

    {"pix2pix": {Pix2PixConfig fields},
     "preprocess": {"phase_scale": null, "bf_span": null},   # null: estimated from the data
     "data": {"crop": 128, "repeats": 4, "flip": true, "rot90": true},
     "hyper": {..., "l1_weight": 100.0}}

Loss: pix2pix eq. 4, ``L_cGAN(G, D) + lambda * L_L1(G)`` with lambda = ``hyper["l1_weight"]``
(100), BCE-with-logits on the PatchGAN's outputs. The engine has one optimizer and one backward
per step, so the model (:class:`~blastoseg.models.pix2pix.Pix2Pix`) holds both networks and
:meth:`~blastoseg.models.pix2pix.Pix2Pix.losses` keeps their gradients apart: the generator's
adversarial term runs the discriminator with detached parameters
(``torch.func.functional_call``), and the discriminator's term sees ``fake.detach()``; so the
summed loss gives each network exactly the gradient of its own objective (tested in
tests/test_pix2pix.py). Interpretation: D and G are updated simultaneously from the same D
(pix2pix alternates D and G steps); the engine's AdamW uses its default betas (pix2pix:
Adam, lr 2e-4, beta1 0.5).

Validation: the mean L1 between the deterministic generator output (dropout off) and the
target, in target units ([-1, 1]) on whole validation scenes (``val_l1``, lower is better), and
in background units (``val_l1_intensity`` = ``val_l1 * bf_span``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from blastoseg.errors import BlastosegError
from blastoseg.io.dataset import Dataset, read_dataset
from blastoseg.io.images import read_image
from blastoseg.models.pix2pix import Pix2Pix, Pix2PixConfig
from blastoseg.synth.brightfield.translate import (
    DEFAULT_PREPROCESS,
    background_level,
    estimate_preprocess,
    pad_reflect,
    phase_to_input,
    planes_to_target,
)
from blastoseg.train.job import TrainJob
from blastoseg.train.task import TrainingError, TrainTask, register_task

__all__ = ["KIND", "Pix2PixPairs", "Pix2PixTask", "Scene", "find_scenes"]

KIND = "pix2pix"
#: random crops; flips and 90-degree rotations are valid because the renderer's optics are
#: isotropic (transport of intensity: a Laplacian of the phase, Gaussian defocus blur)
DEFAULT_DATA = {"crop": 128, "repeats": 4, "flip": True, "rot90": True}
DEFAULT_L1_WEIGHT = 100.0  # lambda of pix2pix eq. 4
#: scenes used to estimate phase_scale / bf_span when the config leaves them open
ESTIMATE_SCENES = 16


@dataclass
class Scene:
    """One rendered scene: its phase file and the two focal-plane image entries."""

    dataset: Dataset
    scene_id: Any
    phase_path: Path
    plane_indices: tuple[int, int]  # dataset indices of focal planes 0 and 1


def find_scenes(paths: Sequence[str | Path]) -> tuple[list[Scene], dict[str, int]]:
    """Renderer scenes of the dataset folders, and counts of what was skipped and why."""
    scenes: list[Scene] = []
    skipped = {"not_render": 0, "no_scene_id": 0, "no_phase_file": 0, "missing_plane": 0}
    for path in paths:
        ds = read_dataset(path)
        groups: dict[Any, dict[int, int]] = {}
        phase: dict[Any, str] = {}
        for i, entry in enumerate(ds.images):
            if entry.get("source") != "render":
                skipped["not_render"] += 1
                continue
            sid = entry.get("scene_id")
            if sid is None:
                skipped["no_scene_id"] += 1
                continue
            if not entry.get("phase_file"):
                skipped["no_phase_file"] += 1
                continue
            plane = entry.get("focal_plane")
            if plane in (0, 1):
                groups.setdefault(sid, {})[int(plane)] = i
                phase.setdefault(sid, entry["phase_file"])
        for sid, planes in groups.items():
            if 0 not in planes or 1 not in planes:
                skipped["missing_plane"] += 1
                continue
            scenes.append(Scene(ds, sid, ds.root / phase[sid], (planes[0], planes[1])))
    return scenes, skipped


def _grey(image: np.ndarray, where: str) -> np.ndarray:
    """A scene's plane as 2D float32 (io.frames.grey_frame), its errors naming the file."""
    from blastoseg.errors import InvalidImageError
    from blastoseg.io.frames import grey_frame

    try:
        return grey_frame(image, min_side=1)
    except InvalidImageError as exc:
        raise TrainingError(f"{where}: {exc}") from None


class Pix2PixPairs(TorchDataset):
    """(phase input, brightfield target) pairs of renderer scenes.

    Parameters
    ----------
    scenes
        From :func:`find_scenes`.
    preprocess
        ``phase_scale`` / ``bf_span`` (see :mod:`blastoseg.synth.brightfield.translate`).
    crop
        Random square crop side (training); None: whole scenes, padded to ``multiple``.
    repeats
        Items per scene and epoch (each a different random crop).
    flip, rot90
        Random horizontal/vertical flips; random 90-degree rotations.
    multiple
        Whole scenes are reflect-padded at the bottom/right to a multiple of this; ``"valid"``
        in each item marks the unpadded pixels.
    """

    def __init__(self, scenes: list[Scene], preprocess: Mapping[str, Any], *,
                 crop: int | None = 128, repeats: int = 1, flip: bool = True,
                 rot90: bool = False, multiple: int = 1, seed: int = 0) -> None:
        self.scenes = scenes
        self.preprocess = dict(preprocess)
        self.crop = crop
        self.repeats = max(int(repeats), 1)
        self.flip, self.rot90 = bool(flip), bool(rot90)
        self.multiple = max(int(multiple), 1)
        self.seed, self.epoch = int(seed), 0
        self._background: dict[int, tuple[float, float]] = {}

    def __len__(self) -> int:
        return len(self.scenes) * self.repeats

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch: new crops and flips."""
        self.epoch = int(epoch)

    def raw(self, k: int) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
        """Scene ``k``'s phase (H, W), planes (2, H, W) as stored, and background levels."""
        scene = self.scenes[k]
        ds = scene.dataset
        try:
            phase = _grey(read_image(scene.phase_path), str(scene.phase_path))
            planes = np.stack([_grey(ds.load_image(i), ds.images[i]["file_name"])
                               for i in scene.plane_indices])
        except BlastosegError as exc:
            raise TrainingError(f"scene {scene.scene_id} of {ds.root}: {exc}") from None
        if phase.shape != planes.shape[1:]:
            raise TrainingError(
                f"scene {scene.scene_id} of {ds.root}: the phase image is {phase.shape} but "
                f"the focal planes are {planes.shape[1:]}")
        if k not in self._background:
            cells = ds.instances(scene.plane_indices[0]).masks.any(axis=0)
            self._background[k] = (background_level(planes[0], cells),
                                   background_level(planes[1], cells))
        return phase, planes, self._background[k]

    def pair(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Normalised (1, H, W) input and (2, H, W) target of scene ``k``."""
        phase, planes, bg = self.raw(k)
        x = phase_to_input(phase, self.preprocess)[None]
        y = planes_to_target(planes, np.asarray(bg), self.preprocess)
        return x, y

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        x, y = self.pair(index % len(self.scenes))
        return paired_item(x, y, crop=self.crop, flip=self.flip, vertical_flip=self.flip,
                           rot90=self.rot90, multiple=self.multiple,
                           rng=np.random.default_rng([self.seed, self.epoch, int(index)]))


def paired_item(x: np.ndarray, y: np.ndarray, *, crop: int | None, flip: bool,
                vertical_flip: bool, rot90: bool, multiple: int,
                rng: np.random.Generator) -> dict[str, torch.Tensor]:
    """A pix2pix item from a (C, H, W) input and target: with ``crop`` one random square
    (reflect-padded up to it when smaller), random flips and 90-degree turns; without, the
    whole pair padded at the bottom/right to a multiple of ``multiple``. ``"valid"`` marks
    the unpadded pixels."""
    h, w = x.shape[-2:]
    if crop is not None:
        s = int(crop)
        if h < s or w < s:  # small scene: reflect-pad up to the crop
            x, y = pad_reflect(x, max(h, s), max(w, s)), pad_reflect(y, max(h, s), max(w, s))
            h, w = x.shape[-2:]
        y0 = int(rng.integers(0, h - s + 1))
        x0 = int(rng.integers(0, w - s + 1))
        x, y = x[:, y0:y0 + s, x0:x0 + s], y[:, y0:y0 + s, x0:x0 + s]
        if flip and rng.random() < 0.5:
            x, y = x[:, :, ::-1], y[:, :, ::-1]
        if vertical_flip and rng.random() < 0.5:
            x, y = x[:, ::-1], y[:, ::-1]
        if rot90:
            k = int(rng.integers(0, 4))
            x, y = np.rot90(x, k, axes=(1, 2)), np.rot90(y, k, axes=(1, 2))
        valid = np.ones((1, s, s), np.float32)
    else:
        m = multiple
        th, tw = -(-h // m) * m, -(-w // m) * m
        valid = np.zeros((1, th, tw), np.float32)
        valid[:, :h, :w] = 1.0
        x, y = pad_reflect(x, th, tw), pad_reflect(y, th, tw)
    return {"phase": torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),
            "target": torch.from_numpy(np.ascontiguousarray(y, dtype=np.float32)),
            "valid": torch.from_numpy(valid)}


def pix2pix_config(config: Mapping[str, Any]) -> Pix2PixConfig:
    try:
        return Pix2PixConfig.from_dict(dict(config.get("pix2pix", {})))
    except (TypeError, ValueError) as exc:
        raise TrainingError(f"bad 'pix2pix' config: {exc}") from None


class Pix2PixTask(TrainTask):
    kind = KIND
    main_metric = "val_l1"
    higher_is_better = False

    preprocess: dict[str, Any] | None = None

    def build_model(self, config: dict) -> nn.Module:
        return Pix2Pix(pix2pix_config(config))

    def _data_options(self, job: TrainJob) -> dict[str, Any]:
        data = {**DEFAULT_DATA, **dict(job.config.get("data", {}))}
        cfg = pix2pix_config(job.config)
        crop = int(data["crop"])
        if crop < cfg.multiple or crop % cfg.multiple:
            raise TrainingError(
                f"config data.crop = {crop} must be a positive multiple of {cfg.multiple} "
                f"(2 ** pix2pix.gen_depth = 2 ** {cfg.gen_depth})")
        return {"crop": crop, "repeats": int(data["repeats"]), "flip": bool(data["flip"]),
                "rot90": bool(data["rot90"]), "multiple": cfg.multiple}

    def _preprocess(self, job: TrainJob, scenes: list[Scene]) -> dict[str, Any]:
        """Explicit config values, else the base model's, else estimated from the data."""
        pre = {**DEFAULT_PREPROCESS, **dict(job.config.get("preprocess", {}))}
        if job.base and any(pre[k] is None for k in ("phase_scale", "bf_span")):
            from blastoseg.weights.registry import resolve_model

            base = job.base
            if base.endswith(".safetensors") and job.resolve_path(base).is_file():
                base = str(job.resolve_path(base))
            try:
                base_pre = resolve_model(base, kind=KIND).card.config.get("preprocess", {})
            except BlastosegError:
                base_pre = {}
            pre = {k: (base_pre.get(k) if v is None else v) for k, v in pre.items()}
        if any(pre[k] is None for k in ("phase_scale", "bf_span")):
            probe = Pix2PixPairs(scenes[:ESTIMATE_SCENES], {}, crop=None)
            phases, ratios = [], []
            for k in range(len(probe.scenes)):
                phase, planes, bg = probe.raw(k)
                phases.append(phase)
                ratios.append(planes / np.asarray(bg, np.float32)[:, None, None])
            est = estimate_preprocess(phases, ratios)
            pre = {k: (est.get(k) if v is None else v) for k, v in pre.items()}
        return pre

    def make_datasets(self, job: TrainJob):
        opts = self._data_options(job)
        scenes, skipped = find_scenes(job.train_paths())
        if not scenes:
            reasons = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in skipped.items() if v)
            raise TrainingError(
                "the training data holds no rendered brightfield scenes (image entries with "
                "source 'render', a scene_id, a phase_file and focal planes 0 and 1)"
                + (f"; skipped entries: {reasons}" if reasons else "")
                + ". Make some with `blastoseg synth brightfield --out DIR`")
        self.preprocess = self._preprocess(job, scenes)
        train = Pix2PixPairs(scenes, self.preprocess, crop=opts["crop"],
                             repeats=opts["repeats"], flip=opts["flip"], rot90=opts["rot90"],
                             seed=job.seed)
        val = None
        if job.val_paths():
            val_scenes, _ = find_scenes(job.val_paths())
            limit = int(job.hyper.get("val_frames", 32))
            val = Pix2PixPairs(val_scenes[:limit], self.preprocess, crop=None,
                               multiple=opts["multiple"]) if val_scenes else None
        return train, val

    def training_step(self, model: nn.Module, batch: Any) -> dict[str, torch.Tensor]:
        weight = self.job.hp("l1_weight")
        out = model.losses(batch["phase"], batch["target"],
                           DEFAULT_L1_WEIGHT if weight is None else float(weight))
        return {"loss": out.loss, "l1": out.l1.detach(), "gen_adv": out.gen_adv.detach(),
                "disc": out.disc.detach(), "d_real": out.d_real, "d_fake": out.d_fake}

    def validate(self, model: nn.Module, val) -> dict[str, float]:
        loader = DataLoader(val, batch_size=1, shuffle=False)
        generator = model.generator
        stochastic, generator.stochastic = generator.stochastic, False
        total, count = 0.0, 0.0
        try:
            for batch in loader:
                batch = self.move_to_device(batch, self.device)
                fake = generator(batch["phase"]).float()
                valid = batch["valid"]
                err = (fake - batch["target"]).abs() * valid
                total += float(err.sum())
                count += float(valid.sum()) * fake.shape[1]
        finally:
            generator.stochastic = stochastic
        l1 = total / max(count, 1.0)
        span = float((self.preprocess or {}).get("bf_span") or 1.0)
        return {"val_l1": l1, "val_l1_intensity": l1 * span}

    def model_card(self, job: TrainJob, model: nn.Module, metrics: Mapping[str, float]) -> dict:
        weight = job.hp("l1_weight")
        return {
            "architecture": "Pix2Pix (Isola et al. 2017: U-Net generator + 70x70 PatchGAN; "
                            "Prytula 2023 section 4.4.2)",
            "config": {
                "pix2pix": model.config.to_dict(),
                "preprocess": dict(self.preprocess or DEFAULT_PREPROCESS),
                "data": {**DEFAULT_DATA, **dict(job.config.get("data", {}))},
                "loss": {"l1_weight": DEFAULT_L1_WEIGHT if weight is None else float(weight),
                         "gan": "bce_with_logits"},
            },
        }


register_task(KIND, Pix2PixTask)
