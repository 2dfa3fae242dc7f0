"""The three experiments of S3's Table 2 (Andreini et al.) scaled to a 2-core CPU: SMANet
trained on "real" images only, on synthetic images only, and on synthetic images then
fine-tuned on the "real" ones; all tested on held-out "real" images.

We have no licensed real oocyte images with masks, so "real" is a style the synthetic
training never sees: the renderer's inverted-microscope brightfield (``--real-contrast``,
default ``inverted``) while the synthetic set is rendered under Hoffman relief only
(``--synthetic-contrast``). As in the paper, 18 "real" images train and 8 test
(``--real-train``, ``--real-test``). Seeds: synthetic 700000+, real train 710000+, real test
720000+ (apart from every other oocyte set of the repository).

Prints one table (accuracy, mIoU over the classes present, inclusion detection) and one of
per-class IoU, and ``--json OUT`` writes every number. Each training run has a fixed number
of steps (``--steps-real``, ``--steps-synthetic``, ``--steps-finetune``) so the table is
reproducible; the time each took is printed.

``--seunet`` adds the S4 SE-U-Net (one SE decoder and a softmax classifier,
:class:`blastoseg.models.oocyte_networks.SEUNetClasses`) trained the same way on the same
data: synthetic only, and synthetic then fine-tuned. A rerun with the same ``--out`` reuses
the models already trained there.

Usage::

    nice python benchmarks/oocyte_experiments.py --out /tmp/oocyte_experiments
        [--synthetic 300] [--steps-synthetic 300] [--threads 1] [--seunet] [--json OUT]
        [--recipe paper|weighted]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

MODEL = {"widths": [16, 32, 64, 96, 128], "dilations": [2, 4], "blocks": [1, 1, 1, 1],
         "reduced": 48, "scales": [1.0, 0.5], "psp_bins": [1, 2, 4], "decoder_channels": 32,
         "working_size": 256}
#: the S4 SE-U-Net compared on the same data (--seunet)
SEUNET = {"architecture": "seunet", "seunet": {"base_width": 16, "depth": 4},
          "working_size": 256}
#: the loss of each recipe (--recipe): "paper" = the first table's fixed weights; "weighted" =
#: the shipped oocyte-default's recipe, median-frequency weights computed from each run's own
#: training images and class-prior offsets calibrated on them (no test image is seen)
LOSSES = {"paper": {"class_weights": [1.0, 1.0, 1.0, 1.0, 4.0, 2.0, 2.0]},
          "weighted": {"class_weights": "median_frequency"}}
SEEDS = {"synthetic": 700_000, "real_train": 710_000, "real_test": 720_000}


def make_data(out: Path, args) -> dict[str, Path]:
    from blastoseg.synth.oocyte import OocyteConfig, write_synthetic_oocytes

    sets = {"synthetic": (args.synthetic, args.synthetic_contrast),
            "real_train": (args.real_train, args.real_contrast),
            "real_test": (args.real_test, args.real_contrast)}
    paths = {}
    for name, (n, contrast) in sets.items():
        paths[name] = out / "data" / name
        if not (paths[name] / "annotations.json").is_file():
            write_synthetic_oocytes(paths[name], n=n, seed=SEEDS[name],
                                    config=OocyteConfig(contrast=contrast))
    return paths


def train(out: Path, name: str, data: Path, steps: int, batch: int, lr: float, threads: int,
          base: str | None = None, network: dict | None = None,
          recipe: str = "paper") -> tuple[str, float]:
    from blastoseg.train import create_job, run_job

    job = out / "jobs" / name
    hyper = {"max_steps": steps, "batch_size": batch, "lr": lr, "threads": threads,
             "warmup_steps": min(30, steps // 10), "schedule": "cosine", "grad_clip": 5.0,
             "aug_strength": 0.7, "log_every": 20, "val_every": steps + 1,
             "ckpt_every": 0, "ckpt_every_s": 0, "final_weights": "last",
             "val_frames": 64}
    model_name = f"bench-oocyte-{name}"
    registered = Path(os.environ["BLASTOSEG_HOME"]) / "models" / f"{model_name}.safetensors"
    if not registered.is_file():  # a rerun reuses the models already trained
        # the weighted recipe calibrates its offsets on the run's own training images
        create_job("oocyte", [str(data)], job, config={**(network or {"model": MODEL}),
                                                      "loss": LOSSES[recipe]},
                   val_data=[str(data)] if recipe == "weighted" else None,
                   hyper=hyper, base=base, name=model_name, overwrite=True)
        rc = run_job(job, stdout=False, resume=True)
        if rc != 0:
            raise SystemExit(f"training {name} failed (see {job}/events.jsonl)")
    return model_name, _training_seconds(job)


def _training_seconds(job: Path) -> float:
    """The run's training time as its events recorded it (also for a reused model)."""
    steps = [json.loads(line) for line in (job / "events.jsonl").read_text().splitlines()
             if '"event": "step"' in line]
    return float(steps[-1]["elapsed_s"]) if steps else 0.0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="work folder (data, jobs, models)")
    p.add_argument("--synthetic", type=int, default=300)
    p.add_argument("--real-train", type=int, default=18)
    p.add_argument("--real-test", type=int, default=8)
    p.add_argument("--synthetic-contrast", default="hoffman")
    p.add_argument("--real-contrast", default="inverted")
    p.add_argument("--steps-real", type=int, default=150)
    p.add_argument("--steps-synthetic", type=int, default=300)
    p.add_argument("--steps-finetune", type=int, default=100)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--recipe", choices=sorted(LOSSES), default="paper",
                   help="paper: fixed class weights (the first table); weighted: "
                        "oocyte-default's median-frequency weights and calibrated offsets")
    p.add_argument("--seunet", action="store_true",
                   help="also train the S4 SE-U-Net on synthetic, then fine-tuned on real")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ["BLASTOSEG_HOME"] = str(args.out / "home")  # benchmark models stay here
    import torch

    torch.set_num_threads(args.threads)
    from blastoseg.predict.oocyte_eval import evaluate_oocyte_model

    data = make_data(args.out, args)
    runs = {}
    runs["real only"] = train(args.out, "real", data["real_train"], args.steps_real, 4, 2e-3,
                              args.threads, recipe=args.recipe)
    runs["synthetic only"] = train(args.out, "synthetic", data["synthetic"],
                                   args.steps_synthetic, 8, 2e-3, args.threads,
                                   recipe=args.recipe)
    runs["synthetic + fine-tuned"] = train(args.out, "finetuned", data["real_train"],
                                           args.steps_finetune, 4, 5e-4, args.threads,
                                           base=runs["synthetic only"][0], recipe=args.recipe)
    if args.seunet:
        runs["SE-U-Net synthetic only"] = train(args.out, "seunet-synthetic",
                                                data["synthetic"], args.steps_synthetic, 8,
                                                2e-3, args.threads, network=SEUNET,
                                                recipe=args.recipe)
        runs["SE-U-Net synthetic + fine-tuned"] = train(
            args.out, "seunet-finetuned", data["real_train"], args.steps_finetune, 4, 5e-4,
            args.threads, base=runs["SE-U-Net synthetic only"][0], network=SEUNET,
            recipe=args.recipe)
    results = {}
    for label, (model, seconds) in runs.items():
        r = evaluate_oocyte_model(model, data["real_test"], device="cpu")
        results[label] = {**r, "train_s": round(seconds, 1)}
    print(f"\nrecipe {args.recipe}: SMANet on {args.real_test} held-out 'real' "
          f"({args.real_contrast}) oocytes; "
          f"synthetic = {args.synthetic} {args.synthetic_contrast} renders; "
          f"{args.real_train} 'real' training images\n")
    print("| experiment | accuracy | mIoU | inclusion detection | train s |")
    print("|---|---|---|---|---|")
    for label, r in results.items():
        det = "-" if r["inclusion_detection"] is None else (
            f"{r['inclusion_detection']:.2f} ({r['inclusions_found']}/{r['inclusions_total']})")
        print(f"| {label} | {r['accuracy']:.3f} | {r['mIoU']:.3f} | {det} | {r['train_s']} |")
    classes = list(next(iter(results.values()))["iou"])
    print("\n| experiment | " + " | ".join(c.replace("_", " ") for c in classes) + " |")
    print("|---|" + "---|" * len(classes))
    for label, r in results.items():
        cells = ["-" if r["iou"][c] is None else f"{r['iou'][c]:.3f}" for c in classes]
        print(f"| {label} | " + " | ".join(cells) + " |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
