"""What a finished training job writes about its model: the model card (architecture, config,
data, metrics, hyper-parameters, the task's own fields) and a free registry name."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from blastoseg.weights.registry import ModelCard, ModelEntry, list_models

if TYPE_CHECKING:  # the trainer imports this module
    from blastoseg.train.trainer import Trainer

__all__ = ["trained_model_card", "unique_model_name"]


def unique_model_name(name: str, sha: str) -> tuple[str, ModelEntry | None]:
    """A free registry name based on ``name``; an existing user model with the same bytes is
    returned instead of registering a duplicate."""
    existing = {e.name: e for e in list_models()}
    candidate, n = name, 1
    while candidate in existing:
        entry = existing[candidate]
        if entry.source == "user" and entry.card.sha256 == sha:
            return candidate, entry
        n += 1
        candidate = f"{name}-{n}"
    return candidate, None


def trained_model_card(trainer: Trainer, weights_path: Path, sha: str,
                       use_best: bool) -> ModelCard:
    """The card of the weights a finished run wrote to ``weights_path`` (``use_best``: the
    best validation step's weights rather than the last)."""
    job, t = trainer.job, trainer
    extra = dict(t.task.model_card(job, t.model, t.last_metrics) or {})
    training_data = [{"split": "train", "paths": list(job.train_data), "count": t.n_train}]
    if job.val_data:
        training_data.append({"split": "val", "paths": list(job.val_data), "count": t.n_val})
    card = ModelCard(
        name=weights_path.stem, kind=job.kind, version=str(job.version),
        architecture=str(extra.pop("architecture", type(t.model).__name__)),
        config=dict(extra.pop("config", job.config)),
        base_model=job.base, training_data=training_data,
        metrics=dict(t.last_metrics), sha256=sha,
        training={
            "hyper": {k: job.hp(k) for k in sorted({*job.hyper})} | {
                "lr": job.hp("lr"), "batch_size": t.bs, "grad_accum": t.accum,
                "schedule": job.hp("schedule")},
            "steps": t.step, "epochs": t.epoch, "seed": job.seed,
            "device": str(t.device), "elapsed_s": round(t.elapsed(), 1),
            "weights_from_step": t.best_step if use_best else t.step,
            "best_metric": t.best_metric,
            **({"metrics_before": dict(t.metrics_before)} if t.metrics_before else {}),
            **extra.pop("training", {}),
        },
        description=job.description,
    )
    for key, value in extra.items():  # further task-specific card fields
        if key in ModelCard.__dataclass_fields__:
            setattr(card, key, value)
        else:
            card.training[key] = value
    return card
