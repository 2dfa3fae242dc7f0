"""The thesis's brightfield instance tables (S4, Tables 5.7, 5.9, 5.10) on our data: train each
variant with the same budget on the same data, evaluate each on the same held-out sets, print
Markdown tables (issue 7, item 4).

Tables (``--table``):

- ``baselines`` (Table 5.7): ``watershed`` = the "SEU-Net + wtshd" row, a trained overlap
  model's (``--overlap-model``, default ``overlap-default``) cytoplasm and nuclei maps split by
  a seeded watershed (:func:`blastoseg.predict.brightfield_eval.evaluate_watershed_baseline`,
  no training); ``single_level`` = the SparseSEU-Net (the same run as in ``levels``);
  ``amodal_fcn`` = the S1 amodal detector (Mask R-CNN, ``blastoseg train amodal``) trained on
  the same data with the FCN mask head and no shape prior (the VQ-VAE heads need one).
- ``levels`` (Table 5.9): SparseSEU-Net single-level vs multi-level (section 4.5.4).
- ``overlap`` (Table 5.10): multi-level without the overlap head, with it as an auxiliary
  head only (= ``levels/multi_level``), + overlap-conditioned branches (section 5.7.1),
  + the probability map in the head loss (variant ``--prob-map``, default
  ``combined_border_overlap``, instead of ``none``), + the IoU-objectness head (section
  5.7.3), and the last model scored without the IoU factor (same weights, no training).

Every SparseSEU-Net row has the same recipe apart from its variant: ``--steps`` steps of
batch 4, 128 px crops at scale 0.25 (the whole of a 512 px frame: cells are seen whole, as
at inference), probability map ``none`` unless the row adds it, the
last weights kept; its SE-U-Net has the architecture of ``--init-seunet`` (default
``overlap-default``: base width, depth, decoder width, SE reduction; heads cytoplasm,
nuclei, overlap) and starts from its weights (config ``init_seunet``; ``--init-seunet none``
trains from scratch with the SparseSEU-Net defaults). The amodal detector sees the same
training folders, whole frames resized to ``scale`` x the frame side (128 px for 512 px
frames), with localisation OFF (hyper ``use_localisation: false``: the embryo localiser
finds one cell of a brightfield scene, with high confidence, and would crop the rest away),
RPN and box NMS at 0.8 (overlapping cells), up to 40 detections per frame, the same steps
and batch size. ``--sparse-config FILE`` / ``--amodal-config FILE`` (JSON, merged into the
base config of those rows; a ``"hyper"`` key into the hyper-parameters) change the recipe,
e.g. a tiny model for a smoke test.

Every run is a ``blastoseg train`` job (``--runs DIR/<table>/<variant>``); a run whose output
weights exist is not trained again, so the script can be resumed (a row shared by two
tables is trained once). Models are registered under a private ``BLASTOSEG_HOME`` inside
``--runs`` (``--init-seunet`` and ``--overlap-model`` are resolved in the user's registry
first). Mask AP uses every prediction scoring >= 0.05; the count uses each model's own
threshold (SparseSEU-Net: its card's ``score_threshold``, 0.3; amodal: 0.5, uncalibrated;
watershed: every region). ``--json OUT`` keeps every number.

Usage (the sets of ``benchmarks/make_brightfield_data.py`` and ``benchmarks/isbi_split.py``;
the ISBI training folder is listed 4x so its 24 images are not drowned by 400 synthetic
ones)::

    I=../data/isbi_train
    for t in levels overlap baselines; do
      nice python benchmarks/brightfield_tables.py --table $t --steps 1000 --threads 1 \\
          --train ../data/bf_train,$I,$I,$I,$I --val ../data/bf_val \\
          --eval synthetic=../data/bf_val,isbi=../data/isbi_val \\
          --runs ../runs/brightfield --json ../runs/brightfield/$t.json
    done

Options: ``--init-seunet MODEL`` / ``--overlap-model MODEL`` (names or .safetensors paths),
``--prob-map NAME``, ``--only a,b`` (a subset of the rows), ``--threads N``,
``--device auto|cpu|cuda`` (training and evaluation), ``--max-images N`` (per eval set).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

#: the SparseSEU-Net's SE-U-Net heads (the contract's default), kept when the init model has them
SPARSE_HEADS = ("cytoplasm", "nuclei", "overlap")
#: CPU-sized: quarter-resolution images (cells ~22-55 px), so a 128 px crop is a whole 512 px
#: frame. At scale 0.5 the 128 px crops cut most cells and the model never saw a whole scene:
#: on full frames it found too few cells (count bias -6.0 per image on bf_val after 4,300
#: steps, against -1.7 after 800 steps at 0.25; docs/benchmarks.md)
BASE_DATA = {"crop": 128, "repeats": 4, "scale": 0.25}
#: the last weights are kept (no checkpoint picked on the held-out sets), validated once
BASE_HYPER = {"batch_size": 4, "lr": 0.001, "schedule": "cosine", "warmup_steps": 20,
              "grad_clip": 5.0, "log_every": 20, "ckpt_every": 100, "val_frames": 6,
              "final_weights": "last", "fp16_weights": True}
#: the S1 detector on brightfield frames: FCN mask head (no shape prior), no localisation
AMODAL_MODEL = {"mask_head": "fcn", "occlusion": True, "rpn_nms_thresh": 0.8,
                "box_nms_thresh": 0.8, "box_detections_per_img": 40}
AMODAL_HYPER = {"grad_clip": 10.0, "aug_strength": 1.0, "use_localisation": False,
                "weight_decay": 0.0001}
#: AmodalConfig's default anchors, tuned for a 256 px working size (scaled with it)
AMODAL_ANCHORS_256 = ((20, 28), (40, 56), (80, 112), (160, 224))
#: predictions kept for AP (AP ranks them)
AP_SCORE_THRESHOLD = 0.05


def variants(table: str, prob_map: str) -> dict[str, dict]:
    """Row name -> {"kind": "brightfield" | "amodal" | "watershed", "config": overrides,
    "run": job folder under --runs, "use_iou": score with the IoU head}."""
    def sparse(run: str, use_iou: bool = True, **model) -> dict:
        probability = {"variant": model.pop("_prob", "none")}
        return {"kind": "brightfield", "run": run, "use_iou": use_iou,
                "config": {"model": model, "probability": probability}}

    single = sparse("levels/single_level", multi_level=False)
    multi = sparse("levels/multi_level", multi_level=True)
    if table == "levels":
        return {"single_level": single, "multi_level": multi}
    if table == "baselines":
        return {"watershed": {"kind": "watershed", "run": None, "config": {}},
                "single_level": single,
                "amodal_fcn": {"kind": "amodal", "run": "baselines/amodal_fcn", "config": {}}}
    if table == "overlap":
        cond = dict(multi_level=True, overlap_conditioned=True)
        return {
            "no_overlap_head": sparse("overlap/no_overlap_head", multi_level=True,
                                      seunet={"heads": ["cytoplasm", "nuclei"]}),
            "multi_level": multi,
            "overlap_cond": sparse("overlap/overlap_cond", **cond),
            "overlap_cond_prob": sparse("overlap/overlap_cond_prob", **cond, _prob=prob_map),
            "overlap_cond_prob_iou": sparse("overlap/overlap_cond_prob_iou", **cond,
                                            iou_head=True, _prob=prob_map),
            "overlap_cond_prob_iou_unscored": sparse("overlap/overlap_cond_prob_iou",
                                                     use_iou=False, **cond, iou_head=True,
                                                     _prob=prob_map),
        }
    raise SystemExit(f"unknown table {table!r}")


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _read_json(path: Path | None) -> dict:
    if path is None:
        return {}
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise SystemExit(f"cannot read {path}: {exc}") from None
    if not isinstance(value, dict):
        raise SystemExit(f"{path} must hold a JSON object")
    return value


def resolve(name: str, kind: str) -> tuple[str, str]:
    """(display name, absolute .safetensors path) of a registered model or path."""
    from blastoseg.errors import BlastosegError
    from blastoseg.weights import resolve_model

    try:
        entry = resolve_model(name, kind=kind)
    except BlastosegError as exc:
        raise SystemExit(f"{kind} model {name!r}: {exc}") from None
    return entry.name, str(Path(entry.weights_path).resolve())


def seunet_arch(init_path: str | None) -> dict:
    """The SparseSEU-Net's SE-U-Net config: the init model's architecture (so its weights
    load), heads = SPARSE_HEADS that it has (in that order)."""
    from blastoseg.models.sparse_seunet import default_seunet_dict

    if init_path is None:
        return default_seunet_dict()
    from blastoseg.weights import resolve_model

    seu = dict((resolve_model(init_path, kind="overlap").card.config or {}).get("seunet", {}))
    heads = [h for h in SPARSE_HEADS if h in seu.get("heads", SPARSE_HEADS)]
    if "cytoplasm" not in heads:
        raise SystemExit(f"--init-seunet {init_path} has no cytoplasm head (the SparseSEU-Net "
                         f"reads the cytoplasm decoder)")
    return {**seu, "heads": heads}


def amodal_base(train: list[str], scale: float) -> dict:
    """Working size = scale x the first training frame's longer side (a multiple of 32), the
    default anchors scaled with it."""
    from blastoseg.io.dataset import read_dataset

    ds = read_dataset(train[0])
    side = max(ds.load_image(0).shape[:2])
    size = max(32, int(math.ceil(side * scale / 32.0)) * 32)
    f = size / 256.0
    anchors = [[max(2, round(a * f)) for a in level] for level in AMODAL_ANCHORS_256]
    return {**AMODAL_MODEL, "working_size": size, "anchor_sizes": anchors}


def job_config(row: dict, args) -> tuple[dict, dict]:
    """(config, hyper) of a row's training job."""
    hyper = {**BASE_HYPER, "max_steps": args.steps, "val_every": args.steps}
    if row["kind"] == "amodal":
        user = dict(args.amodal_overrides)
        scale = float((args.sparse_overrides.get("data") or {}).get("scale", BASE_DATA["scale"]))
        config = _merge({"model": amodal_base(args.train, scale)}, user)
        hyper.update(AMODAL_HYPER)
    else:
        user = dict(args.sparse_overrides)
        base = {"model": {"seunet": dict(args.seunet)}, "data": dict(BASE_DATA),
                "probability": {"variant": "none"}}
        if args.init_path:
            base["init_seunet"] = args.init_path
        config = _merge(_merge(base, user), row["config"])
    hyper.update(config.pop("hyper", {}) or {})
    return config, hyper


def train_row(name: str, row: dict, args) -> Path:
    from blastoseg.train import create_job, run_job

    job_dir = args.runs / row["run"]
    done = sorted((job_dir / "output").glob("*.safetensors")) if job_dir.is_dir() else []
    if done:
        return done[0]
    config, hyper = job_config(row, args)
    t0 = time.time()
    job = create_job(row["kind"], args.train, job_dir, val_data=args.val or None, config=config,
                     hyper=hyper, seed=args.seed, device=args.device,
                     name=f"bench-{row['run'].replace('/', '-')}", overwrite=True)
    code = run_job(job, stdout=False)
    print(f"  trained {name} in {time.time() - t0:.0f} s (exit {code})", file=sys.stderr)
    if code != 0:
        raise SystemExit(f"training {name} failed; see {job_dir}/events.jsonl")
    return sorted((job_dir / "output").glob("*.safetensors"))[0]


def evaluate_amodal_detector(weights: Path, folder: str, device: str,
                             max_images: int | None) -> dict:
    """``blastoseg eval amodal --json`` on ``folder`` (AP over scores >= 0.05; counting at
    the card's threshold)."""
    from blastoseg.io.dataset import read_dataset
    from blastoseg.metrics import evaluate_amodal
    from blastoseg.predict.amodal import AmodalPredictor

    predictor = AmodalPredictor(str(weights), device=device,
                                score_threshold=AP_SCORE_THRESHOLD)
    ds = read_dataset(folder)
    n = len(ds) if max_images is None else min(len(ds), max_images)
    gt, pred = [], []
    for i in range(n):
        gt.append(ds.instances(i))
        pred.append(predictor.predict(ds.load_image(i)))
    result = evaluate_amodal(gt, pred, score_threshold=predictor.calibrated_threshold,
                             categories=ds.categories)
    result.update({"model": predictor.entry.name, "data": str(folder),
                   "method": "amodal_maskrcnn"})
    return result


def evaluate_row(row: dict, weights: str, folder: str, args) -> dict:
    from blastoseg.predict.brightfield import BrightfieldPredictor
    from blastoseg.predict.brightfield_eval import (
        evaluate_brightfield_model,
        evaluate_watershed_baseline,
    )

    if row["kind"] == "watershed":
        return evaluate_watershed_baseline(weights, folder, device=args.device,
                                           max_images=args.max_images)
    if row["kind"] == "amodal":
        return evaluate_amodal_detector(Path(weights), folder, args.device, args.max_images)
    predictor = BrightfieldPredictor(weights, device=args.device, use_iou=row["use_iou"])
    count_threshold = predictor.score_threshold
    predictor.score_threshold = AP_SCORE_THRESHOLD
    return evaluate_brightfield_model(predictor, folder, max_images=args.max_images,
                                      score_threshold=count_threshold)


def _f(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def header(args, rows: dict) -> str:
    """The recipe line above the tables (from the configs the jobs were given)."""
    kinds = {r["kind"]: r for r in rows.values()}
    parts = [f"### {args.table}: {args.steps} steps, seed {args.seed}, trained on "
             f"{', '.join(Path(p).name for p in args.train)}"]
    if "brightfield" in kinds:
        config, hyper = job_config(kinds["brightfield"], args)
        data = config.get("data", {})
        init = (f"SE-U-Net initialised from `{args.init_name}` (init_seunet)"
                if args.init_path else "SE-U-Net trained from scratch")
        parts.append(f"SparseSEU-Net: batch {hyper['batch_size']}, {data.get('crop')} px "
                     f"crops at scale {data.get('scale')}, N = "
                     f"{config['model'].get('num_instances', 100)}, {init}")
    if "amodal" in kinds:
        config, hyper = job_config(kinds["amodal"], args)
        parts.append(f"amodal detector: batch {hyper['batch_size']}, whole frames at "
                     f"{config['model']['working_size']} px, localisation off, "
                     f"{config['model']['mask_head']} mask head, no shape prior")
    if "watershed" in kinds:
        parts.append(f"watershed on `{args.overlap_name}`'s cytoplasm and nuclei maps "
                     f"(not trained here)")
    return "; ".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table", required=True, choices=["baselines", "levels", "overlap"])
    ap.add_argument("--steps", type=int, default=1200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train", required=True, help="DIR[,DIR...] training sets (a folder "
                    "may be listed more than once to weight it)")
    ap.add_argument("--val", default="", help="validation set(s) used during training")
    ap.add_argument("--eval", required=True, help="NAME=DIR[,NAME=DIR...] held-out sets")
    ap.add_argument("--init-seunet", default="overlap-default",
                    help="overlap model every SparseSEU-Net row starts from ('none': scratch)")
    ap.add_argument("--overlap-model", default="overlap-default",
                    help="overlap model of the watershed baseline")
    ap.add_argument("--prob-map", default="combined_border_overlap",
                    help="probability-map variant of the overlap table's +prob rows")
    ap.add_argument("--sparse-config", type=Path, help="JSON merged into the SparseSEU-Net "
                    "rows' config (a 'hyper' key into the hyper-parameters)")
    ap.add_argument("--amodal-config", type=Path, help="JSON merged into the amodal row's "
                    "config (a 'hyper' key into the hyper-parameters)")
    ap.add_argument("--only", default="", help="comma-separated rows to run")
    ap.add_argument("--runs", type=Path, required=True)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--max-images", type=int, default=None, help="per eval set")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    args.runs = args.runs.resolve()
    split = lambda s: [p for p in s.split(",") if p]  # noqa: E731
    args.train = [str(Path(p).resolve()) for p in split(args.train)]
    args.val = [str(Path(p).resolve()) for p in split(args.val)]
    evals = dict(e.split("=", 1) for e in split(args.eval))
    args.sparse_overrides = _read_json(args.sparse_config)
    args.amodal_overrides = _read_json(args.amodal_config)
    rows = variants(args.table, args.prob_map)
    if args.only:
        unknown = sorted(set(split(args.only)) - set(rows))
        if unknown:
            raise SystemExit(f"unknown rows {unknown}; {args.table} has {sorted(rows)}")
        rows = {k: v for k, v in rows.items() if k in split(args.only)}
    kinds = {r["kind"] for r in rows.values()}

    # the user's models are resolved before the private registry hides them
    args.init_name, args.init_path = None, None
    if "brightfield" in kinds and args.init_seunet.lower() != "none":
        args.init_name, args.init_path = resolve(args.init_seunet, "overlap")
    args.overlap_name, overlap_path = (resolve(args.overlap_model, "overlap")
                                       if "watershed" in kinds else (None, None))
    args.seunet = seunet_arch(args.init_path) if "brightfield" in kinds else {}
    os.environ.setdefault("BLASTOSEG_HOME", str(args.runs / "home"))
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    results = {}
    for name, row in rows.items():
        print(f"{name} ...", file=sys.stderr)
        if row["kind"] == "watershed":
            weights = overlap_path
            config = {"overlap_model": args.overlap_name}
        else:
            weights = str(train_row(name, row, args))
            config, _ = job_config(row, args)
        out = {"kind": row["kind"], "run": row["run"], "config": config, "weights": weights,
               "use_iou": row.get("use_iou")}
        for set_name, folder in evals.items():
            t0 = time.time()
            out[set_name] = evaluate_row(row, weights, folder, args)
            print(f"  evaluated on {set_name} in {time.time() - t0:.0f} s", file=sys.stderr)
        results[name] = out

    print(f"\n{header(args, rows)}\n")
    for set_name in evals:
        print(f"**{set_name}** (held out; amodal mask AP, all predictions scoring >= "
              f"{AP_SCORE_THRESHOLD})\n")
        print("| variant | AP | AP50 | AP75 | AP_S | AP_M | AP_L | count exact | count MAE |")
        print("|---|---|---|---|---|---|---|---|---|")
        for name, row in results.items():
            r = row[set_name]
            print(f"| {name} | " + " | ".join(_f(r.get(k)) for k in (
                "mAP", "AP50", "AP75", "AP_S", "AP_M", "AP_L", "count_exact", "count_mae"))
                  + " |")
        print()
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"table": args.table, "steps": args.steps,
                                         "header": header(args, rows), "rows": results},
                                        indent=1, default=str))


if __name__ == "__main__":
    main()
