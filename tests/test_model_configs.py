"""The card round trip every model config shares (models.configs.CardConfig): defaults,
dict -> config -> dict, and the errors for a misspelt key or a non-dict, each config's own."""

from __future__ import annotations

import json

import pytest

from blastoseg.models.cellnet import CellNetConfig, CellNetConfigError
from blastoseg.models.circle_net import CircleNetConfig, CircleNetConfigError
from blastoseg.models.configs import VQVAEConfig
from blastoseg.models.pix2pix import Pix2PixConfig
from blastoseg.models.seunet import SEUNetConfig, SEUNetConfigError
from blastoseg.models.smanet import SMANetConfig
from blastoseg.models.sparse_seunet import SparseSEUNetConfig, SparseSEUNetConfigError

CONFIGS = [(CircleNetConfig, CircleNetConfigError), (CellNetConfig, CellNetConfigError),
           (SEUNetConfig, SEUNetConfigError), (SparseSEUNetConfig, SparseSEUNetConfigError),
           (VQVAEConfig, ValueError), (SMANetConfig, ValueError), (Pix2PixConfig, ValueError)]


@pytest.mark.parametrize(("cls", "error"), CONFIGS, ids=[c.__name__ for c, _ in CONFIGS])
def test_a_config_goes_through_a_card_and_refuses_what_it_does_not_know(cls, error):
    cfg = cls()
    d = json.loads(json.dumps(cfg.to_dict()))  # JSON-safe: what a card stores
    assert cls.from_dict(d) == cfg and cls.from_dict(None) == cfg and cls.from_dict(cfg) is cfg
    first = next(iter(d))
    with pytest.raises(error, match=rf"unknown {cls.__name__} key\(s\) \['nope'\]; known keys: "
                                    rf".*'{first}'"):
        cls.from_dict({**d, "nope": 1})
    with pytest.raises(error, match=f"{cls.__name__} needs a dict, got list"):
        cls.from_dict([1])


def test_tuples_come_back_as_lists_and_positive_integers_are_checked():
    assert SEUNetConfig(heads=("cytoplasm",)).to_dict()["heads"] == ["cytoplasm"]
    assert SMANetConfig().to_dict()["widths"] == [16, 32, 64, 96, 128]
    for bad in (0, True, 2.0):
        with pytest.raises(CircleNetConfigError, match="width must be a positive integer"):
            CircleNetConfig(width=bad)
        with pytest.raises(CellNetConfigError, match="puc_width must be a positive integer"):
            CellNetConfig(puc_width=bad)
