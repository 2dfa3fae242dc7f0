"""Issue 18: an EmbryoScope folder of one embryo's focal planes (``good_23765483_-15_3AA.jpg``
... ``good_23765483_15_3AA.jpg``) failed with "frame 15 appears twice": the reader took the
plane offset for a frame number and lost its sign. It reads as the focal planes of one frame.
"""

from __future__ import annotations

import numpy as np
import pytest

PLANES = (-45, -30, -15, 0, 15, 30, 45)


def _write(folder, names_values):
    import imageio.v3 as iio

    folder.mkdir()
    for name, value in names_values:
        iio.imwrite(folder / name, np.full((16, 16), value, np.uint8))
    return folder


def test_signed_plane_offsets_read_as_focal_planes_of_one_frame(tmp_path):
    from blastoseg.io import read_images
    from blastoseg.io.image_folders import folder_layout

    # JPEG like the EmbryoScope export; each plane a distinct grey so the order shows
    folder = _write(tmp_path / "embryo", [(f"good_23765483_{z}_3AA.jpg", 100 + z)
                                          for z in PLANES])
    stack = read_images(folder)
    assert stack.axes == "TZYX" and stack.data.shape == (1, 7, 16, 16)
    assert stack.focal_planes == list(PLANES) and stack.frame_numbers == [0]
    assert [f.name for f in stack.files] == [f"good_23765483_{z}_3AA.jpg" for z in PLANES]
    means = stack.data[0].reshape(7, -1).mean(axis=1)
    assert np.allclose(means, [100 + z for z in PLANES], atol=2)  # plane -15 is not plane 15
    layout = folder_layout(folder)
    assert not layout.separate and "focal planes" in layout.reason


def test_names_helpers():
    from blastoseg.io.frame_names import frame_numbers, signed_plane_numbers

    stems = [f"good_23765483_{z}_3AA" for z in PLANES]
    assert signed_plane_numbers(stems) == list(PLANES)
    # unsigned numbers stay frame numbers; a '-' joining words is not a sign
    assert signed_plane_numbers(["emb_0_3AA", "emb_15_3AA", "emb_30_3AA"]) is None
    assert frame_numbers(["emb_0_3AA", "emb_15_3AA", "emb_30_3AA"]) == [0, 15, 30]
    assert signed_plane_numbers(["embryo-1", "embryo-2", "embryo-3"]) is None
    assert signed_plane_numbers(["run_-1", "frame_2"]) is None  # frame tokens win


@pytest.mark.parametrize("cli_plane, value", [(0, 55), (3, 100), (6, 145)])
def test_cli_plane_picks_the_offset(tmp_path, cli_plane, value):
    from blastoseg.commands.options import frames_at_plane
    from blastoseg.io import read_images

    folder = _write(tmp_path / "e", [(f"good_1_{z}_3AA.png", 100 + z) for z in PLANES])
    frames = frames_at_plane(read_images(folder), cli_plane)
    assert frames.shape == (1, 16, 16) and frames.mean() == value
