"""``blastoseg models``: list, show, verify, import, rename, delete and interpolate models."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _list(args: argparse.Namespace) -> int:
    from blastoseg.weights import list_models, user_models_dir

    entries = list_models(kind=args.kind)
    if not entries:
        print(f"no models yet (user models live in {user_models_dir()})")
        return 0
    print(f"{'name':30s} {'kind':12s} {'source':8s} {'size':>9s}  metrics")
    for entry in entries:
        print(entry.summary())
    return 0


def _show(args: argparse.Namespace) -> int:
    from blastoseg.weights import get_model

    entry = get_model(args.name)
    print(json.dumps(json.loads(entry.card_path.read_text()), indent=2))
    print(f"weights: {entry.weights_path}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from blastoseg.predict.base import check_model_loads
    from blastoseg.weights import get_model, verify

    verify(get_model(args.name))
    print(f"{args.name}: sha256 matches its model card")
    print(check_model_loads(args.name))
    return 0


def _import(args: argparse.Namespace) -> int:
    from blastoseg.train.finetune import import_model

    entry = import_model(Path(args.weights), name=args.name, overwrite=args.overwrite)
    print(f"registered {entry.name} ({entry.kind}) in {entry.weights_path.parent}")
    return 0


def _rename(args: argparse.Namespace) -> int:
    from blastoseg.weights import rename_model

    rename_model(args.old, args.new)
    print(f"renamed {args.old} -> {args.new}")
    return 0


def _delete(args: argparse.Namespace) -> int:
    from blastoseg.weights import delete_model

    if not args.yes:
        try:
            answer = input(f"delete model {args.name!r}? [y/N] ").strip().lower()
        except EOFError:  # no terminal (a script, `< /dev/null`): never delete unasked
            print(f"\nkept {args.name!r}: no answer on stdin; pass --yes to delete without "
                  "asking")
            return 1
        if answer not in ("y", "yes"):
            print("kept")
            return 1
    delete_model(args.name)
    print(f"deleted {args.name}")
    return 0


def _interpolate(args: argparse.Namespace) -> int:
    from blastoseg.weights.interpolate import interpolate_models

    result = interpolate_models(args.base, args.tuned, args.alpha, args.name,
                                overwrite=args.overwrite, out_dir=args.out)
    where = result if args.out else result.weights_path
    print(f"{args.name}: (1 - {args.alpha:g}) x {args.base} + {args.alpha:g} x {args.tuned} "
          f"-> {where}")
    return 0


def add_parsers(verbs: argparse._SubParsersAction) -> None:
    from blastoseg.kinds import kind_names

    p = verbs.add_parser("models", help="list, show, verify, import, rename or delete models")
    p.add_argument("--kind", choices=kind_names(), help="only models of this kind")
    p.set_defaults(func=_list)
    sub = p.add_subparsers(dest="action", metavar="ACTION")
    ls = sub.add_parser("list", help="bundled and user models (default)")
    ls.add_argument("--kind", choices=kind_names(), help="only models of this kind")
    ls.set_defaults(func=_list)
    show = sub.add_parser("show", help="print a model card")
    show.add_argument("name")
    show.set_defaults(func=_show)
    ver = sub.add_parser("verify", help="check a model's weights against its card's sha256 "
                         "and that they load into the network its card describes")
    ver.add_argument("name")
    ver.set_defaults(func=_verify)
    imp = sub.add_parser("import", help="register a .safetensors (its .json card beside it) "
                         "or the model of a finished training job folder")
    imp.add_argument("weights", help="a .safetensors file, or a job folder (e.g. trained on a "
                     "GPU server and copied back)")
    imp.add_argument("--name")
    imp.add_argument("--overwrite", action="store_true")
    imp.set_defaults(func=_import)
    ren = sub.add_parser("rename", help="rename a user model")
    ren.add_argument("old")
    ren.add_argument("new")
    ren.set_defaults(func=_rename)
    rm = sub.add_parser("delete", help="delete a user model")
    rm.add_argument("name")
    rm.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    rm.set_defaults(func=_delete)
    mix = sub.add_parser(
        "interpolate", help="mix a fine-tuned model with its base in weight space (WiSE-FT): "
        "keeps what the base knew while keeping much of what fine-tuning taught")
    mix.add_argument("base", help="the model fine-tuning started from (name, file or job)")
    mix.add_argument("tuned", help="the fine-tuned model (name, .safetensors or job folder)")
    mix.add_argument("--alpha", type=float, required=True,
                     help="0 = the base, 1 = the tuned model (e.g. 0.3-0.5)")
    mix.add_argument("--name", required=True, help="name of the new model")
    mix.add_argument("--out", type=Path, default=None,
                     help="write NAME.safetensors and NAME.json here instead of registering")
    mix.add_argument("--overwrite", action="store_true")
    mix.set_defaults(func=_interpolate)
