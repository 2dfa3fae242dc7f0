"""The training loop: :class:`Trainer` runs one job from setup (or resume) to final weights.

Seeding, AdamW with the :class:`~blastoseg.train.schedule.LRSchedule`, gradient accumulation,
mixed precision on CUDA, epochs or a wall-clock budget, step / validation / checkpoint events,
interval and cancel checkpoints, and at the end ``.safetensors`` weights with a model card,
registered in the user model registry.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from blastoseg.predict.device import describe_device, resolve_device
from blastoseg.train.checkpoint import (
    CHECKPOINT_DIR,
    LAST_CHECKPOINT,
    capture_rng_state,
    find_checkpoint,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from blastoseg.train.distributed import DistContext
from blastoseg.train.events import EventWriter
from blastoseg.train.item_seeds import SeededItems, item_seeds
from blastoseg.train.job import TrainJob
from blastoseg.train.runtime import StopFlag, TrainResult, seed_everything, seed_worker
from blastoseg.train.schedule import LRSchedule
from blastoseg.train.task import TrainingError, get_task
from blastoseg.train.trained_model import trained_model_card, unique_model_name
from blastoseg.weights.registry import (
    read_card,
    register_model,
    resolve_model,
    verify,
    write_card,
)
from blastoseg.weights.safetensors_io import (
    WeightsError,
    check_state_dict,
    load_weights,
    save_weights,
    sha256_file,
)

__all__ = ["BEST_WEIGHTS", "OUTPUT_DIR", "Trainer"]

OUTPUT_DIR = "output"
BEST_WEIGHTS = "best.safetensors"


def _is_better(value: float, best: float | None, higher: bool) -> bool:
    if best is None:
        return True
    return value > best if higher else value < best


class Trainer:
    """One run of one job: setup (or resume), the optimisation loop, validation, checkpoints,
    and the final weights + model card. :func:`blastoseg.train.engine.train` drives it."""

    def __init__(self, job: TrainJob, job_dir: Path, events: EventWriter, flag: StopFlag,
                 resume: bool, device: str | None) -> None:
        self.job, self.job_dir, self.events, self.flag = job, job_dir, events, flag
        self.resume = resume
        self.device_name = device or job.device
        self.step = 0
        self.epoch = 0
        self.micro_in_epoch = 0
        self.elapsed_base = 0.0
        self.best_metric: float | None = None
        self.best_step: int | None = None
        self.last_metrics: dict = {}
        self.metrics_before: dict = {}  # the base model's validation metrics (fine-tuning)
        self.last_val_step = -1
        self.ckpt_path = job_dir / CHECKPOINT_DIR / LAST_CHECKPOINT

    # time ---------------------------------------------------------------------------
    def elapsed(self) -> float:
        return self.elapsed_base + (time.monotonic() - self.t0)

    def emit(self, event: str, **fields: Any) -> dict:
        return self.events.emit(event, step=self.step, epoch=self.epoch, **fields)

    # setup --------------------------------------------------------------------------
    def setup(self) -> None:
        job = self.job
        # under torchrun: join the group, one GPU per rank (a world of 1 changes nothing)
        self.dist = DistContext.from_env()
        self.device = self.dist.start(resolve_device(self.device_name), job.kind)
        seed_everything(job.seed)  # the same initial weights on every rank
        self.task = task = get_task(job.kind, job.task_module)
        task.job, task.device = job, self.device
        self.model = task.build_model(dict(job.config))
        if not isinstance(self.model, nn.Module):
            raise TrainingError(f"the {job.kind!r} task's build_model did not return a module")
        self.train_ds, self.val_ds = task.make_datasets(job)
        self.n_train = len(self.train_ds)
        self.n_val = len(self.val_ds) if self.val_ds is not None else 0
        if self.n_train == 0:
            raise TrainingError(
                f"the training data is empty ({', '.join(job.train_data)}): nothing to train on"
            )
        self.resume_from = find_checkpoint(self.job_dir) if self.resume else None
        if job.base and self.resume_from is None:
            base = job.base
            if base.endswith(".safetensors") and job.resolve_path(base).is_file():
                base = str(job.resolve_path(base))  # an exported job carries its base inside
            entry = resolve_model(base, kind=job.kind)
            verify(entry)
            task.load_base(self.model, entry)
        self.model.to(self.device)
        self.train_model = self.dist.wrap(self.model, self.device)  # DDP for the steps

        hp = job.hp
        self.bs, self.accum = int(hp("batch_size")), int(hp("grad_accum"))
        self.batches_per_epoch = self.dist.batches_per_epoch(self.n_train, self.bs)
        self.steps_per_epoch = math.ceil(self.batches_per_epoch / self.accum)
        limits = []
        if job.epochs is not None:
            limits.append(job.epochs * self.steps_per_epoch)
        if hp("max_steps"):
            limits.append(int(hp("max_steps")))
        self.total_steps = min(limits) if limits else None
        self.budget_s = job.time_budget_min * 60.0 if job.time_budget_min else None
        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            raise TrainingError("the model has no trainable parameters")
        self.base_lr = float(hp("lr"))
        self.optimizer = torch.optim.AdamW(params, lr=self.base_lr,
                                           weight_decay=float(hp("weight_decay")))
        self.schedule = LRSchedule(
            hp("schedule"), warmup_steps=hp("warmup_steps"), total_steps=self.total_steps,
            budget_s=self.budget_s, min_ratio=hp("min_lr_ratio"), step_every=hp("step_every"),
            gamma=hp("gamma"),
        )
        self.use_amp = bool(hp("amp")) and self.device.type == "cuda"
        self.amp_dtype = (torch.bfloat16 if self.use_amp and torch.cuda.is_bf16_supported()
                          else torch.float16)
        self.scaler = torch.amp.GradScaler(
            "cuda", enabled=self.use_amp and self.amp_dtype == torch.float16
        )
        if self.resume_from is not None:
            self.load(self.resume_from)

    def load(self, path: Path) -> None:
        state = load_checkpoint(path)
        if state.get("kind") not in (None, self.job.kind):
            raise TrainingError(
                f"the checkpoint {path} belongs to a {state.get('kind')!r} job, not "
                f"{self.job.kind!r}; delete the {CHECKPOINT_DIR} folder to start afresh"
            )
        try:
            check_state_dict(self.model, state["model"], path)
        except WeightsError as exc:
            raise TrainingError(
                f"cannot resume: {exc} (was job.json's config changed? delete the "
                f"{CHECKPOINT_DIR} folder to start afresh)"
            ) from None
        self.model.load_state_dict(state["model"])
        try:
            self.optimizer.load_state_dict(state["optimizer"])
        except (ValueError, KeyError) as exc:
            raise TrainingError(f"cannot resume the optimizer from {path}: {exc}") from None
        if state.get("scaler") and self.scaler.is_enabled():
            self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        self.epoch = int(state.get("epoch", 0))
        self.micro_in_epoch = int(state.get("micro_in_epoch", 0))
        if self.micro_in_epoch >= self.batches_per_epoch:  # data changed size: next epoch
            self.epoch, self.micro_in_epoch = self.epoch + 1, 0
        self.elapsed_base = float(state.get("elapsed_s", 0.0))
        self.best_metric = state.get("best_metric")
        self.best_step = state.get("best_step")
        self.last_metrics = dict(state.get("metrics") or {})
        self.metrics_before = dict(state.get("metrics_before") or {})
        if "rng" in state:
            restore_rng_state(state["rng"])

    # checkpoints --------------------------------------------------------------------
    def checkpoint(self, reason: str, *, finished: bool = False) -> Path:
        if not self.dist.is_main:  # rank 0 writes for all (the weights are the same)
            return self.ckpt_path
        state = {
            "kind": self.job.kind,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else {},
            "step": self.step,
            "epoch": self.epoch,
            "micro_in_epoch": self.micro_in_epoch,
            "elapsed_s": self.elapsed(),
            "best_metric": self.best_metric,
            "best_step": self.best_step,
            "metrics": {k: float(v) for k, v in self.last_metrics.items()},
            "metrics_before": {k: float(v) for k, v in self.metrics_before.items()},
            "rng": capture_rng_state(),
            "finished": finished,
        }
        save_checkpoint(self.ckpt_path, state)
        self.last_ckpt_step, self.last_ckpt_time = self.step, time.monotonic()
        self.emit("checkpoint", path=str(self.ckpt_path), reason=reason,
                  best_metric=self.best_metric)
        return self.ckpt_path

    # validation ---------------------------------------------------------------------
    def main_metric(self, metrics: Mapping[str, float]) -> tuple[str, bool] | None:
        if not metrics:
            return None
        key = self.task.main_metric
        if key is None or key not in metrics:
            key = "val_loss" if "val_loss" in metrics else next(iter(metrics))
        higher = self.task.higher_is_better and "loss" not in key
        return key, higher

    def evaluate(self) -> dict:
        self.model.eval()
        try:
            with torch.no_grad(), self.autocast():
                metrics = self.task.validate(self.model, self.val_ds)
        finally:
            self.model.train()
        return {str(k): float(v) for k, v in dict(metrics).items()}

    def validate_base(self) -> None:
        """Validate the base model before the first step: the card's ``metrics_before``, so a
        fine-tuned model's card shows what fine-tuning changed. Does not compete for "best"."""
        if not self.dist.is_main:
            return
        t = time.monotonic()
        self.metrics_before = self.evaluate()
        chosen = self.main_metric(self.metrics_before)
        self.emit("validation", metrics=self.metrics_before, before=True,
                  main_metric=chosen[0] if chosen else None, best=False,
                  best_metric=self.best_metric, best_step=self.best_step,
                  duration_s=round(time.monotonic() - t, 3))

    def validate(self) -> dict:
        if self.val_ds is None or self.n_val == 0 or not self.dist.is_main:
            return {}
        t = time.monotonic()
        metrics = self.evaluate()
        self.last_metrics, self.last_val_step = metrics, self.step
        best = False
        chosen = self.main_metric(metrics)
        if chosen is not None:
            key, higher = chosen
            value = metrics[key]
            if math.isfinite(value) and _is_better(value, self.best_metric, higher):
                self.best_metric, self.best_step, best = value, self.step, True
                save_weights(self.model.state_dict(),
                             self.job_dir / CHECKPOINT_DIR / BEST_WEIGHTS,
                             {"kind": self.job.kind, "step": self.step, key: value})
        self.emit("validation", metrics=metrics, main_metric=chosen[0] if chosen else None,
                  best=best, best_metric=self.best_metric, best_step=self.best_step,
                  duration_s=round(time.monotonic() - t, 3))
        return metrics

    def autocast(self):
        if self.use_amp:
            return torch.autocast("cuda", dtype=self.amp_dtype)
        return nullcontext()

    # the loop -----------------------------------------------------------------------
    def should_stop(self) -> str | None:
        return self.dist.agree_stop(self._own_stop())  # every rank stops at the same step

    def _own_stop(self) -> str | None:
        if self.flag.requested():
            return "cancel"
        if self.total_steps is not None and self.step >= self.total_steps:
            return "done"
        if self.job.epochs is not None and self.epoch >= self.job.epochs:
            return "done"
        if self.budget_s is not None and self.elapsed() >= self.budget_s:
            return "done"
        return None

    def eta(self) -> float | None:
        done = self.step - self.start_step
        run_time = time.monotonic() - self.t0
        if done <= 0 or run_time <= 0:
            return None
        candidates = []
        if self.total_steps is not None:
            candidates.append((self.total_steps - self.step) * run_time / done)
        if self.budget_s is not None:
            candidates.append(self.budget_s - self.elapsed())
        return round(max(min(candidates), 0.0), 1) if candidates else None

    def optimizer_step(self) -> float:
        # rank 0's clock: a time-budget schedule must give every rank the same rate
        lr = self.base_lr * self.schedule.factor(self.step, self.dist.from_main(self.elapsed()))
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        clip = self.job.hp("grad_clip")
        if clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), float(clip))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return lr

    def loop(self) -> str:
        hp = self.job.hp
        log_every = max(int(hp("log_every") or 1), 1)
        val_every = hp("val_every")
        ckpt_every = int(hp("ckpt_every") or 0)
        ckpt_every_s = float(hp("ckpt_every_s") or 0)
        num_workers = int(hp("num_workers") or 0)
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        window: dict[str, list[float]] = {}
        last_log_time, last_log_step = time.monotonic(), self.step
        while True:
            stop = self.should_stop()
            if stop:
                return stop
            if hasattr(self.train_ds, "set_epoch"):  # e.g. fresh synthetic frames per epoch
                self.train_ds.set_epoch(self.epoch)
            order = self.dist.epoch_order(self.train_ds, self.job.seed, self.epoch)
            dataset = self.train_ds
            if num_workers:  # items seeded by their place in the epoch, not by their worker
                dataset = SeededItems(self.train_ds)
                seeds = item_seeds(self.job.seed, self.epoch, self.dist.rank, len(order))
                order = list(zip(order, seeds, strict=True))
            loader = DataLoader(
                dataset, batch_size=self.bs, sampler=order[self.micro_in_epoch * self.bs:],
                collate_fn=self.task.collate, num_workers=num_workers,
                pin_memory=self.device.type == "cuda",
                worker_init_fn=seed_worker if num_workers else None,
                # its own generator: a loader draws its workers' base seed when its iterator
                # starts, which from torch's global RNG would shift every later random draw
                # (augmentation) of a run resumed mid-epoch by one (issue 18 item 16)
                generator=torch.Generator().manual_seed(self.job.seed + 7919 * self.epoch + 1),
            )
            pending = 0
            for batch in loader:
                batch = self.task.move_to_device(batch, self.device)
                with self.autocast():
                    losses = self.task.training_step(self.train_model, batch)
                if not isinstance(losses, Mapping) or "loss" not in losses:
                    raise TrainingError(
                        f"the {self.job.kind!r} task's training_step must return a dict with "
                        "a 'loss' tensor"
                    )
                loss = losses["loss"]
                if not torch.isfinite(loss.detach()).all():
                    raise TrainingError(
                        f"the loss became {float(loss.detach())} at step {self.step + 1}: training "
                        "diverged. Lower the learning rate (hyper 'lr') or set 'grad_clip'"
                    )
                self.scaler.scale(loss / self.accum).backward()
                for k, v in losses.items():
                    window.setdefault(k, []).append(float(v.detach()) if torch.is_tensor(v)
                                                    else float(v))
                self.micro_in_epoch += 1
                pending += 1
                epoch_end = self.micro_in_epoch >= self.batches_per_epoch
                if pending < self.accum and not epoch_end:
                    continue
                lr = self.optimizer_step()
                pending = 0
                self.step += 1
                if epoch_end:
                    self.epoch, self.micro_in_epoch = self.epoch + 1, 0
                stop = self.should_stop()
                if self.step % log_every == 0 or self.step == self.start_step + 1 or stop:
                    now = time.monotonic()
                    means = self.dist.mean({k: sum(v) / len(v) for k, v in window.items()})
                    self.emit(
                        "step", loss=means.pop("loss"), losses=means, lr=lr,
                        eta_s=self.eta(), total_steps=self.total_steps,
                        elapsed_s=round(self.elapsed(), 2),
                        steps_per_s=round((self.step - last_log_step) / max(now - last_log_time,
                                                                          1e-9), 3),
                    )
                    window.clear()
                    last_log_time, last_log_step = now, self.step
                if (val_every and self.step % int(val_every) == 0) or (not val_every and epoch_end):
                    self.validate()
                stop = self.should_stop()  # a cancel may have come during logging/validation
                if stop == "cancel":
                    return stop
                if (ckpt_every and self.step % ckpt_every == 0) or (
                    ckpt_every_s and time.monotonic() - self.last_ckpt_time >= ckpt_every_s
                ):
                    self.checkpoint("interval")
                if stop:
                    return stop

    def finish(self) -> TrainResult:
        job = self.job
        if not self.dist.is_main:  # rank 0 validates, writes and registers the model
            return TrainResult("done", self.step, self.epoch, message="rank "
                               f"{self.dist.rank} of {self.dist.world_size}: done")
        if self.n_val and self.last_val_step != self.step:
            self.validate()
        name = job.model_name()
        out_dir = self.job_dir / OUTPUT_DIR
        best_file = self.job_dir / CHECKPOINT_DIR / BEST_WEIGHTS
        use_best = job.hp("final_weights") == "best" and self.best_step is not None \
            and best_file.is_file()
        weights_path = out_dir / f"{name}.safetensors"
        state = load_weights(best_file) if use_best else self.model.state_dict()
        save_weights(state, weights_path, {"kind": job.kind, "name": name},
                     fp16=bool(job.hp("fp16_weights")))
        sha = sha256_file(weights_path)
        card = trained_model_card(self, weights_path, sha, use_best)
        card_path = write_card(card, weights_path.with_suffix(".json"))
        finalised = self.task.finalise_card(job, weights_path, card_path)
        if finalised:
            card = read_card(card_path)
            self.emit("calibrated", **finalised)
        entry = None
        if job.register:
            reg_name, entry = unique_model_name(name, sha)
            if entry is None:
                entry = register_model(weights_path, card, name=reg_name)
        ckpt = self.checkpoint("final", finished=True)
        message = f"trained {self.step} steps in {self.elapsed():.0f} s"
        if entry is not None:
            message += f"; registered as {entry.name!r}"
        self.emit("done", weights=str(weights_path), card=str(card_path),
                  model=entry.name if entry else None,
                  registered_path=str(entry.weights_path) if entry else None,
                  metrics=self.last_metrics, metrics_before=self.metrics_before or None,
                  best_metric=self.best_metric, elapsed_s=round(self.elapsed(), 2), message=message)
        return TrainResult("done", self.step, self.epoch, dict(self.last_metrics), weights_path,
                           card_path, entry, ckpt, message)

    def run(self) -> TrainResult:
        try:
            result = self._run()
        except BaseException:
            self.train_model = None
            if hasattr(self, "dist"):
                self.dist.close(wait=False)  # the other ranks may never get here
            raise
        # DDP's reducer goes before the process group does, not at interpreter exit
        self.train_model = None
        self.dist.close()
        return result

    def _run(self) -> TrainResult:
        self.t0 = time.monotonic()
        self.setup()
        self.t0 = time.monotonic()
        self.start_step = self.step
        self.last_ckpt_step, self.last_ckpt_time = self.step, time.monotonic()
        desc = describe_device(self.device)
        resumed = self.resume_from is not None
        self.emit(
            "start", kind=self.job.kind, device=str(self.device), device_description=desc,
            resumed=resumed, resumed_from_step=self.step if resumed else None,
            total_steps=self.total_steps, steps_per_epoch=self.steps_per_epoch,
            epochs=self.job.epochs, time_budget_s=self.budget_s, n_train=self.n_train,
            n_val=self.n_val, amp=self.use_amp, seed=self.job.seed, pid=os.getpid(),
            world_size=self.dist.world_size, distributed_backend=(
                self.dist.backend if self.dist.active else None),
            job_dir=str(self.job_dir),
            notes=list(self.task.start_notes),
            message=(f"training {self.job.kind!r} on {desc}"
                     + (f", resuming from step {self.step}" if resumed else "")
                     + "".join(f"; {note}" for note in self.task.start_notes)),
        )
        try:
            if (self.job.base and not resumed and self.n_val
                    and self.job.hyper.get("validate_base", True)):
                self.validate_base()
            stop = self.loop()
        except torch.cuda.OutOfMemoryError:
            raise TrainingError(
                f"out of GPU memory at step {self.step + 1} on {desc}: lower hyper "
                "'batch_size' (and raise 'grad_accum' to keep the effective batch)"
            ) from None
        if stop == "cancel":
            path = self.checkpoint("cancel")
            reason = self.flag.reason or "cancel requested"
            message = (f"{reason}: stopped after step {self.step}, checkpoint saved; run the "
                       "job again to resume")
            self.emit("cancelled", checkpoint=str(path), reason=reason, message=message)
            return TrainResult("cancelled", self.step, self.epoch, dict(self.last_metrics),
                               checkpoint=path, message=message)
        return self.finish()
