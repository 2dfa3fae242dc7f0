"""Read microscopy images: single files, TIFF stacks and folders of exported frames.

Everything returns numpy arrays in their stored dtype (no normalisation here; predictors
normalise). Colour files whose channels are identical (grey content exported as RGB, common
for incubator frames) come back as one grey channel, which is lossless.
"""

from __future__ import annotations

import io
import os
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from blastoseg.errors import ImageReadError
from blastoseg.io.frame_names import (
    focal_folder_value,
    frame_numbers,
    natural_key,
    parse_frame_name,
    signed_plane_numbers,
)

__all__ = [
    "SUPPORTED_EXTENSIONS",
    "ImageStack",
    "read_frame_folder",
    "read_image",
    "read_images",
]

SUPPORTED_EXTENSIONS: tuple[str, ...] = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")
_TIFF = (".tif", ".tiff")


@dataclass
class ImageStack:
    """Pixels plus where they came from.

    Attributes
    ----------
    data
        (Y, X), (Y, X, 3) for real colour, (T, Y, X) or (T, Z, Y, X) (colour stacks get a
        trailing C axis). A numpy array, or a :class:`~blastoseg.io.lazy_stack.LazyFrames`
        of that shape read frame by frame (:func:`~blastoseg.io.lazy_stack.open_images`).
    axes
        One letter per axis of ``data``: "YX", "YXC", "TYX", "ZYX", "TZYX", ...
    files
        Source files in frame order (for (T, Z, Y, X) folders: frame-major, plane-minor, the
        same order as ``data.reshape(-1, Y, X)``).
    frame_numbers
        Frame number of each T index, as parsed from the file names.
    focal_planes
        Focal plane of each Z index (e.g. [-15, 0, 15]), when known.
    pixel_size_um
        Pixel size in micrometres, from TIFF resolution / ImageJ / OME metadata when present.
    skipped
        Frames of a folder read with ``skip_unreadable=True`` that could not be read:
        (file, reason) pairs; their frames are left out of ``data``.
    """

    data: np.ndarray  # or a LazyFrames (blastoseg.io.lazy_stack.open_images)
    axes: str
    files: list[Path]
    frame_numbers: list[int] | None = None
    focal_planes: list[int] | None = None
    pixel_size_um: float | None = None
    skipped: list[tuple[Path, str]] = field(default_factory=list)


# --- single files ---------------------------------------------------------------------------

def _decoder_reason(exc: Exception) -> str:
    """The decoder's complaint, first line only: imageio appends advice to install plugins,
    which is wrong for a supported file that is simply corrupt."""
    first = (str(exc).strip().splitlines() or [""])[0]
    if "pip install" in first or not first:
        first = "the decoder could not parse it"
    return f"{type(exc).__name__}: {first}"


def _check_file(path: Path) -> None:
    if not path.exists():
        raise ImageReadError(f"{path}: no such file or folder")
    if path.is_dir():
        raise ImageReadError(f"{path}: is a folder; use read_images() or read_frame_folder()")
    if path.suffix.lower() not in SUPPORTED_EXTENSIONS:
        raise ImageReadError(
            f"{path}: unsupported file type {path.suffix or '(no extension)'!r}; "
            f"supported: {', '.join(SUPPORTED_EXTENSIONS)}"
        )
    if path.stat().st_size == 0:
        raise ImageReadError(f"{path}: the file is empty (0 bytes)")


def normalise_channels(arr: np.ndarray, *, collapse_grey: bool = True) -> np.ndarray:
    """Drop alpha and turn grey-content colour into one channel (last axis = channels).

    Only arrays whose last axis has 2-4 entries are treated as colour; (Y, X) passes through.
    """
    if arr.ndim < 3 or arr.shape[-1] not in (2, 3, 4):
        return arr
    if arr.shape[-1] == 2:  # grey + alpha
        return arr[..., 0]
    rgb = arr[..., :3]
    if collapse_grey and np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(
        rgb[..., 0], rgb[..., 2]
    ):
        return np.ascontiguousarray(rgb[..., 0])
    return np.ascontiguousarray(rgb)


def decode_image_bytes(data: bytes, name: str = "<bytes>", *, collapse_grey: bool = True
                       ) -> np.ndarray:
    """Decode an encoded PNG/JPEG/BMP/TIFF held in memory (e.g. LabelMe's ``imageData``)."""
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        import tifffile

        try:
            arr = tifffile.imread(io.BytesIO(data))
        except Exception as exc:  # decoder errors come in many classes
            raise ImageReadError(f"{name}: cannot decode TIFF data ({exc})") from exc
    else:
        import imageio.v3 as iio

        try:
            arr = iio.imread(data)
        except Exception as exc:
            raise ImageReadError(f"{name}: cannot decode image data ({_decoder_reason(exc)})") from exc
    return normalise_channels(np.asarray(arr), collapse_grey=collapse_grey)


def read_image(path: str | os.PathLike, *, collapse_grey: bool = True) -> np.ndarray:
    """Read one 2D image file (grey or colour) in its stored dtype.

    Parameters
    ----------
    path
        A .tif/.tiff/.png/.jpg/.jpeg/.bmp file holding one image.
    collapse_grey
        Return colour images whose three channels are identical as (Y, X). The dataset
        reader turns this off to give back exactly what was written.

    Returns
    -------
    numpy.ndarray
        (Y, X), or (Y, X, 3) for true colour (alpha dropped).

    Raises
    ------
    ImageReadError
        Missing file, unsupported extension, corrupt data, or a TIFF holding a stack.
    """
    path = Path(path)
    _check_file(path)
    if path.suffix.lower() in _TIFF:
        stack = _read_tiff(path, collapse_grey=collapse_grey)
        if stack.axes not in ("YX", "YXC"):
            raise ImageReadError(
                f"{path}: holds a stack of shape {stack.data.shape} (axes {stack.axes}), "
                f"expected one 2D image; use read_images() for stacks"
            )
        return stack.data
    import imageio.v3 as iio

    try:
        arr = np.asarray(iio.imread(path))
    except Exception as exc:  # corrupt/truncated files raise decoder-specific errors
        raise ImageReadError(f"{path}: cannot read image, the file may be corrupt or "
                             f"truncated ({_decoder_reason(exc)})") from exc
    if arr.ndim not in (2, 3):
        raise ImageReadError(f"{path}: expected one 2D image, got shape {arr.shape} "
                             f"(animated files are not supported)")
    return normalise_channels(arr, collapse_grey=collapse_grey)


# --- TIFF ----------------------------------------------------------------------------------

_UNIT_TO_UM = {"um": 1.0, "µm": 1.0, "\u03bcm": 1.0, "micron": 1.0, "microns": 1.0,
               "micrometer": 1.0, "nm": 1e-3, "mm": 1e3, "cm": 1e4, "m": 1e6}


def _read_tiff(path: Path, *, collapse_grey: bool = True) -> ImageStack:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tf:
            series = tf.series[0]
            data = series.asarray()
            axes = series.axes
            ij = tf.imagej_metadata or {}
            pixel_size = _tiff_pixel_size(tf, ij)
    except Exception as exc:  # tifffile raises TiffFileError, ValueError, struct errors, ...
        raise ImageReadError(f"{path}: cannot read TIFF, the file may be corrupt or not a "
                             f"TIFF ({type(exc).__name__}: {exc})") from exc
    axes = _normalise_tiff_axes(axes, ij)
    if data.ndim != len(axes):
        raise ImageReadError(f"{path}: inconsistent TIFF axes {series.axes} for shape "
                             f"{data.shape}")
    # move channels last and drop alpha / collapse grey
    if "C" in axes:
        c = axes.index("C")
        data = np.moveaxis(data, c, -1)
        axes = axes.replace("C", "") + "C"
        if data.shape[-1] not in (2, 3, 4):
            raise ImageReadError(f"{path}: {data.shape[-1]} channels are not supported; "
                                 f"expected grey or RGB(A)")
        data = normalise_channels(data, collapse_grey=collapse_grey)
        if data.ndim == len(axes) - 1:  # grey content: the channel axis is gone
            axes = axes[:-1]
    extra = [a for a in axes if a not in "TZYXC"]
    if extra:
        raise ImageReadError(f"{path}: unsupported TIFF axes {series.axes!r} (shape "
                             f"{data.shape}); expected Y, X with optional T, Z and colour")
    order = [a for a in "TZYXC" if a in axes]
    data = np.transpose(data, [axes.index(a) for a in order])
    return ImageStack(data=data, axes="".join(order), files=[path], pixel_size_um=pixel_size)


def _normalise_tiff_axes(axes: str, ij: dict) -> str:
    """Map tifffile's axis letters to T/Z/Y/X/C. Unlabelled pages ("I", "Q") are time points
    unless ImageJ metadata says they are slices."""
    axes = axes.upper().replace("S", "C")
    generic = "Z" if ij.get("slices", 1) > 1 and ij.get("frames", 1) <= 1 else "T"
    out = ""
    for a in axes:
        if a in "IQ":
            a = generic if generic not in out else ("T" if "T" not in out else a)
        out += a
    return out


def _tiff_pixel_size(tf, ij: dict) -> float | None:
    """Pixel size in µm from OME, ImageJ or plain TIFF resolution tags, if trustworthy."""
    ome = tf.ome_metadata
    if ome:
        m = re.search(r'PhysicalSizeX="([0-9.eE+-]+)"', ome)
        if m:
            unit = re.search(r'PhysicalSizeXUnit="([^"]+)"', ome)
            factor = _UNIT_TO_UM.get(unit.group(1) if unit else "µm")
            if factor:
                return float(m.group(1)) * factor
    page = tf.pages[0]
    tag = page.tags.get("XResolution")
    if tag is None:
        return None
    num, den = tag.value if isinstance(tag.value, tuple) else (tag.value, 1)
    if not num or not den:
        return None
    per_unit = den / num  # resolution is pixels per unit
    unit = str(ij.get("unit", "")).strip().lower().replace("\\u00b5", "µ")
    if unit:
        factor = _UNIT_TO_UM.get(unit)
        return per_unit * factor if factor else None
    res_unit = page.tags.get("ResolutionUnit")
    res_unit = int(res_unit.value) if res_unit is not None else 2
    size = per_unit * {2: 25400.0, 3: 10000.0}.get(res_unit, 0.0)
    # default 72/96 dpi tags give hundreds of µm per pixel: not a microscope calibration
    return size if 0 < size < 50 else None


# --- dispatch and frame folders --------------------------------------------------------------

def read_images(path: str | os.PathLike, *, skip_unreadable: bool = False) -> ImageStack:
    """Read a single image, a TIFF stack or a folder of frames.

    Parameters
    ----------
    path
        A supported image file or a folder (see :func:`read_frame_folder`).
    skip_unreadable
        For a folder: leave out frames that cannot be read (listed in ``.skipped``) instead
        of failing on the first one.
    """
    path = Path(path)
    if not path.exists():
        raise ImageReadError(f"{path}: no such file or folder")
    if path.is_dir():
        return read_frame_folder(path, skip_unreadable=skip_unreadable)
    _check_file(path)
    if path.suffix.lower() in _TIFF:
        return _read_tiff(path)
    arr = read_image(path)
    return ImageStack(data=arr, axes="YXC" if arr.ndim == 3 else "YX", files=[path])


def _image_files(folder: Path) -> list[Path]:
    """Visible files with a supported extension (others, e.g. Thumbs.db, ignored silently)."""
    return [
        p for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in SUPPORTED_EXTENSIONS
    ]


def folder_grid(folder: Path) -> tuple[dict, list[int], list, bool]:
    """Where each frame of a frame folder is, without reading any pixels: ``grids`` (focal
    plane value or None -> frame number -> file), the frame numbers in order, the plane
    values in order, and whether the frame numbers came from the file names. The layout
    errors of :func:`read_frame_folder` are raised here."""
    if not folder.exists():
        raise ImageReadError(f"{folder}: no such folder")
    if not folder.is_dir():
        raise ImageReadError(f"{folder}: is not a folder")
    subdirs = {}
    for p in folder.iterdir():
        if p.is_dir() and not p.name.startswith("."):
            value = focal_folder_value(p.name)
            if value is not None:
                subdirs[value] = p
    root_files = _image_files(folder)
    # plane value -> list of (frame number or None, path)
    planes: dict[int | None, list[tuple[int | None, Path]]] = defaultdict(list)
    if subdirs:
        if root_files:
            names = ", ".join(p.name for p in subdirs.values())
            raise ImageReadError(
                f"{folder}: holds both focal-plane folders ({names}) and loose images "
                f"(e.g. {root_files[0].name}); move the loose images into a plane folder")
        for value, sub in subdirs.items():
            files_in = _image_files(sub)
            numbers = frame_numbers([p.stem for p in files_in])
            planes[value].extend(zip(numbers, files_in, strict=True))
    else:
        parsed = [(parse_frame_name(p.stem), p) for p in root_files]
        with_focal = [p for n, p in parsed if n.focal is not None]
        if with_focal and len(with_focal) != len(parsed):
            without = next(p for n, p in parsed if n.focal is None)
            raise ImageReadError(
                f"{folder}: some file names carry a focal-plane token (e.g. "
                f"{with_focal[0].name}) and others do not (e.g. {without.name})")
        signed = None if with_focal else signed_plane_numbers([p.stem for p in root_files])
        if signed is not None:  # the focal planes of one frame (EmbryoScope: emb_-15_3AA.jpg)
            for value, p in zip(signed, root_files, strict=True):
                planes[value].append((0, p))
        by_plane: dict[int | None, list[Path]] = defaultdict(list)
        for n, p in parsed if signed is None else []:
            by_plane[n.focal].append(p)
        for value, files_in in by_plane.items():
            numbers = frame_numbers([p.stem for p in files_in])
            planes[value].extend(zip(numbers, files_in, strict=True))
    if not any(planes.values()):
        if (folder / "annotations.json").is_file():
            raise ImageReadError(f"{folder}: is a dataset folder (annotations.json), not a frame "
                                 "folder; give its images/ folder, or use a verb that reads "
                                 "datasets (eval, timeline, train)")
        raise ImageReadError(f"{folder}: no images found (supported: "
                             f"{', '.join(SUPPORTED_EXTENSIONS)})")

    numbered = all(f is not None for entries in planes.values() for f, _ in entries)
    grids: dict[int | None, dict[int, Path]] = {}
    for value, entries in planes.items():
        entries.sort(key=lambda e: natural_key(e[1].name))
        if not numbered:  # no numbers in the names: natural order is the frame order
            entries = [(i, p) for i, (_, p) in enumerate(entries)]
        grid: dict[int, Path] = {}
        for frame, p in entries:
            if frame in grid:
                where = "" if value is None else f" at focal plane {value}"
                raise ImageReadError(f"{folder}: frame {frame} appears twice{where}: "
                                     f"{grid[frame].name} and {p.name}")
            grid[frame] = p
        grids[value] = grid
    plane_values = sorted(grids, key=lambda v: (v is None, v or 0))
    frames = sorted(set().union(*(g.keys() for g in grids.values())))
    for value in plane_values:
        missing = [f for f in frames if f not in grids[value]]
        if missing:
            raise ImageReadError(
                f"{folder}: frame {missing[0]} is missing at focal plane {value} "
                f"({len(missing)} frame(s) missing there in all)")

    return grids, frames, plane_values, numbered


def read_frame_folder(folder: str | os.PathLike, *, skip_unreadable: bool = False
                      ) -> ImageStack:
    """Read a folder of exported frames into a (T, Y, X) or (T, Z, Y, X) stack.

    Frame numbers and focal planes are parsed from the file names (``RUN012``, ``frame_7``,
    ``t7``, else the last number; ``F-15`` as its own token is a focal plane), or focal planes
    are sub-folders named ``F-15``, ``F0``, ``F15``. Names whose one varying number is signed
    (``emb_-15_3AA.jpg``, ``emb_0_3AA.jpg``, ``emb_15_3AA.jpg``: an EmbryoScope export of one
    embryo's planes) are the focal planes of one frame, a (1, Z, Y, X) stack
    (:func:`~blastoseg.io.frame_names.signed_plane_numbers`). Frames are ordered by frame number, focal
    planes by value. Hidden and non-image files are ignored.

    With ``skip_unreadable`` a frame whose file (or one of its focal planes) cannot be read or
    has another size than the first good frame is left out and listed in ``.skipped``; the
    rest is read (one bad export among hundreds of frames does not stop the folder).

    Raises
    ------
    ImageReadError
        Missing or empty folder, unreadable frame (unless ``skip_unreadable``; then only when
        no frame is readable), frames of different sizes, a frame missing at one focal plane,
        or two files with the same frame number at one plane.
    """
    folder = Path(folder)
    grids, frames, plane_values, numbered = folder_grid(folder)

    skipped: list[tuple[Path, str]] = []
    files = [grids[v][f] for f in frames for v in plane_values]
    try:
        data = _stack_files(files)
    except ImageReadError:
        if not skip_unreadable:
            raise
        # only now look for the bad frames (reading each file once more), then read the rest
        frames, skipped = _readable_frames(grids, frames, plane_values)
        files = [grids[v][f] for f in frames for v in plane_values]
        data = _stack_files(files)
    nz = len(plane_values)
    focal = [v for v in plane_values if v is not None] or None
    if nz > 1:
        data = data.reshape(len(frames), nz, *data.shape[1:])
        axes = "TZYX"
    else:
        axes = "TYX"
    if data.ndim == len(axes) + 1:
        axes += "C"
    return ImageStack(data=data, axes=axes, files=files,
                      frame_numbers=frames if numbered else None, focal_planes=focal,
                      skipped=skipped)


def _readable_frames(grids: dict, frames: list[int], plane_values: list
                     ) -> tuple[list[int], list[tuple[Path, str]]]:
    """The frames whose every plane reads and has the first good frame's shape, and the
    (file, reason) of the others."""
    good: list[int] = []
    skipped: list[tuple[Path, str]] = []
    shape = None
    for f in frames:
        problem = None
        for v in plane_values:
            path = grids[v][f]
            try:
                arr = read_image(path)
            except ImageReadError as exc:
                problem = (path, str(exc))
                break
            if shape is None:
                shape = arr.shape
            elif arr.shape != shape:
                problem = (path, f"frame has shape {arr.shape}, the others {shape}")
                break
        if problem is None:
            good.append(f)
        else:
            skipped.append(problem)
    if not good:
        raise ImageReadError(f"none of the {len(frames)} frames can be read (first: "
                             f"{skipped[0][1]})")
    return good, skipped


def frame_size_error(path: Path, shape: tuple, first: Path, first_shape: tuple
                     ) -> ImageReadError:
    """The error for a frame of another size than the folder's first frame."""
    return ImageReadError(
        f"{path}: frame has shape {shape} but {first.name} has {first_shape}; "
        "all frames must have the same size (separate pictures, not the frames of one "
        "time-lapse? blastoseg.io.image_folders reads them one by one; napari and "
        "'blastoseg segment amodal' do so for a folder whose names carry no frame "
        "numbers)")


def _stack_files(files: list[Path]) -> np.ndarray:
    """Read frames into one preallocated array, checking that their shapes agree."""
    first = read_image(files[0])
    out = np.empty((len(files), *first.shape), dtype=first.dtype)
    out[0] = first
    for i, p in enumerate(files[1:], start=1):
        arr = read_image(p)
        if arr.shape != first.shape:
            raise frame_size_error(p, arr.shape, files[0], first.shape)
        if arr.dtype != out.dtype:  # promote losslessly (e.g. 8- and 16-bit frames mixed)
            out = out.astype(np.result_type(out.dtype, arr.dtype))
        out[i] = arr
    return out
