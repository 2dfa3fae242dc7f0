"""Verbs that make or convert data: ``synth``, ``demo``, ``import``."""

from __future__ import annotations

import argparse
from pathlib import Path

from blastoseg.commands.options import image_side, seed
from blastoseg.commands.progress import progress_printer


def _synth_embryos(args: argparse.Namespace) -> int:
    from blastoseg.synth import EmbryoConfig, write_synthetic_embryos

    config = EmbryoConfig(image_size=(args.size, args.size), mode=args.mode,
                          appearance=args.appearance, stage=args.stage)
    path = write_synthetic_embryos(
        args.out, n=args.n, seed=args.seed, timelapse=args.timelapse, config=config,
        overwrite=args.overwrite, progress=progress_printer("rendering"),
    )
    print(f"wrote {path}")
    return 0


def _parse_range(text: str, what: str) -> tuple[float, float]:
    from blastoseg.errors import BlastosegError

    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise BlastosegError(f"{what} must be two numbers LO,HI (e.g. 0,0.2); got {text!r}"
                             ) from None
    return lo, hi


def _load_translator(name: str, config=None):
    from blastoseg.errors import BlastosegError

    try:
        from blastoseg.synth.brightfield.translate import PhaseTranslator
    except ModuleNotFoundError as exc:
        if exc.name is not None and exc.name.startswith("blastoseg"):
            raise BlastosegError(
                "the pix2pix phase-to-brightfield translator is not available in this "
                "installation (blastoseg.synth.brightfield.translate is missing); run without "
                "--translator to use the physical optics model") from None
        raise
    return PhaseTranslator(name, render_config=config)


def _synth_brightfield(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from blastoseg.errors import BlastosegError
    from blastoseg.synth.brightfield import BrightfieldConfig, write_synthetic_brightfield

    config = BrightfieldConfig().for_size(args.size)
    if args.overlap is not None:
        config = replace(config, overlap=_parse_range(args.overlap, "--overlap"))
    translator = None
    if args.translator is not None:
        if args.copy_paste <= 0:
            raise BlastosegError("--translator turns copy-paste phase scenes into brightfield "
                                 "planes; give --copy-paste FRACTION > 0 as well")
        translator = _load_translator(args.translator, config)
    path = write_synthetic_brightfield(
        args.out, n=args.n, seed=args.seed, config=config, copy_paste=args.copy_paste,
        translator=translator, overwrite=args.overwrite,
        progress=progress_printer("rendering"),
    )
    print(f"wrote {path}")
    return 0


def _synth_oocytes(args: argparse.Namespace) -> int:
    from blastoseg.synth.oocyte import OocyteConfig, write_synthetic_oocytes

    config = OocyteConfig(image_size=(args.size, args.size), contrast=args.contrast,
                          label_maps=args.label_maps)
    translator = None
    if args.translator is not None:
        from blastoseg.synth.oocyte.translate import OocyteTranslator

        translator = OocyteTranslator(args.translator)
    path = write_synthetic_oocytes(args.out, n=args.n, seed=args.seed, config=config,
                                   translator=translator, overwrite=args.overwrite,
                                   progress=progress_printer("rendering"))
    print(f"wrote {path}")
    return 0


#: the model ``blastoseg demo`` segments with unless told otherwise
DEMO_MODEL = "amodal-default"


def _demo(args: argparse.Namespace) -> int:
    from blastoseg.demo import format_table, run_demo

    if args.model != DEMO_MODEL:
        # a model the user named must exist (only the default may be missing: the demo then
        # shows the synthetic truth, as a fresh install without weights would)
        from blastoseg.weights import resolve_model

        resolve_model(args.model, kind="amodal")
    result = run_demo(args.out, n_frames=args.frames, seed=args.seed, model=args.model,
                      progress=progress_printer("demo"))
    print(format_table(result))
    print(f"\noutputs in {result.out_dir}:")
    for name, path in result.outputs.items():
        print(f"  {name:<14} {path}")
    return 0


def _import_labelme(args: argparse.Namespace) -> int:
    from blastoseg.io import import_labelme

    path = import_labelme(args.source, args.out, overwrite=args.overwrite)
    print(f"wrote {path}")
    return 0


# the same names as blastoseg.synth.config.MODES / APPEARANCES (which EmbryoConfig checks); not
# imported here so that building the parser does not import numpy and scipy
_SYNTH_MODES = ("crop", "incubator", "mixed")
_SYNTH_APPEARANCES = ("default", "wide")
_SYNTH_STAGES = ("cleavage", "blastocyst", "mixed")


def add_parsers(verbs: argparse._SubParsersAction) -> None:
    synth = verbs.add_parser("synth", help="generate synthetic data in the dataset format")
    kinds = synth.add_subparsers(dest="kind", metavar="KIND")
    emb = kinds.add_parser(
        "embryos", help="synthetic day 1-3 embryos (or day 5-6 blastocysts) under relief "
                        "contrast, with amodal masks")
    emb.add_argument("--n", type=int, default=100, help="frames, or videos with --timelapse")
    emb.add_argument("--seed", type=seed, default=0, help="random seed (output is deterministic)")
    emb.add_argument("--out", required=True, type=Path, help="output dataset folder")
    emb.add_argument("--timelapse", type=int, metavar="T", default=None,
                     help="write N cleaving-embryo time-lapses of T frames each")
    emb.add_argument("--size", type=image_side, default=500, help="frame size in pixels (square)")
    emb.add_argument("--mode", choices=_SYNTH_MODES, default="crop",
                     help="crop: the embryo fills most of the frame; incubator: full incubator "
                          "frames, a small embryo inside a micro-well with a bright rim (or "
                          "beside a dish edge), text, bubbles, debris; mixed: half and half")
    emb.add_argument("--appearance", choices=_SYNTH_APPEARANCES, default="default",
                     help="default: the original look; wide: wider domain randomisation "
                          "(solid granular cells with flat contact faces, relief strength and "
                          "polarity, gamma, blur, noise, JPEG artefacts)")
    emb.add_argument("--stage", choices=_SYNTH_STAGES, default="cleavage",
                     help="cleavage: 1-8 blastomeres with amodal masks; blastocyst: day 5-6 "
                          "blastocysts (early, full, expanded, hatching; no blastomere "
                          "instances, embryo circle and stage in the image metadata); mixed: "
                          "half and half")
    emb.add_argument("--overwrite", action="store_true",
                     help="replace an existing annotations.json (the old one is kept as a backup)")
    emb.set_defaults(func=_synth_embryos)

    bf = kinds.add_parser(
        "brightfield", help="synthetic brightfield cells: phase image, two defocused focal "
                            "planes, amodal cell masks, nuclei")
    bf.add_argument("--n", type=int, default=100, help="number of scenes (two planes each)")
    bf.add_argument("--out", required=True, type=Path, help="output dataset folder")
    bf.add_argument("--size", type=image_side, default=512, help="frame size in pixels (square)")
    bf.add_argument("--seed", type=seed, default=0, help="random seed (output is deterministic)")
    bf.add_argument("--copy-paste", type=float, default=0.0, metavar="FRACTION",
                    help="fraction of scenes made by copy-paste of cut, warped cells in the "
                         "phase domain (0..1)")
    bf.add_argument("--overlap", metavar="LO,HI", default=None,
                    help="overlap ratio range of each new cell with those placed "
                         "(default 0,0.2)")
    bf.add_argument("--translator", metavar="MODEL", default=None,
                    help="registered pix2pix model that turns copy-paste phase scenes into "
                         "brightfield planes (default: the physical optics model)")
    bf.add_argument("--overwrite", action="store_true",
                    help="replace an existing annotations.json (the old one is kept as a backup)")
    bf.set_defaults(func=_synth_brightfield)

    oo = kinds.add_parser(
        "oocytes", help="synthetic MII oocytes (40x inverted brightfield or Hoffman relief) "
                        "with semantic classes: zona, perivitelline space, ooplasm, "
                        "inclusions, vacuoles, SER clusters")
    oo.add_argument("--n", type=int, default=100, help="number of oocytes")
    oo.add_argument("--seed", type=seed, default=0, help="random seed (output is deterministic)")
    oo.add_argument("--out", required=True, type=Path, help="output dataset folder")
    oo.add_argument("--size", type=image_side, default=256, help="frame size in pixels (square)")
    oo.add_argument("--contrast", choices=("hoffman", "inverted", "mixed"), default="mixed",
                    help="hoffman relief, inverted-microscope brightfield, or each drawn")
    oo.add_argument("--label-maps", choices=("realistic", "paper"), default="realistic",
                    help="realistic abnormalities, or the paper's random label maps (1-5 round "
                         "inclusions of 2-7 px at 256 x 256)")
    oo.add_argument("--translator", metavar="MODEL", default=None,
                    help="an oocyte-translator model (pix2pix, 'blastoseg train "
                         "oocyte-translator') that turns the label maps into images")
    oo.add_argument("--overwrite", action="store_true",
                    help="replace an existing annotations.json (the old one is kept as a backup)")
    oo.set_defaults(func=_synth_oocytes)

    demo = verbs.add_parser(
        "demo", help="generate a synthetic cleaving-embryo time-lapse, measure it, write outputs")
    demo.add_argument("--out", type=Path, default=Path("blastoseg_demo"), help="output folder")
    demo.add_argument("--frames", type=int, default=24, help="time-lapse length")
    demo.add_argument("--seed", type=seed, default=7, help="random seed of the synthetic embryo")
    demo.add_argument("--model", default=DEMO_MODEL,
                      help="amodal model that segments the time-lapse")
    demo.set_defaults(func=_demo)

    imp = verbs.add_parser("import", help="convert annotations from other tools")
    formats = imp.add_subparsers(dest="kind", metavar="FORMAT")
    lm = formats.add_parser("labelme", help="LabelMe polygon JSON (one file per image)")
    lm.add_argument("source", type=Path, help="a LabelMe .json file or a folder of them")
    lm.add_argument("--out", required=True, type=Path, help="output dataset folder")
    lm.add_argument("--overwrite", action="store_true",
                    help="replace an existing annotations.json (the old one is kept as a backup)")
    lm.set_defaults(func=_import_labelme)
