"""Train the VQ-VAE shape prior (S1) on synthetic amodal masks and measure reconstruction.

For each codebook variant (plain codebook loss of eq. 1, + dead-code restarts, EMA,
EMA + restarts) the script trains a VQ-VAE from the same seed on crops of synthetic
embryos (``blastoseg.synth.render_embryo``, augmented boxes) and reports, on held-out embryos
(other seeds, exact boxes): reconstruction IoU of the quantised reconstruction (mean and 5th
percentile), codebook perplexity and dead codes (codes never chosen on the held-out set), and
training time. Weights go to ``--out`` (default under /tmp), never into the repository.

Run (CPU, one thread, a few minutes per variant)::

    nice python benchmarks/vqvae_reconstruction.py --steps 1500
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from blastoseg.models import VQVAE, VQVAEConfig
from blastoseg.train.shape_prior_data import CropAugment, MaskCropDataset

VARIANTS = {
    "plain": dict(codebook_update="loss", dead_code_restart=False),
    "plain+restart": dict(codebook_update="loss", dead_code_restart=True),
    "ema": dict(codebook_update="ema", dead_code_restart=False),
    "ema+restart": dict(codebook_update="ema", dead_code_restart=True),
}


def iou(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-mask IoU of (N, 1, S, S) bool tensors (1 when both are empty)."""
    inter = (pred & target).flatten(1).sum(1).float()
    union = (pred | target).flatten(1).sum(1).float()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))


@torch.no_grad()
def evaluate(model: VQVAE, masks: torch.Tensor, batch: int = 256) -> dict:
    model.eval()
    ious, counts = [], torch.zeros(model.config.codebook_size)
    for i in range(0, len(masks), batch):
        x = masks[i:i + batch]
        idx = model.encode_indices(x)
        logits = model.decode_indices(idx)
        ious.append(iou(logits > 0, x > 0.5))
        counts += torch.bincount(idx.flatten(), minlength=len(counts)).float()
    v = torch.cat(ious)
    p = counts / counts.sum()
    return {
        "iou_mean": float(v.mean()),
        "iou_p5": float(torch.quantile(v, 0.05)),
        "perplexity": float(torch.exp(-(p * torch.log(p + 1e-10)).sum())),
        "dead": int((counts == 0).sum()),
    }


def train(cfg: VQVAEConfig, data: MaskCropDataset, steps: int, batch: int, lr: float,
          seed: int, log_every: int = 250) -> tuple[VQVAE, float]:
    torch.manual_seed(seed)
    model = VQVAE(cfg)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    warm = max(1, min(100, steps // 10))
    sched = torch.optim.lr_scheduler.LambdaLR(  # linear warm-up, then cosine decay
        opt, lambda s: min(1.0, (s + 1) / warm)
        * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps))))
    model.train()
    t0 = time.perf_counter()
    for step in range(1, steps + 1):
        idx = torch.randint(0, len(data), (batch,))
        x = torch.stack([data[int(i)] for i in idx])
        out = model(x)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
        sched.step()
        if step % log_every == 0 or step == steps:
            print(f"  step {step:5d}  loss {out.loss.item():.4f}  recon "
                  f"{out.recon_loss.item():.4f}  perplexity {out.perplexity.item():.1f}  "
                  f"{time.perf_counter() - t0:.0f}s", flush=True)
    return model, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--train-frames", type=int, default=300)
    ap.add_argument("--test-frames", type=int, default=60)
    ap.add_argument("--test-seed", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--codebook-size", type=int, default=None)
    ap.add_argument("--hidden", type=int, default=None)
    ap.add_argument("--out", type=Path, default=Path("/tmp/blastoseg_vqvae"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    t = time.perf_counter()
    train_ds = MaskCropDataset.from_synthetic(args.train_frames, seed=args.seed,
                                              augment=CropAugment())
    test = MaskCropDataset.from_synthetic(args.test_frames, seed=args.test_seed).tensor()
    print(f"{len(train_ds)} training masks ({args.train_frames} embryos, seeds "
          f"{args.seed}..), {len(test)} held-out masks ({args.test_frames} embryos, seeds "
          f"{args.test_seed}..), rendered in {time.perf_counter() - t:.0f}s", flush=True)

    # trivial baseline: the mean training crop, thresholded, for every mask
    mean_mask = train_ds.tensor().mean(0, keepdim=True) > 0.5
    base = iou(mean_mask.expand_as(test), test > 0.5)
    rows = [("mean-mask baseline", float(base.mean()), float(torch.quantile(base, 0.05)),
             float("nan"), "-", "-", 0.0)]

    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.variants:
        over = dict(VARIANTS[name])
        if args.codebook_size:
            over["codebook_size"] = args.codebook_size
        if args.hidden:
            over["hidden_channels"] = args.hidden
        cfg = VQVAEConfig(**over)
        print(f"variant {name}: {cfg}", flush=True)
        model, secs = train(cfg, train_ds, args.steps, args.batch, args.lr, args.seed)
        m = evaluate(model, test)
        n_par = sum(p.numel() for p in model.parameters())
        rows.append((name, m["iou_mean"], m["iou_p5"], m["perplexity"],
                     f"{m['dead']}/{cfg.codebook_size}", f"{n_par / 1e3:.0f}K", secs))
        try:
            from safetensors.torch import save_file

            stem = args.out / name.replace("+", "_")
            save_file({k: v.contiguous() for k, v in model.state_dict().items()},
                      str(stem) + ".safetensors")
            stem.with_suffix(".json").write_text(json.dumps(
                {"config": cfg.to_dict(), "metrics": m, "train_seconds": secs,
                 "steps": args.steps}, indent=2))
        except Exception as e:  # weights are a by-product; the table is the result
            print(f"  (weights not saved: {e})")

    print()
    print("| variant | IoU mean | IoU p5 | perplexity | dead codes | params | train s |")
    print("|---|---|---|---|---|---|---|")
    for name, mean, p5, ppl, dead, npar, secs in rows:
        print(f"| {name} | {mean:.3f} | {p5:.3f} | {ppl:.1f} | {dead} | {npar} | {secs:.0f} |")


if __name__ == "__main__":
    main()
