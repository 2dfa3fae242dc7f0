"""Training task ``brightfield``: the SparseSEU-Net of S4 (Prytula 2023, sections 4.5.1-4.5.4)
- whole-cell, overlapping instances from brightfield images.

``blastoseg train brightfield --data DIR[,DIR...] --val DIR --out JOB --config FILE``.

Config (``--config`` JSON)::

    {"model": {SparseSEUNetConfig fields: "seunet": {...}, "num_instances": 100,
               "multi_level": false, "overlap_conditioned": false, "iou_head": false, ...},
     "probability": {"variant": "combined_border_overlap", ...params},
     "loss": {"lam": 0.8, "w_cls": 2.0, "w_dice": 2.0, "w_bce": 2.0, "w_iou": 1.0,
              "focal_alpha": 0.25, "focal_gamma": 2.0,
              "heads": {"weight": 1.0, "overlap": "focal_reweighted", "weights": {},
                        "gamma": 2.0, "alpha": null}},
     "data": {"crop": 256, "repeats": 4, "scale": 1.0, "max_instances": null,
              "border_width": 2},
     "init_seunet": null,  (or a trained overlap model: the SE-U-Net part starts from it)
     "postprocess": {"score_threshold": 0.3, "mask_threshold": 0.5, "mask_nms_iou": 0.8},
     "hyper": {"batch_size": 4, "grad_accum": 1, "lr": 1e-3, ...}}

Loss = the sparse instance losses (:func:`blastoseg.train.sparse_losses.sparse_losses`:
Hungarian matching with lambda = ``lam``, dice + BCE on matched masks, focal class loss on
all predictions, optional IoU-objectness) + ``heads.weight`` x the SE-U-Net head loss on the
auxiliary heads (:func:`blastoseg.train.overlap_losses.seunet_loss`, eq. 4.2 with the
overlap head's loss of eq. 4.5 and P of section 4.3; a head whose target a sample lacks,
e.g. nuclei without nucleus files, is skipped for that sample).

Gradient accumulation for small memory (issue item 2) is the engine's: hyper ``grad_accum``
= micro-batches per optimizer step (``"batch_size": 2, "grad_accum": 4`` trains with an
effective batch of 8 in the memory of 2).

``data.max_instances`` caps the cells per crop (default and maximum: the model's
``num_instances``); ``data.scale`` resizes every image first (the model's working
resolution; stored in the card's ``preprocess.scale`` and applied again by the predictor;
a fine-tuning job inherits the base card's scale).

Validation: COCO mask AP (:func:`blastoseg.metrics.evaluate_masks`) of the amodal masks on
the validation images at the model's resolution (whole images, reflect-padded, predictions
cropped back), every prediction scoring >= 0.05 (AP ranks them); ``mAP`` chooses the best
checkpoint. ``AP50``, ``AP75`` and ``n_pred`` (predictions per image) are logged too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from blastoseg.instances import FrameInstances
from blastoseg.metrics import evaluate_masks
from blastoseg.predict.brightfield_post import decode_instances
from blastoseg.predict.cards import brightfield_postprocess
from blastoseg.train.brightfield_data import BrightfieldDataset, collate_brightfield
from blastoseg.train.job import TrainJob
from blastoseg.train.overlap_losses import seunet_loss
from blastoseg.train.overlap_task import split_batch
from blastoseg.train.task import TrainingError, TrainTask, register_task

KIND = "brightfield"

__all__ = ["DEFAULT_HEAD_LOSS", "DEFAULT_SPARSE_LOSS", "BrightfieldTask",
           "init_seunet_from_overlap", "model_config"]


def init_seunet_from_overlap(model: nn.Module, name_or_path: str) -> int:
    """Start the SparseSEU-Net's SE-U-Net (encoder and the decoders of the heads it has) from
    a trained ``overlap`` model (config key ``init_seunet``): the instance decoder then
    trains on features that already separate cells, borders and overlaps, which is how the
    thesis builds SparseSEU-Net on the SE-U-Net. Returns the number of tensors loaded;
    the two architectures must agree (same base width, depth and decoder width)."""
    from blastoseg.weights import resolve_model
    from blastoseg.weights.safetensors_io import load_weights

    entry = resolve_model(name_or_path, kind="overlap")
    state = load_weights(entry.weights_path)
    own = model.seunet.state_dict()
    take = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    missing_encoder = [k for k in own if k.startswith("encoder") and k not in take]
    if missing_encoder or not take:
        raise TrainingError(
            f"init_seunet: {entry.name} does not fit this model's SE-U-Net (encoder tensors "
            f"that differ: {len(missing_encoder)}); use the same base_width, depth and "
            f"decoder_width as that model")
    model.seunet.load_state_dict({k: v.to(own[k].dtype) for k, v in take.items()}, strict=False)
    return len(take)

DEFAULT_PROBABILITY = {"variant": "none"}
#: keyword arguments of sparse_losses (the contract's defaults)
DEFAULT_SPARSE_LOSS = {"lam": 0.8, "w_cls": 2.0, "w_dice": 2.0, "w_bce": 2.0, "w_iou": 1.0,
                       "focal_alpha": 0.25, "focal_gamma": 2.0}
#: the auxiliary SE-U-Net heads' loss (as the overlap task's) and its weight in the total
DEFAULT_HEAD_LOSS = {"weight": 1.0, "overlap": "focal_reweighted", "weights": {},
                     "gamma": 2.0, "alpha": None}
#: predictions kept for validation AP (AP ranks them; a high threshold would cut the curve)
VAL_SCORE_THRESHOLD = 0.05


def model_config(config: Mapping[str, Any]):
    """The job's SparseSEUNetConfig (``config["model"]``); a bad one is a TrainingError."""
    from blastoseg.errors import BlastosegError
    from blastoseg.models.sparse_seunet import SparseSEUNetConfig

    try:
        return SparseSEUNetConfig.from_dict(dict(config.get("model", {}) or {}))
    except (BlastosegError, TypeError, ValueError) as exc:
        raise TrainingError(f"config 'model': {exc}") from None


class BrightfieldTask(TrainTask):
    kind = KIND
    main_metric = "mAP"
    higher_is_better = True

    def build_model(self, config: dict) -> nn.Module:
        from blastoseg.models.sparse_seunet import SparseSEUNet

        model = SparseSEUNet(model_config(config))
        if config.get("init_seunet") and not self.job.base:
            init_seunet_from_overlap(model, str(config["init_seunet"]))
        return model

    # options ---------------------------------------------------------------------------
    def _data_options(self, job: TrainJob) -> dict:
        data = dict(job.config.get("data", {}) or {})
        cfg = model_config(job.config)
        pre = dict(job.config.get("preprocess", {}) or {})  # a fine-tuning job's base card
        n = int(cfg.num_instances)
        cap = data.get("max_instances")
        cap = n if cap is None else int(cap)
        if not 1 <= cap <= n:
            raise TrainingError(f"data 'max_instances' must be in 1..{n} (the model's "
                                f"num_instances), got {cap}")
        multiple = cfg.seunet_config.multiple
        crop = int(data.get("crop", 256))
        if crop < multiple or crop % multiple:
            raise TrainingError(f"data 'crop' must be a positive multiple of {multiple} (the "
                                f"SE-U-Net's 2**depth), got {crop}")
        scale = float(data.get("scale", pre.get("scale", 1.0)))
        if not 0.05 <= scale <= 4.0:
            raise TrainingError(f"data 'scale' must be in [0.05, 4], got {scale}")
        return {"crop": crop, "repeats": int(data.get("repeats", 4)),
                "border_width": int(data.get("border_width", 2)), "scale": scale,
                "max_instances": cap, "multiple": multiple}

    def _sparse_options(self) -> dict:
        loss = dict(self.job.config.get("loss", {}) or {})
        unknown = sorted(set(loss) - set(DEFAULT_SPARSE_LOSS) - {"heads"})
        if unknown:
            raise TrainingError(f"unknown config 'loss' key(s) {unknown}; known: "
                                f"{sorted(DEFAULT_SPARSE_LOSS)} and 'heads'")
        return {k: float(loss.get(k, v)) for k, v in DEFAULT_SPARSE_LOSS.items()}

    def _head_options(self) -> dict:
        heads = {**DEFAULT_HEAD_LOSS,
                 **dict((self.job.config.get("loss", {}) or {}).get("heads", {}) or {})}
        return {"weight": float(heads["weight"]), "overlap_loss": str(heads["overlap"]),
                "weights": dict(heads.get("weights") or {}), "gamma": float(heads["gamma"]),
                "alpha": None if heads["alpha"] is None else float(heads["alpha"])}

    def _postprocess(self) -> dict:
        return brightfield_postprocess(self.job.config.get("postprocess"))

    # data ------------------------------------------------------------------------------
    def make_datasets(self, job: TrainJob):
        cfg = model_config(job.config)
        heads = cfg.seunet_config.heads
        opts = self._data_options(job)
        prob = dict(job.config.get("probability", DEFAULT_PROBABILITY) or DEFAULT_PROBABILITY)
        train = BrightfieldDataset(
            job.train_paths(), heads, crop=opts["crop"], probability=prob, augment=True,
            repeats=opts["repeats"], multiple=opts["multiple"],
            border_width=opts["border_width"], seed=job.seed, scale=opts["scale"],
            max_instances=opts["max_instances"])
        if len(train) == 0:
            raise TrainingError("the training datasets hold no images")
        if train.num_classes > cfg.num_classes:
            raise TrainingError(
                f"the training data has category ids up to {train.num_classes} but the model "
                f"has num_classes={cfg.num_classes}; set config model 'num_classes'")
        val = None
        if job.val_paths():
            val = BrightfieldDataset(
                job.val_paths(), heads, crop=None, probability=prob, augment=False,
                multiple=opts["multiple"], border_width=opts["border_width"],
                scale=opts["scale"], max_images=int(job.hyper.get("val_frames", 60)))
        return train, val

    def collate(self, samples: list) -> Any:
        return collate_brightfield(samples)

    # loss ------------------------------------------------------------------------------
    def training_step(self, model: nn.Module, batch: Any) -> dict[str, torch.Tensor]:
        from blastoseg.train.sparse_losses import sparse_losses

        out = model(batch["image"])
        heads = tuple(out.heads)
        targets, present = split_batch(batch, heads)
        sparse = sparse_losses(out, batch["instances"], **self._sparse_options())
        opts = self._head_options()
        aux = seunet_loss(out.heads, targets, present, batch["prob"], opts["weights"],
                          overlap_loss=opts["overlap_loss"], gamma=opts["gamma"],
                          alpha=opts["alpha"])
        total = sparse["loss"] + opts["weight"] * aux["loss"]
        logged = {f"sparse_{k}": v.detach() for k, v in sparse.items()
                  if k != "loss" and torch.is_tensor(v)}
        logged.update({f"head_{k}": v.detach() for k, v in aux.items() if k != "loss"})
        logged["sparse"] = sparse["loss"].detach()
        logged["heads"] = aux["loss"].detach()
        return {"loss": total, **logged}

    # validation ------------------------------------------------------------------------
    def predict_val(self, model: nn.Module, val: BrightfieldDataset
                    ) -> tuple[list[FrameInstances], list[FrameInstances]]:
        """Ground truth and predictions of every validation image at the model's
        resolution."""
        post = self._postprocess()
        gt, pred = [], []
        for i in range(len(val.frames)):
            item = val[i]
            h, w = (int(v) for v in item["size"])
            out = model(item["image"][None].to(self.device))
            iou = getattr(out, "iou_logits", None)
            pred.append(decode_instances(
                out.class_logits[0], out.mask_logits[0, :, :h, :w],
                None if iou is None else iou[0], score_threshold=VAL_SCORE_THRESHOLD,
                mask_threshold=float(post["mask_threshold"]), mask_nms_iou=post["mask_nms_iou"],
                largest_component=bool(post.get("largest_component", False))))
            gt.append(FrameInstances(masks=item["masks"].numpy() > 0.5,
                                     class_ids=item["labels"].numpy() + 1))
        return gt, pred

    def validate(self, model: nn.Module, val) -> dict[str, float]:
        gt, pred = self.predict_val(model, val)
        result = evaluate_masks(gt, pred)
        metrics = {k: float(result[k] or 0.0) for k in ("mAP", "AP50", "AP75")}
        metrics["n_pred"] = float(np.mean([len(p) for p in pred])) if pred else 0.0
        return metrics

    # card ------------------------------------------------------------------------------
    def model_card(self, job: TrainJob, model: nn.Module, metrics: Mapping[str, float]) -> dict:
        return {
            "architecture": "SparseSEUNet (Prytula 2023, S4 sections 4.5.1-4.5.4)",
            "config": {
                "model": model.config.to_dict(),
                "preprocess": {"percentiles": [1.0, 99.8],
                               "scale": self._data_options(job)["scale"]},
                "postprocess": self._postprocess(),
                # windows of the training crop's size (see predict.brightfield: the
                # activation maps are learnt on frames of that size)
                "inference": {"max_side": self._data_options(job)["crop"],
                              "tile_overlap": self._data_options(job)["crop"] // 2},
                "probability": dict(job.config.get("probability", DEFAULT_PROBABILITY)
                                    or DEFAULT_PROBABILITY),
                "loss": {**DEFAULT_SPARSE_LOSS, **{k: v for k, v in
                                                   (job.config.get("loss") or {}).items()
                                                   if k != "heads"},
                         "heads": {**DEFAULT_HEAD_LOSS,
                                   **((job.config.get("loss") or {}).get("heads") or {})}},
            },
        }


register_task(KIND, BrightfieldTask)
