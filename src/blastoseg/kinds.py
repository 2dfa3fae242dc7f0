"""The model-kind table: the one place that says what each kind of model is made of.

A *kind* ("amodal", "overlap", "brightfield", ...) is written in every model card
(``card.kind``) and every training job (``job.json: kind``). Everything that has to choose
something per kind reads :data:`KINDS` instead of comparing strings: the model registry and
``blastoseg models`` (which kinds exist), :func:`blastoseg.predict.base.load_predictor` (which
predictor a card needs), ``blastoseg train`` (which training task), ``annotate.propose``
(which kinds can propose cells), the CLI (``segment``/``eval`` verbs) and the napari widgets
(their model lists).

The parts are named as ``"module:attribute"`` strings and imported only when used, so that
reading this table imports neither torch models nor napari (``blastoseg.kinds`` is imported by
the registry, which the CLI loads on every start). Adding a kind is one :class:`ModelKind`
entry here plus the files it names; docs/model_kinds.md walks through it with the
brightfield kind as the example.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from blastoseg.errors import BlastosegError

__all__ = ["KINDS", "ModelKind", "UnknownKindError", "get_kind", "import_ref", "kind_names",
           "runnable_kinds"]


class UnknownKindError(BlastosegError):
    """A model card or job names a kind this version of blastoseg does not know."""


def import_ref(ref: str) -> object:
    """The object a ``"package.module:attribute"`` reference names (imported on demand)."""
    module, _, attr = ref.partition(":")
    obj = importlib.import_module(module)
    return getattr(obj, attr) if attr else obj


@dataclass(frozen=True)
class ModelKind:
    """What one kind of model is made of. References are ``"module:attribute"`` strings.

    Attributes
    ----------
    name
        The kind as written in model cards and job files.
    title
        What the kind does, in a user's words (shown in lists and errors).
    card
        The typed card class: ``from_card(card: ModelCard)`` reads a model card's ``config``
        once into a dataclass (architecture config, pre- and post-processing).
    task
        The module that registers the kind's :class:`~blastoseg.train.task.TrainTask` (and
        so its model builder, ``task.build_model(card.config)``).
    predictor
        The predictor class (:class:`~blastoseg.predict.base.Predictor`), None for kinds that
        are only used inside other models (a shape prior) or by ``synth`` (pix2pix).
    default_model
        The shipped model of this kind, None when there is none.
    writer
        ``write(results, out_dir, ...)``: the files of one segmentation run, the same for the
        CLI and the widgets; None for kinds without a predictor.
    cli
        The command module that adds ``blastoseg segment <kind>`` and ``blastoseg eval <kind>``
        (its ``add_segment_parser(subparsers)`` and ``add_eval_parser(subparsers)``); None:
        no such verbs.
    widget
        The napari command id of the widget that runs this kind (None: no widget).
    proposes_cells
        Whether its instances can be offered as cell proposals while labelling.
    """

    name: str
    title: str
    card: str
    task: str
    predictor: str | None = None
    default_model: str | None = None
    writer: str | None = None
    cli: str | None = None
    widget: str | None = None
    proposes_cells: bool = False

    def card_class(self) -> type:
        return import_ref(self.card)  # type: ignore[return-value]

    def predictor_class(self) -> type:
        if self.predictor is None:
            raise BlastosegError(f"{self.name!r} models ({self.title}) cannot segment images "
                                 "on their own")
        return import_ref(self.predictor)  # type: ignore[return-value]

    def writer_function(self):
        if self.writer is None:
            raise BlastosegError(f"{self.name!r} models write no segmentation results")
        return import_ref(self.writer)


KINDS: dict[str, ModelKind] = {k.name: k for k in (
    ModelKind(
        name="amodal", title="amodal blastomere instances (S1)",
        card="blastoseg.predict.cards:AmodalCard",
        task="blastoseg.train.amodal_task",
        predictor="blastoseg.predict.amodal:AmodalPredictor",
        default_model="amodal-default",
        writer="blastoseg.results.amodal:write_amodal_results",
        cli="blastoseg.commands.amodal", widget="blastoseg.segment_widget", proposes_cells=True),
    ModelKind(
        name="overlap", title="overlap probability maps (S4, SE-U-Net)",
        card="blastoseg.predict.cards:OverlapCard",
        task="blastoseg.train.overlap_task",
        predictor="blastoseg.predict.overlap:OverlapPredictor",
        default_model="overlap-default",
        writer="blastoseg.results.overlap:write_overlap_results",
        cli="blastoseg.commands.overlap", widget="blastoseg.overlap_widget"),
    ModelKind(
        name="brightfield", title="brightfield cell instances (S4, SparseSEU-Net)",
        card="blastoseg.predict.cards:BrightfieldCard",
        task="blastoseg.train.brightfield_task",
        predictor="blastoseg.predict.brightfield:BrightfieldPredictor",
        default_model="brightfield-default",
        writer="blastoseg.results.brightfield:write_brightfield_results",
        cli="blastoseg.commands.brightfield", widget="blastoseg.brightfield_widget", proposes_cells=True),
    ModelKind(
        name="shape_prior", title="VQ-VAE shape prior of the amodal mask head",
        card="blastoseg.predict.cards:ShapePriorCard",
        task="blastoseg.train.shape_prior_task",
        default_model="shape-prior-default"),
    ModelKind(
        name="pix2pix", title="pix2pix image translator for synthetic data",
        card="blastoseg.predict.cards:Pix2PixCard",
        task="blastoseg.train.pix2pix_task",
        default_model="pix2pix-brightfield"),
    ModelKind(
        name="count", title="blastomere count and centroids by density regression (S2, Cell-Net)",
        card="blastoseg.predict.cards:CountCard",
        task="blastoseg.train.count_task",
        predictor="blastoseg.predict.count:CountPredictor",
        default_model="count-default",
        writer="blastoseg.results.count:write_count_results",
        cli="blastoseg.commands.count", widget="blastoseg.timeline_widget", proposes_cells=False),
    ModelKind(
        name="localiser", title="embryo circle in a whole frame (learned localiser, CircleNet)",
        card="blastoseg.predict.cards:LocaliserCard",
        task="blastoseg.train.localiser_task",
        predictor="blastoseg.predict.learned_localiser:LocaliserPredictor",
        default_model="localiser-default",
        writer="blastoseg.results.framing:write_framing_results",
        cli="blastoseg.commands.localiser"),
    ModelKind(
        name="oocyte", title="oocyte class maps: zona, PVS, ooplasm, inclusions (S3, SMANet)",
        card="blastoseg.predict.cards:OocyteCard",
        task="blastoseg.train.oocyte_task",
        predictor="blastoseg.predict.oocyte:OocytePredictor",
        default_model="oocyte-default",
        writer="blastoseg.results.oocyte:write_oocyte_results",
        cli="blastoseg.commands.oocyte", widget="blastoseg.oocyte_widget"),
    ModelKind(
        name="oocyte-translator", title="pix2pix oocyte label map -> image translator (S3)",
        card="blastoseg.predict.cards:Pix2PixCard",
        task="blastoseg.train.oocyte_translator_task"),
)}


def get_kind(name: str) -> ModelKind:
    """The table entry of a kind, or a clear error naming the kinds that exist."""
    try:
        return KINDS[name]
    except (KeyError, TypeError):
        raise UnknownKindError(
            f"unknown model kind {name!r}; this blastoseg knows {', '.join(KINDS)}") from None


def kind_names() -> list[str]:
    """Every kind, in table order."""
    return list(KINDS)


def runnable_kinds() -> list[str]:
    """Kinds with a predictor: the ones ``segment`` and the model-run widgets offer."""
    return [k.name for k in KINDS.values() if k.predictor is not None]
