"""Option types and early checks shared by the CLI verbs: a bad value is refused by argparse
with a one-line message before any image is read or any model is loaded."""

from __future__ import annotations

import argparse
import math

__all__ = ["image_side", "max_images", "non_negative_int", "positive_float", "positive_int",
           "seed", "unit_interval"]


def unit_interval(text: str) -> float:
    """A threshold: a finite number from 0 to 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1; got {text!r}") from None
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1; got {text}")
    return value


def _whole_number(text: str, minimum: int, hint: str = "") -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= {minimum}; got "
                                         f"{text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"expected a whole number >= {minimum}; got "
                                         f"{value}{hint}")
    return value


def positive_int(text: str) -> int:
    """A count of at least 1 (e.g. a batch size)."""
    return _whole_number(text, 1)


def non_negative_int(text: str) -> int:
    """An index from 0 (e.g. a focal plane)."""
    return _whole_number(text, 0, " (planes count from 0)")


def seed(text: str) -> int:
    """A random seed: a whole number from 0 (numpy refuses negative seeds)."""
    return _whole_number(text, 0)


#: the largest synthetic frame side: what the models take (a 100000 px frame needs 75 GiB)
MAX_SIDE = 4096


def image_side(text: str) -> int:
    """A synthetic frame's side in pixels: a whole number up to :data:`MAX_SIDE` (the
    generators refuse sides that are too small themselves, with their own minimum)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of pixels; got {text!r}"
                                         ) from None
    if value > MAX_SIDE:
        raise argparse.ArgumentTypeError(f"expected at most {MAX_SIDE} pixels per side; got "
                                         f"{value}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0 (a diameter, a pixel size, minutes)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0; got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0; got {text}")
    return value


def max_images(text: str) -> int:
    """``--max-images``: at least one image (0 would evaluate nothing and print no metrics)."""
    return positive_int(text)


def frames_at_plane(stack, plane: int):
    """The frames of an :class:`~blastoseg.io.images.ImageStack` at focal plane ``plane``
    (stacks without planes are returned as they are). A plane the stack does not have is a
    clear error, not an IndexError."""
    from blastoseg.errors import InvalidImageError

    if stack.axes != "TZYX":
        if plane:
            raise InvalidImageError(f"--plane {plane}: the input has no focal planes (axes "
                                    f"{stack.axes}); leave --plane out")
        return stack.data
    n_planes = stack.data.shape[1]
    if not 0 <= plane < n_planes:
        raise InvalidImageError(f"--plane {plane}: the stack has {n_planes} focal planes "
                                f"(0 to {n_planes - 1})")
    return stack.data[:, plane]


def output_folder(text: str):
    """``--out``: a folder name that is not empty (``Path("")`` would be the current folder)."""
    from pathlib import Path

    if not text.strip():
        raise argparse.ArgumentTypeError("the output folder is empty: give a folder to write "
                                         "into")
    return Path(text)


def read_input(path, *, lazy: bool = False):
    """``read_images`` for a verb's INPUT: a frame folder with unreadable frames is read
    without them, and each left-out file is named on stderr (one bad export among hundreds
    of frames must not stop the run). ``lazy``: a frame folder or multi-page TIFF stays on
    disk, read a frame at a time (``blastoseg.io.lazy_stack.open_images``) by the verbs
    that stream their results, so memory stays flat with the stack's length."""
    import sys

    from blastoseg.io import read_images
    from blastoseg.io.lazy_stack import open_images

    stack = (open_images if lazy else read_images)(path, skip_unreadable=True)
    for file, reason in stack.skipped[:10]:
        print(f"blastoseg: warning: skipped {file.name}: {reason}", file=sys.stderr)
    if len(stack.skipped) > 10:
        print(f"blastoseg: warning: skipped {len(stack.skipped) - 10} more unreadable frame(s)",
              file=sys.stderr)
    if stack.skipped:
        print(f"blastoseg: warning: {len(stack.skipped)} frame(s) left out; the results number "
              f"the {len(stack.files) // max(1, len(stack.focal_planes or [0]))} readable "
              "frames from 0 in file order", file=sys.stderr)
    return stack


def check_frames(data) -> None:
    """Before a model is loaded: the frames' shape and dtype (``as_frames``) and, for frames
    already in memory, that every pixel is finite, so a NaN image or a 1 x 1 picture is
    refused without the seconds a model takes to load. A lazy stack's pixels are checked
    as each frame is read."""
    import numpy as np

    from blastoseg.errors import InvalidImageError
    from blastoseg.io.frames import as_frames

    frames, _ = as_frames(data)
    if isinstance(frames, np.ndarray) and np.issubdtype(frames.dtype, np.floating):
        bad = int(np.size(frames) - np.count_nonzero(np.isfinite(frames)))
        if bad:
            raise InvalidImageError(f"the input has {bad} NaN or infinite pixels; expected "
                                    "finite values (replace or mask them first)")


def add_frames_input(p: argparse.ArgumentParser, out_help: str) -> None:
    """``INPUT``, ``--out`` and ``--plane``, as every ``segment`` verb reads its frames."""
    from pathlib import Path

    p.add_argument("input", type=Path, help="an image, a TIFF stack or a folder of frames")
    p.add_argument("--out", required=True, type=output_folder, help=out_help)
    p.add_argument("--plane", type=non_negative_int, default=0,
                   help="focal-plane index for (T, Z, Y, X) input (default 0)")


def add_eval_data(p: argparse.ArgumentParser,
                  data_help: str = "dataset folder with ground truth") -> None:
    """``--data``, ``--json`` and ``--max-images``, as the ``eval`` verbs of the model kinds
    take them."""
    from pathlib import Path

    p.add_argument("--data", required=True, type=Path, help=data_help)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--max-images", type=max_images, default=None,
                   help="evaluate the first N images")


def add_model_options(p: argparse.ArgumentParser, kind: str) -> None:
    """``--model`` (the kind's shipped default; required when it has none) and ``--device``,
    as every ``segment``/``eval`` verb of a model kind takes them."""
    from blastoseg.kinds import get_kind

    default = get_kind(kind).default_model
    p.add_argument("--model", default=default, required=default is None,
                   help="registered name, .safetensors or training job folder"
                        + ("" if default is None else f" (default {default})"))
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")


def print_eval_report(result: dict, keys: tuple[str, ...], as_json: bool, heading: str) -> None:
    """What every ``eval`` verb prints: one JSON object (``--json``), or ``heading`` and one
    ``key: value`` line per key."""
    import json

    if as_json:
        print(json.dumps(result, allow_nan=False))
        return
    print(heading)
    for key in keys:
        print(f"{key}: {result.get(key)}")


def add_steady_option(p, default: int = 0) -> None:
    """``--steady N``: frame a time-lapse with the running median of the localiser's circles
    over N frames (:mod:`blastoseg.predict.steady_framing`); 0 localises each frame alone."""
    state = f"default {default}" if default else "default 0: each frame alone"
    p.add_argument("--steady", type=non_negative_int, default=default, metavar="N",
                   help="for a time-lapse of one embryo: frame each frame with the median of "
                        f"the embryo circles found in the N frames around it ({state}; 0 or "
                        "1: each frame localised alone). Never for separate pictures")


def add_flips_option(p) -> None:
    """``--flips [4|8]``: test-time flips of an amodal model (0 or absent: off; the flag
    alone: 4 copies; :mod:`blastoseg.predict.instance_flips`)."""
    p.add_argument("--flips", type=int, nargs="?", const=4, default=0, choices=(0, 4, 8),
                   metavar="N",
                   help="test-time flips: detect in each frame's 4 mirror images (--flips: "
                        "about 3x slower) or in all 8 symmetries of the square (--flips 8: "
                        "about 6x slower) and merge them; better outlines "
                        "(docs/models/amodal.md#test-time-flips)")
