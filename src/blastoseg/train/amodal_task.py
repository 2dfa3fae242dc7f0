"""Training task ``amodal``: the S1 amodal blastomere detector (Jang et al., section 4).

``blastoseg train amodal --data DIR[,DIR...] --out JOB [--base MODEL] [--config FILE]``.
The VQ-VAE shape prior comes either from a base amodal model (fine-tuning) or from a trained
``shape_prior`` model named by the config key ``shape_prior``; it is frozen (section 4.2)
and saved inside the detector's weights, so a shipped amodal model is self-contained.

Config (``--config`` JSON): ``{"model": {AmodalConfig fields}, "shape_prior": NAME_OR_PATH,
"hyper": {...}}``; task hyper-parameters beyond the engine's: ``aug_strength`` (1.0),
``synth_per_epoch`` (0: only the given datasets), ``val_frames`` (100),
``use_localisation`` (True), ``framing_jitter`` (0: frame training images with the localiser;
positive: around their labelled ``embryo_circle``, jittered, see :class:`AmodalDataset`),
``train_only`` (``""``: every part; ``"layer_branch"``: only the layer-count branch on a frozen
detector, e.g. to add the branch to a shipped model without changing its detections).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from blastoseg.instances import FrameInstances
from blastoseg.io.atomic import atomic_write_text
from blastoseg.io.dataset import read_dataset
from blastoseg.metrics import evaluate_amodal
from blastoseg.models.amodal_config import AmodalConfig
from blastoseg.models.amodal_rcnn import AmodalMaskRCNN
from blastoseg.models.configs import VQVAEConfig
from blastoseg.models.vqvae import VQVAE
from blastoseg.predict.framing import DEFAULT_MARGIN
from blastoseg.train.amodal_data import AmodalDataset, collate_detection
from blastoseg.train.augment import AugmentConfig
from blastoseg.train.job import TrainJob
from blastoseg.train.task import TrainingError, TrainTask, register_task
from blastoseg.weights import load_into_model, resolve_model

KIND = "amodal"


def model_config(config: Mapping[str, Any]) -> AmodalConfig:
    return AmodalConfig.from_dict(dict(config.get("model", {})))


#: the shape prior a from-scratch amodal training uses when its config names none
DEFAULT_SHAPE_PRIOR = "shape-prior-default"


def load_shape_prior(name_or_path: str) -> VQVAE:
    """A trained VQ-VAE shape prior from the registry (or a .safetensors path), frozen."""
    entry = resolve_model(name_or_path, kind="shape_prior")
    cfg = entry.card.config.get("vqvae", entry.card.config)
    vq = VQVAE(VQVAEConfig.from_dict(cfg))
    load_into_model(vq, entry.weights_path, card=entry.card.to_dict(), expected_kind="shape_prior")
    return vq.freeze()


def outputs_to_instances(output: Mapping[str, torch.Tensor], mask_threshold: float = 0.5
                         ) -> FrameInstances:
    """One image's detector output (at the model's input size) as FrameInstances."""
    masks = output["masks"][:, 0] >= mask_threshold
    occ = output.get("occlusion")
    return FrameInstances(
        masks=masks.cpu().numpy(),
        scores=output["scores"].float().cpu().numpy(),
        class_ids=output["labels"].cpu().numpy(),
        occlusion=None if occ is None else occ[0].float().cpu().numpy(),
    )


def targets_to_instances(target: Mapping[str, torch.Tensor]) -> FrameInstances:
    return FrameInstances(masks=target["masks"].bool().cpu().numpy(),
                          class_ids=target["labels"].cpu().numpy())


def layer_map_scores(layers: torch.Tensor, masks: torch.Tensor) -> tuple[float, float]:
    """How well one frame's expected-layer map (H, W) fits its true amodal masks (N, H, W):
    the mean absolute layer error over the pixels inside a cell, and whether the layer
    count read over the true cells (sum of layers over their union / their mean area, the
    layer rule's estimate with every cell found) rounds to the true number (1.0 or 0.0)."""
    m = masks.bool().to(layers.device)
    if m.shape[0] == 0:
        return 0.0, 1.0
    true = m.sum(0).float()
    inside = true >= 1
    mae = float((layers.float() - true)[inside].abs().mean())
    estimate = float(layers.float()[inside].clamp_min(1.0).sum() / m.flatten(1).sum(1).float().mean())
    return mae, float(round(estimate) == m.shape[0])


class AmodalTask(TrainTask):
    kind = KIND
    main_metric = "mAP"
    higher_is_better = True

    def build_model(self, config: dict) -> nn.Module:
        cfg = model_config(config)
        vq = None
        prior = config.get("shape_prior")
        if not prior and cfg.mask_head != "fcn" and not self.job.base:
            # training from scratch: the VQ-VAE mask head needs a trained shape prior; the
            # bundled one is what amodal-default was trained with
            prior = DEFAULT_SHAPE_PRIOR
            self.start_notes = (*self.start_notes,
                                f"no shape_prior in the config: the VQ-VAE mask head uses the "
                                f"bundled {DEFAULT_SHAPE_PRIOR!r}")
        if prior:
            vq = load_shape_prior(prior)
            cfg.vqvae = vq.config
        model = AmodalMaskRCNN(cfg, vqvae=vq)
        if self._layer_branch_only():
            if model.layer_branch is None:
                raise TrainingError("train_only 'layer_branch' needs a layer branch: set "
                                    "model.layer_classes (e.g. 6) in the config")
            for name, p in model.named_parameters():
                p.requires_grad_(name.startswith("layer_branch."))
        return model

    def _layer_branch_only(self) -> bool:
        mode = str(self.job.hyper.get("train_only", "") or "")
        if mode not in ("", "layer_branch"):
            raise TrainingError(f"hyper train_only must be '' or 'layer_branch'; got {mode!r}")
        return mode == "layer_branch"

    def load_base(self, model: nn.Module, entry) -> None:
        """Strict load, except that a base without a layer branch may start one (the
        branch keeps its fresh initialisation); every other key must match."""
        from blastoseg.weights.safetensors_io import load_weights

        state = load_weights(entry.weights_path)
        expected = model.state_dict()
        missing = [k for k in expected if k not in state]
        unexpected = [k for k in state if k not in expected]
        if (missing and not unexpected
                and all(k.startswith("layer_branch.") for k in missing)):
            load_into_model(model, entry.weights_path, card=entry.card.to_dict(),
                            expected_kind=KIND, strict=False)
            self.start_notes = (*self.start_notes,
                                f"the base {entry.name!r} has no layer branch: it starts "
                                f"from scratch ({len(missing)} tensors)")
            return
        super().load_base(model, entry)

    def make_datasets(self, job: TrainJob):
        cfg = model_config(job.config)
        use_loc = bool(job.hyper.get("use_localisation", True))
        train = AmodalDataset(
            job.train_paths(), working_size=cfg.working_size,
            augment=AugmentConfig(strength=float(job.hyper.get("aug_strength", 1.0))),
            synth_per_epoch=int(job.hyper.get("synth_per_epoch", 0)), seed=job.seed,
            use_localisation=use_loc,
            framing_jitter=float(job.hyper.get("framing_jitter", 0.0)),
        )
        if len(train) == 0:
            raise TrainingError("the training data hold no frames")
        val = None
        if job.val_paths():
            val = AmodalDataset(job.val_paths(), working_size=cfg.working_size, augment=None,
                                seed=job.seed, use_localisation=use_loc)
            n_val = int(job.hyper.get("val_frames", 100))
            if len(val) > n_val:
                val = Subset(val, list(range(n_val)))
        return train, val

    def collate(self, samples: list) -> Any:
        return collate_detection(samples)

    def training_step(self, model: nn.Module, batch: Any) -> dict[str, torch.Tensor]:
        images, targets = batch
        if self._layer_branch_only():
            inner = getattr(model, "module", model)  # DDP wraps the model
            losses = inner.layer_branch_losses(images, targets)
        else:
            losses = model(images, targets)  # already weighted (section 4.3)
        return {"loss": sum(losses.values()), **{k: v.detach() for k, v in losses.items()}}

    def validate(self, model: nn.Module, val) -> dict[str, float]:
        loader = DataLoader(val, batch_size=int(self.job.hp("batch_size")), shuffle=False,
                            collate_fn=self.collate)
        gt, pred, layer_scores = [], [], []
        for images, targets in loader:
            outputs = model([im.to(self.device) for im in images])
            pred += [outputs_to_instances(o) for o in outputs]
            gt += [targets_to_instances(t) for t in targets]
            layer_scores += [layer_map_scores(o["layers"][0], t["masks"])
                             for o, t in zip(outputs, targets, strict=True) if "layers" in o]
        result = evaluate_amodal(gt, pred)
        keys = ("mAP", "AP50", "AP75", "count_exact", "count_mae")
        metrics = {k: float(result[k]) if result.get(k) is not None else 0.0 for k in keys}
        if layer_scores:
            metrics["layer_mae"] = sum(s[0] for s in layer_scores) / len(layer_scores)
            metrics["layer_count_exact"] = sum(s[1] for s in layer_scores) / len(layer_scores)
        return metrics

    def model_card(self, job: TrainJob, model: nn.Module, metrics: Mapping[str, float]) -> dict:
        return {
            "architecture": "AmodalMaskRCNN (Jang et al. 2023, S1)",
            "config": {
                "model": model.config.to_dict(),
                # the predictor frames frames exactly as training did
                "framing": {"use_localisation": bool(job.hyper.get("use_localisation", True)),
                            "margin": DEFAULT_MARGIN},
            },
        }

    def finalise_card(self, job: TrainJob, weights_path, card_path) -> dict | None:
        """Calibrate the counting post-processing (score threshold, mask-NMS IoU) of the new
        weights on the job's validation data and store it in the card, so that counts do not
        silently fall after a fine-tune (a card without ``postprocess`` counts with the
        generic defaults). Without validation data, the base model's calibrated values are
        carried over (also with fewer than ``calib_min_frames`` (20) validation frames, too few
        to choose a threshold on). Hyper ``calibrate`` (True) turns it off; ``calib_frames``
        (150) caps the frames used."""
        from blastoseg.predict.calibrate import calibrate_counts, write_postprocess

        self._carry_layer_rule(job, card_path)
        if not bool(job.hyper.get("calibrate", True)):
            return None
        val = job.val_paths()
        n_val = sum(len(read_dataset(v)) for v in val) if val else 0
        # a threshold chosen on a handful of frames is noise: below calib_min_frames (20)
        # validation frames, the base model's calibration is kept instead
        if n_val >= int(job.hyper.get("calib_min_frames", 20)):
            result = calibrate_counts(str(weights_path), val[0], device=str(self.device),
                                      max_frames=int(job.hyper.get("calib_frames", 150)))
            write_postprocess(card_path, result)
            return {k: result[k] for k in ("score_threshold", "mask_nms_iou", "count_exact",
                                           "count_mae", "n_frames", "data")}
        if job.base:
            post = _base_card(job).config.get("postprocess")
            if post:
                card = json.loads(Path(card_path).read_text())
                card.setdefault("config", {})["postprocess"] = post
                atomic_write_text(Path(card_path), json.dumps(card, indent=2) + "\n")
                return {"score_threshold": post.get("score_threshold"),
                        "mask_nms_iou": post.get("mask_nms_iou"), "from_base": job.base}
        return None

    def _carry_layer_rule(self, job: TrainJob, card_path) -> None:
        """A fine-tune keeps its base's layer rule (the counting correction; calibration
        then chooses the threshold and NMS for counting with it) and whether the base
        switched it on (``use_layer_rule``: the shipped model's is off). A rule that reads
        the layer branch's map is kept only when the new model has a layer branch."""
        if not job.base:
            return
        post = _base_card(job).config.get("postprocess", {})
        rule = post.get("layer_rule")
        card = json.loads(Path(card_path).read_text())
        if not rule or (rule.get("source") == "layers"
                        and not card.get("config", {}).get("model", {}).get("layer_classes")):
            return
        new_post = card.setdefault("config", {}).setdefault("postprocess", {})
        new_post["layer_rule"] = rule
        new_post["use_layer_rule"] = bool(post.get("use_layer_rule", True))
        atomic_write_text(Path(card_path), json.dumps(card, indent=2) + "\n")


def _base_card(job: TrainJob):
    """The card of the model a job fine-tunes (an exported job carries its base inside)."""
    base = job.base
    if base.endswith(".safetensors") and job.resolve_path(base).is_file():
        base = str(job.resolve_path(base))
    return resolve_model(base, kind=KIND).card

register_task(KIND, AmodalTask)
