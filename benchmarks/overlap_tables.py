"""The thesis's SE-U-Net tables (S4, Tables 5.1-5.6) on our data: train each variant with the
same budget, evaluate each on the same held-out sets, print Markdown tables.

Tables (``--table``):

- ``heads`` (Tables 5.1-5.2): decoder-head variants, all without a probability map:
  1 head (cytoplasm), 2 (+ nuclei), 3 (+ border), 4 (+ background), 5 (+ overlap).
- ``probability`` (Table 5.3): the 5-head model, overlap F1 without a probability map and
  with each variant of :data:`blastoseg.targets.probability.PROBABILITY_VARIANTS` in the
  reweighted focal loss (eq. 4.5); ``eq5_1`` adds the section 5.1 alternative loss with the
  best map.
- ``data`` (Tables 5.4-5.6): the same model trained on the ISBI training part only, on
  synthetic brightfield only, and on both.
- ``embryo``: the overlap head on synthetic embryos (blastomere overlaps), without and with
  the best probability map.

Every run is a ``blastoseg train overlap`` job (``--runs DIR/<table>/<variant>``); a run
whose output weights exist is not trained again, so the script can be resumed. Models are
registered under a private ``BLASTOSEG_HOME`` inside ``--runs`` (the user's registry is left
alone). Results are evaluated with :func:`blastoseg.predict.overlap_eval.evaluate_overlap_model`
(overlap thresholded at 0.3) on every ``--eval NAME=DIR`` set and printed as Markdown;
``--json OUT`` keeps every number.

Usage::

    nice python benchmarks/overlap_tables.py --table heads --steps 600 \\
        --train-synth ../data/bf_train --train-isbi ../data/isbi_train \\
        --val ../data/bf_val --eval synthetic=../data/bf_val,isbi=../data/isbi_val \\
        --runs ../runs/overlap [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ALL_HEADS = ["cytoplasm", "nuclei", "border", "background", "overlap"]
#: CPU-sized: 8 base channels, half-resolution images (cells ~70 px across), 128 px crops
BASE_SEUNET = {"base_width": 8, "depth": 4}
BASE_DATA = {"crop": 128, "repeats": 4, "scale": 0.5}
#: the last weights are kept (no checkpoint picked on the held-out sets), validated once
BASE_HYPER = {"batch_size": 4, "lr": 0.003, "schedule": "cosine", "warmup_steps": 20,
              "grad_clip": 5.0, "log_every": 20, "ckpt_every": 100, "val_frames": 6,
              "final_weights": "last", "fp16_weights": True}


def variants(table: str, best_map: str) -> dict[str, dict]:
    """Variant name -> config overrides for one table."""
    if table == "heads":
        return {f"{k}_heads": {"seunet": {"heads": ALL_HEADS[:k]},
                               "probability": {"variant": "none"}, "loss": {"overlap": "bce"}}
                for k in range(1, 6)}
    if table == "probability":
        from blastoseg.targets.probability import PROBABILITY_VARIANTS

        # "none" + focal_reweighted is the plain focal loss: the without-a-map baseline
        out = {v: {"probability": {"variant": v}, "loss": {"overlap": "focal_reweighted"}}
               for v in PROBABILITY_VARIANTS}
        out[f"{best_map}_eq5_1"] = {"probability": {"variant": best_map},
                                    "loss": {"overlap": "eq5_1"}}
        return out
    if table == "data":
        out = {name: {"probability": {"variant": best_map},
                      "loss": {"overlap": "focal_reweighted"}, "_data": name}
               for name in ("isbi", "synthetic", "both")}
        out["both"]["_reuse"] = f"probability/{best_map}"  # the same run
        return out
    if table == "embryo":
        return {v: {"seunet": {"heads": ["cytoplasm", "border", "background", "overlap"]},
                    "probability": {"variant": v},
                    "loss": {"overlap": "focal_reweighted" if v != "none" else "bce"},
                    "_data": "embryo"}
                for v in ("none", best_map)}
    raise SystemExit(f"unknown table {table!r}")


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def train_variant(name: str, over: dict, args, data: dict[str, list[str]]) -> Path:
    from blastoseg.train import create_job, run_job

    over = dict(over)
    job_dir = args.runs / over.pop("_reuse", f"{args.table}/{name}")
    done = sorted((job_dir / "output").glob("*.safetensors")) if job_dir.is_dir() else []
    if done:
        return done[0]
    source = over.pop("_data", "both")
    config = _merge({"seunet": {**BASE_SEUNET, "heads": ALL_HEADS}, "data": dict(BASE_DATA)},
                    over)
    hyper = {**BASE_HYPER, "max_steps": args.steps, "val_every": args.steps}
    train = data[source]
    val = data["embryo_val"] if source == "embryo" else data["val"]
    t0 = time.time()
    job = create_job("overlap", train, job_dir, val_data=val, config=config, hyper=hyper,
                     seed=args.seed, name=f"bench-{args.table}-{name}", overwrite=True)
    code = run_job(job, stdout=False)
    print(f"  trained {name} in {time.time() - t0:.0f} s (exit {code})", file=sys.stderr)
    if code != 0:
        raise SystemExit(f"training {name} failed; see {job_dir}/events.jsonl")
    return sorted((job_dir / "output").glob("*.safetensors"))[0]


def _f(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table", required=True, choices=["heads", "probability", "data", "embryo"])
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--best-map", default="combined_border_overlap",
                    help="probability-map variant used by the data and eq5_1 rows")
    ap.add_argument("--train-synth", default="")
    ap.add_argument("--train-isbi", default="")
    ap.add_argument("--train-embryo", default="")
    ap.add_argument("--val", default="", help="validation set(s) used during training")
    ap.add_argument("--val-embryo", default="")
    ap.add_argument("--eval", required=True, help="NAME=DIR[,NAME=DIR...] held-out sets")
    ap.add_argument("--only", default="", help="comma-separated variants to run")
    ap.add_argument("--runs", type=Path, required=True)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    args.runs = args.runs.resolve()
    os.environ.setdefault("BLASTOSEG_HOME", str(args.runs / "home"))
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from blastoseg.predict.overlap import OverlapPredictor
    from blastoseg.predict.overlap_eval import evaluate_overlap_model

    split = lambda s: [p for p in s.split(",") if p]  # noqa: E731
    data = {"isbi": split(args.train_isbi), "synthetic": split(args.train_synth),
            # the 24 ISBI images are listed 4x so they are not drowned by ~400 synthetic ones
            "both": split(args.train_synth) + split(args.train_isbi) * 4,
            "embryo": split(args.train_embryo), "val": split(args.val),
            "embryo_val": split(args.val_embryo)}
    evals = dict(e.split("=", 1) for e in split(args.eval))
    chosen = variants(args.table, args.best_map)
    if args.only:
        chosen = {k: v for k, v in chosen.items() if k in split(args.only)}
    results = {}
    for name, over in chosen.items():
        print(f"{name} ...", file=sys.stderr)
        weights = train_variant(name, over, args, data)
        predictor = OverlapPredictor(str(weights), device="cpu")
        row = {"config": over, "weights": str(weights)}
        for set_name, folder in evals.items():
            row[set_name] = evaluate_overlap_model(predictor, folder)
        results[name] = row

    print(f"\n### {args.table}: {args.steps} steps, batch {BASE_HYPER['batch_size']}, "
          f"{BASE_DATA['crop']} px crops at scale {BASE_DATA['scale']}, seed {args.seed}\n")
    for set_name in evals:
        print(f"**{set_name}** (held out; overlap thresholded at 0.3)\n")
        print("| variant | cyto F1 | cyto IoU | nuclei F1 | overlap P | overlap R | overlap F1 "
              "| overlap IoU |")
        print("|---|---|---|---|---|---|---|---|")
        for name, row in results.items():
            r = row[set_name]
            c, n, o = (r.get(h, {}) for h in ("cytoplasm", "nuclei", "overlap"))
            print(f"| {name} | {_f(c.get('f1'))} | {_f(c.get('iou'))} | {_f(n.get('f1'))} | "
                  f"{_f(o.get('precision'))} | {_f(o.get('recall'))} | {_f(o.get('f1'))} | "
                  f"{_f(o.get('iou'))} |")
        print()
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
