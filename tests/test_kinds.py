"""The model-kind table: every reference resolves, and the registry, CLI, training, widgets and
proposals all take their kinds from it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from blastoseg.kinds import KINDS, UnknownKindError, get_kind, import_ref, runnable_kinds

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", list(KINDS))
def test_every_reference_of_a_kind_resolves(name):
    kind = get_kind(name)
    assert kind.name == name
    card = kind.card_class()
    assert hasattr(card, "from_card")
    import_ref(kind.task)  # registers the training task
    from blastoseg.train import get_task

    assert get_task(name) is not None
    if kind.predictor is not None:
        from blastoseg.predict.base import PredictorBase

        assert issubclass(kind.predictor_class(), PredictorBase)
        assert kind.predictor_class().kind == name
        assert callable(kind.writer_function())
        module = import_ref(kind.cli)
        assert callable(module.add_segment_parser) and callable(module.add_eval_parser)
    if kind.default_model is not None:
        from blastoseg.weights import get_model

        entry = get_model(kind.default_model)
        assert entry.kind == name and entry.source == "bundled"
        assert type(card.from_card(entry.card)).__name__ == card.__name__


def test_widget_ids_are_napari_commands():
    manifest = yaml.safe_load((ROOT / "napari.yaml").read_text())
    ids = {c["id"] for c in manifest["contributions"]["commands"]}
    for kind in KINDS.values():
        if kind.widget is not None:
            assert kind.widget in ids, kind.widget


def test_an_unknown_kind_gets_a_clear_error():
    with pytest.raises(UnknownKindError, match="unknown model kind 'counting'.*amodal"):
        get_kind("counting")


def test_the_cli_offers_every_runnable_kind():
    from blastoseg.cli import build_parser

    parser = build_parser()
    verbs = parser._subparsers._group_actions[0].choices
    for verb, extra in (("segment", set()), ("eval", {"timeline"})):
        offered = set(verbs[verb]._subparsers._group_actions[0].choices)
        assert offered == set(runnable_kinds()) | extra, (verb, offered)
    assert set(verbs["calibrate"]._subparsers._group_actions[0].choices) == {"amodal", "oocyte"}


def test_training_and_the_models_list_use_the_table():
    from blastoseg.train import available_tasks

    assert set(KINDS) <= set(available_tasks())
    from blastoseg.cli import main

    with pytest.raises(SystemExit):
        main(["models", "--kind", "no-such-kind"])  # argparse refuses: choices from the table


def test_cells_are_proposed_only_by_kinds_that_say_so():
    from blastoseg.annotate.propose import load_proposal_predictor
    from blastoseg.errors import BlastosegError

    with pytest.raises(BlastosegError, match="kind 'overlap'.*amodal or brightfield"):
        load_proposal_predictor("overlap-default", device="cpu")
