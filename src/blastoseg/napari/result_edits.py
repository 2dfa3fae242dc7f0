"""Has the user corrected a result's layers since they were written? And keep them if so.

Running Segment again on an image replaces its result layers (a re-run must not pile up
layers). Corrections painted into the amodal layers would then go silently (issue 18 item 2),
so every result layer remembers a digest of the data it was written with
(:func:`remember_written`); :func:`edited_layers` compares it with the data now, and
:func:`keep_as_corrected` moves a corrected result out of the way under a new group name, so
the next run cannot replace it. Pure functions over duck-typed layers (``.name``,
``.metadata``, ``.data``), no Qt.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

import numpy as np

from blastoseg.napari._ui import layer_tag, retag

__all__ = ["corrected_group_name", "data_digest", "edited_layers", "keep_as_corrected",
           "remember_written"]

#: the roles whose data a user corrects (the others are derived from them or from the image)
EDITABLE_ROLES = ("amodal", "visible")


def data_digest(data) -> str:
    """A digest of layer data: equal data, equal digest (a compressed stack hashes its
    compressed frames, which zlib makes the same for the same content, so a long stack is
    never decoded for this)."""
    h = hashlib.blake2b(digest_size=16)
    digest = getattr(data, "digest", None)
    if callable(digest):
        h.update(digest().encode())
    else:
        arr = np.ascontiguousarray(np.asarray(data))
        h.update(f"{arr.shape}{arr.dtype}".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def remember_written(layer) -> None:
    """Record what a result layer holds now, as written by blastoseg (not by the user)."""
    if layer_tag(layer).get("role") in EDITABLE_ROLES:
        retag(layer, written_digest=data_digest(layer.data))


def edited_layers(layers: Iterable) -> list:
    """The layers whose data differ from what blastoseg wrote into them (layers written
    before digests were kept count as not edited: nothing to compare with)."""
    out = []
    for la in layers:
        tag = layer_tag(la)
        written = tag.get("written_digest")
        if tag.get("role") in EDITABLE_ROLES and written and data_digest(la.data) != written:
            out.append(la)
    return out


def corrected_group_name(group: str, taken: Iterable[str]) -> str:
    """A free group name for a corrected result: "corrected <group>", then "corrected
    <group> (2)", ... (it starts with "corrected", so it differs from the result at its
    start: napari elides long layer names in the middle)."""
    taken = set(taken)
    name, k = f"corrected {group}", 2
    while name in taken:
        name, k = f"corrected {group} ({k})", k + 1
    return name


def keep_as_corrected(layers: Sequence, taken_groups: Iterable[str]) -> str:
    """Move a result's layers to a new group, so that the next run of its widget does not
    replace them; returns the new group's name.

    Each layer keeps its role, data and source image; its name's group prefix
    (``"<group>: "``) becomes the new group's, and its digest is refreshed (the kept
    corrections are now what the layer was "written" with)."""
    if not layers:
        raise ValueError("no layers to keep")
    group = str(layer_tag(layers[0]).get("group") or layers[0].name)
    new = corrected_group_name(group, taken_groups)
    prefix = f"{group}: "
    for la in layers:
        name = str(la.name)
        la.name = new + name[len(group):] if name.startswith(prefix) else f"{new}: {name}"
        retag(la, group=new, source_image=layer_tag(la).get("source_image") or group)
        remember_written(la)
    return new
