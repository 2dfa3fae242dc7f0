"""Parse frame numbers and focal planes out of the file names incubator systems export.

Examples of names handled::

    embryo_F0_0001.jpg                       -> frame 1, focal plane 0
    frame_0007_F-15.png                      -> frame 7, focal plane -15
    D2020.01.02_S0123_I3_WELL4_RUN012_F15.JPG -> frame 12, focal plane 15
    F-15/                                    -> a folder holding the frames of plane -15
    good_23765483_-15_3AA.jpg (with ..._0_..., ..._15_...) -> focal plane -15 of one frame

A number that varies from file to file and is negative in some names (``_-15_``: a minus
after a delimiter) is a signed focal-plane offset, never a frame number: frame numbers do not
go below 0. EmbryoScope exports of one embryo's planes are named that way
(:func:`signed_plane_numbers`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["FrameName", "focal_folder_value", "frame_numbers", "has_frame_token", "natural_key",
           "parse_frame_name", "signed_plane_numbers"]

# A focal token is "F" + signed integer standing as its own token: delimited by "_", "-",
# whitespace, "." or the string ends, so the "F" in words like "Frame" or "WELLF2" is ignored.
_DELIM = r"[_\-\s.]"
# At most three digits and no leading zero: incubators write F-45..F45, while "F0001" is a
# zero-padded frame counter, not a focal plane.
_FOCAL = re.compile(rf"(?:^|(?<={_DELIM}))F([+-]?(?:0|[1-9]\d{{0,2}}))(?=$|{_DELIM})")
_RUN = re.compile(r"RUN[_\-]?(\d+)", re.IGNORECASE)
_FRAME = re.compile(rf"(?:^|(?<={_DELIM})|(?<=[a-z]))frame[_\-\s]?(\d+)", re.IGNORECASE)
_T = re.compile(rf"(?:^|(?<={_DELIM}))t[_\-]?(\d+)(?=$|{_DELIM})", re.IGNORECASE)
_INT = re.compile(r"\d+")
_FOCAL_FOLDER = re.compile(r"^F([+-]?\d+)$")


@dataclass(frozen=True)
class FrameName:
    """What a frame's file name says: its frame number and focal plane (None when absent)."""

    frame: int | None
    focal: int | None


def parse_frame_name(stem: str) -> FrameName:
    """Frame number and focal plane from a file name without its extension.

    The frame number is taken from ``RUN<n>``, else ``frame<n>`` / ``t<n>``, else the last
    integer group that is not part of the focal token.

    Parameters
    ----------
    stem
        File name without extension, e.g. ``"frame_0007_F-15"``.
    """
    focal_match = _FOCAL.search(stem)
    focal = int(focal_match.group(1)) if focal_match else None
    # the focal token's span is excluded from frame-number candidates
    span = focal_match.span() if focal_match else (-1, -1)

    def outside(m: re.Match) -> bool:
        return m.end() <= span[0] or m.start() >= span[1]

    for pattern in (_RUN, _FRAME, _T):
        hits = [m for m in pattern.finditer(stem) if outside(m)]
        if hits:
            return FrameName(int(hits[-1].group(1)), focal)
    ints = [m for m in _INT.finditer(stem) if outside(m)]
    return FrameName(int(ints[-1].group(0)) if ints else None, focal)


def _free_ints(stem: str, signed: bool = False) -> list[int]:
    """The integer groups outside the focal token; with ``signed``, one right after a minus
    that follows a delimiter (or starts the name), as in ``_-15_``, is negative."""
    focal_match = _FOCAL.search(stem)
    span = focal_match.span() if focal_match else (-1, -1)
    out = []
    for m in _INT.finditer(stem):
        if not (m.end() <= span[0] or m.start() >= span[1]):
            continue
        i = m.start()
        minus = signed and i >= 1 and stem[i - 1] == "-" and (
            i == 1 or re.match(_DELIM, stem[i - 2]) is not None)
        out.append(-int(m.group(0)) if minus else int(m.group(0)))
    return out


def signed_plane_numbers(stems: list[str]) -> list[int] | None:
    """The focal planes of names that number them with a signed offset (``emb_-15_3AA``,
    ``emb_0_3AA``, ``emb_15_3AA``): the one integer group that varies from name to name, when
    it is negative in some of them. None when the names carry frame or focal tokens, differ in
    their number of integer groups, or no varying group goes below 0 (then they are frames)."""
    if len(stems) < 2 or any(has_frame_token(s) for s in stems):
        return None
    groups = [_free_ints(s, signed=True) for s in stems]
    if len({len(g) for g in groups}) != 1 or not groups[0]:
        return None
    varying = [k for k in range(len(groups[0])) if len({g[k] for g in groups}) > 1]
    if len(varying) != 1 or min(g[varying[0]] for g in groups) >= 0:
        return None
    return [g[varying[0]] for g in groups]


def frame_numbers(stems: list[str]) -> list[int | None]:
    """Frame numbers of a whole folder's names, looking at them together.

    Explicit tokens (``RUN<n>``, ``frame<n>``, ``t<n>``) win. Otherwise, when every name has
    the same number of integer groups, the frame number is the last group whose value
    changes from file to file, so constant numbers such as a well number
    (``img_001_well4``, ``img_002_well4``) are not mistaken for the frame.
    """
    parsed = [parse_frame_name(s) for s in stems]
    explicit = [any(p.search(s) for p in (_RUN, _FRAME, _T)) for s in stems]
    if all(explicit) or len(stems) < 2:
        return [p.frame for p in parsed]
    groups = [_free_ints(s) for s in stems]
    if len({len(g) for g in groups}) != 1 or not groups[0]:
        return [p.frame for p in parsed]
    varying = [k for k in range(len(groups[0])) if len({g[k] for g in groups}) > 1]
    if not varying:
        return [p.frame for p in parsed]
    return [g[varying[-1]] for g in groups]


def has_frame_token(stem: str) -> bool:
    """Whether a file name says it is a frame of a time-lapse: ``RUN<n>``, ``frame<n>``,
    ``t<n>`` or a focal-plane token (a plain trailing number, as in ``embryo_007``, does not:
    a folder of separate pictures is numbered that way too)."""
    return bool(_FOCAL.search(stem)) or any(p.search(stem) for p in (_RUN, _FRAME, _T))


def focal_folder_value(name: str) -> int | None:
    """Focal plane of a sub-folder named like ``F-15``, ``F0`` or ``F+15``; None otherwise."""
    m = _FOCAL_FOLDER.match(name)
    return int(m.group(1)) if m else None


def natural_key(text: str) -> tuple:
    """Sort key ordering digit runs by value, so ``frame_2`` sorts before ``frame_10``."""
    parts = re.split(r"(\d+)", text)
    return tuple((0, int(p), p) if p.isdigit() else (1, 0, p.lower()) for p in parts if p != "")
