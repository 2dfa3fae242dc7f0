"""The model registry: bundled models (in the package) and user / fine-tuned models.

A model is a ``NAME.safetensors`` weights file with a ``NAME.json`` model card beside it.
Bundled models live in this package folder (``blastoseg/weights/``); user and fine-tuned
models in the per-user data folder :func:`user_models_dir`:

- ``$BLASTOSEG_HOME/models`` when the ``BLASTOSEG_HOME`` environment variable is set,
- else Linux/other: ``$XDG_DATA_HOME/blastoseg/models`` or ``~/.local/share/blastoseg/models``,
- macOS: ``~/Library/Application Support/blastoseg/models``,
- Windows: ``%APPDATA%\\blastoseg\\models``.

Nothing is ever downloaded; every file is checked against the sha256 in its card.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

from blastoseg.io.atomic import atomic_write_bytes, atomic_write_text
from blastoseg.weights.safetensors_io import WeightsError, sha256_file

__all__ = [
    "CARD_FORMAT_VERSION",
    "ModelCard",
    "ModelEntry",
    "bundled_models_dir",
    "data_home",
    "delete_model",
    "get_model",
    "list_models",
    "read_card",
    "register_model",
    "rename_model",
    "resolve_model",
    "user_models_dir",
    "verify",
    "write_card",
]

CARD_FORMAT_VERSION = 1
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


# --- folders --------------------------------------------------------------------------------

def data_home() -> Path:
    """The per-user blastoseg data folder (``$BLASTOSEG_HOME`` overrides it)."""
    env = os.environ.get("BLASTOSEG_HOME")
    if env:
        return Path(env).expanduser()
    if sys.platform == "win32":
        base = os.environ.get("APPDATA")
        root = Path(base) if base else Path.home() / "AppData" / "Roaming"
    elif sys.platform == "darwin":
        root = Path.home() / "Library" / "Application Support"
    else:
        xdg = os.environ.get("XDG_DATA_HOME")
        root = Path(xdg) if xdg else Path.home() / ".local" / "share"
    return root / "blastoseg"


def user_models_dir() -> Path:
    """Where user and fine-tuned models live (created on first registration)."""
    return data_home() / "models"


def bundled_models_dir() -> Path:
    """The package folder holding bundled ``*.safetensors`` + ``*.json`` model cards."""
    return Path(__file__).resolve().parent


# --- model cards ----------------------------------------------------------------------------

@dataclass
class ModelCard:
    """What a weights file is: the JSON card stored beside it.

    Attributes
    ----------
    name, kind, version
        Registry name, model kind (``"amodal"``, ``"overlap"``, ``"brightfield"``,
        ``"count"``, ``"oocyte"``, ...) and the model's own version string.
    architecture, config
        Model class name and the config dict that rebuilds it.
    base_model
        Name or path of the weights training started from (None: from scratch).
    training_data
        ``[{"path": ..., "split": "train"|"val", "count": n}, ...]``.
    metrics
        Metric name -> value on the validation / benchmark data.
    sha256
        Hex sha256 of the weights file.
    created
        ISO-8601 UTC time.
    blastoseg_version
        Package version that wrote the card.
    training
        Hyper-parameters, steps, epochs, seed, device, time (free-form).
    description
        Free text.
    """

    name: str
    kind: str
    version: str = "1"
    architecture: str = ""
    config: dict = field(default_factory=dict)
    base_model: str | None = None
    training_data: list = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    sha256: str = ""
    created: str = ""
    blastoseg_version: str = ""
    training: dict = field(default_factory=dict)
    description: str = ""
    format_version: int = CARD_FORMAT_VERSION

    def __post_init__(self) -> None:
        if not self.created:
            self.created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        if not self.blastoseg_version:
            from blastoseg import __version__

            self.blastoseg_version = __version__

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict, source: str | os.PathLike = "") -> ModelCard:
        where = f" {source}" if source else ""
        if not isinstance(data, dict):
            raise WeightsError(f"model card{where} is not a JSON object")
        for key in ("name", "kind"):
            if not isinstance(data.get(key), str) or not data.get(key):
                raise WeightsError(f"model card{where} has no {key!r} (a non-empty string)")
        known = set(cls.__dataclass_fields__)
        unknown = {k: v for k, v in data.items() if k not in known}
        kwargs = {k: v for k, v in data.items() if k in known}
        card = cls(**kwargs)
        if unknown:  # keep forward-compatible extras in training
            card.training = {**card.training, "_extra_card_fields": unknown}
        return card


def read_card(path: str | os.PathLike) -> ModelCard:
    """Read and validate a model card JSON file."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"model card not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WeightsError(f"model card {path} is not valid JSON: {exc}") from None
    return ModelCard.from_dict(data, path)


def write_card(card: ModelCard | dict, path: str | os.PathLike) -> Path:
    """Write a model card atomically as indented JSON."""
    data = card.to_dict() if isinstance(card, ModelCard) else dict(card)
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


# --- entries --------------------------------------------------------------------------------

@dataclass
class ModelEntry:
    """One registered model: its card and where its files are."""

    name: str
    kind: str
    source: str  # "bundled" or "user"
    weights_path: Path
    card_path: Path
    card: ModelCard

    @property
    def size_bytes(self) -> int:
        try:
            return self.weights_path.stat().st_size
        except OSError:
            return 0

    def summary(self) -> str:
        metrics = ", ".join(f"{k}={v:.3g}" if isinstance(v, (int, float)) else f"{k}={v}"
                            for k, v in list(self.card.metrics.items())[:3])
        return (f"{self.name:30s} {self.kind:12s} {self.source:8s} "
                f"{self.size_bytes / 2**20:6.1f} MB  {metrics}")


def _scan(folder: Path, source: str) -> list[ModelEntry]:
    entries = []
    if not folder.is_dir():
        return entries
    for card_path in sorted(folder.glob("*.json")):
        weights = card_path.with_suffix(".safetensors")
        if not weights.is_file():
            continue
        try:
            card = read_card(card_path)
        except WeightsError as exc:
            warnings.warn(f"skipping model {card_path.stem}: {exc}", stacklevel=3)
            continue
        entries.append(ModelEntry(card_path.stem, card.kind, source, weights, card_path, card))
    return entries


def list_models(kind: str | None = None) -> list[ModelEntry]:
    """All models, bundled first then user models, optionally of one kind only."""
    entries = _scan(bundled_models_dir(), "bundled") + _scan(user_models_dir(), "user")
    if kind is not None:
        entries = [e for e in entries if e.kind == kind]
    return entries


def get_model(name: str, *, kind: str | None = None) -> ModelEntry:
    """The model called ``name`` (user models shadow nothing: names are unique).

    Raises
    ------
    WeightsError
        No such model (the message lists the available names), or it is of another kind.
    """
    models = list_models()
    for entry in models:
        if entry.name == name:
            if kind is not None and entry.kind != kind:
                raise WeightsError(
                    f"model {name!r} is a {entry.kind!r} model, but a {kind!r} model is needed"
                )
            return entry
    names = [e.name for e in models if kind is None or e.kind == kind]
    available = ", ".join(names) if names else "none"
    what = f"{kind!r} models" if kind else "models"
    raise WeightsError(
        f"no model named {name!r}. Available {what}: {available} "
        f"(user models live in {user_models_dir()})"
    )


#: the layout of a training job folder (``blastoseg train KIND --out JOB_DIR``; written by
#: blastoseg.train, which this module must not import): ``job.json``, the finished model in
#: ``output/NAME.safetensors`` + ``NAME.json``, the resume checkpoint in ``checkpoints/last.pt``
_JOB_FILE = "job.json"
_JOB_OUTPUT = "output"
_JOB_CHECKPOINT = Path("checkpoints") / "last.pt"


def _job_model(job_dir: Path, kind: str | None) -> ModelEntry:
    """The finished model of a training job folder (see :func:`resolve_model`)."""
    try:
        job = json.loads((job_dir / _JOB_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WeightsError(f"{job_dir / _JOB_FILE} cannot be read as a training job: {exc}"
                           ) from None
    job_kind = job.get("kind") if isinstance(job, dict) else None
    if kind is not None and isinstance(job_kind, str) and job_kind != kind:
        raise WeightsError(f"{job_dir} is a training job for {job_kind!r} models, but a "
                           f"{kind!r} model is needed")
    found = []
    for weights in sorted((job_dir / _JOB_OUTPUT).glob("*.safetensors")):
        card_path = weights.with_suffix(".json")
        if not card_path.is_file():
            continue
        card = read_card(card_path)
        if kind is None or card.kind == kind:
            found.append((weights, card_path, card))
    if not found:
        if (job_dir / _JOB_CHECKPOINT).is_file():
            raise WeightsError(
                f"the training job {job_dir} has not finished: it has a checkpoint "
                f"({_JOB_CHECKPOINT.as_posix()}) but no finished model in "
                f"{_JOB_OUTPUT}/. Resume it with `blastoseg train {job_dir}` until it "
                "finishes (interrupted checkpoints carry no model card, so they are not "
                "used for predictions)")
        raise WeightsError(
            f"the training job {job_dir} has no finished model in {_JOB_OUTPUT}/ (it has not "
            f"run yet?); run it with `blastoseg train {job_dir}`")
    # several models (the job was re-run under another name): the one job.json names, else
    # the newest
    wanted = job.get("output_name") if isinstance(job, dict) else None
    named = [f for f in found if f[0].stem == wanted]
    weights, card_path, card = named[0] if named else max(
        found, key=lambda f: f[0].stat().st_mtime_ns)
    return ModelEntry(weights.stem, card.kind, "file", weights, card_path, card)


def resolve_model(name_or_path: str | os.PathLike, *, kind: str | None = None) -> ModelEntry:
    """A registry name, a path to a ``.safetensors`` file with its ``.json`` card beside it,
    or a training job folder.

    A training job folder (the ``JOB_DIR`` of ``blastoseg train KIND --out JOB_DIR``, with
    its ``job.json``) gives the job's finished model, ``JOB_DIR/output/NAME.safetensors`` with
    its card (the one named by the job's ``output_name`` when several are there, else the
    newest). A job that has not finished (only a ``checkpoints/last.pt``) is an error that
    says so: its checkpoints carry no model card. The entry's ``source`` is ``"file"``.

    Raises
    ------
    WeightsError
        No such model, file or finished job, a missing card, or a model of another kind.
    """
    text = str(name_or_path)
    path = Path(text).expanduser()
    looks_like_path = text.endswith(".safetensors") or os.sep in text or "/" in text
    if path.name == _JOB_FILE and path.is_file():
        path = path.parent
        looks_like_path = True
    if path.is_dir() and (path / _JOB_FILE).is_file():
        return _job_model(path, kind)
    if looks_like_path and path.is_dir() and not path.with_suffix(".safetensors").is_file():
        raise WeightsError(
            f"{path} is a folder but not a training job folder (it has no {_JOB_FILE}); give "
            "a registered model name, a .safetensors file or the folder `blastoseg train "
            "... --out` made")
    if looks_like_path or (path.suffix and path.exists()):
        weights = path if path.suffix == ".safetensors" else path.with_suffix(".safetensors")
        if not weights.is_file():
            raise WeightsError(f"weights file not found: {weights}")
        card_path = weights.with_suffix(".json")
        card = read_card(card_path) if card_path.is_file() else None
        if card is None:
            raise WeightsError(
                f"{weights} has no model card {card_path.name} beside it; blastoseg needs the "
                "card to know the model kind and configuration"
            )
        if kind is not None and card.kind != kind:
            raise WeightsError(
                f"{weights} holds a {card.kind!r} model, but a {kind!r} model is needed"
            )
        return ModelEntry(weights.stem, card.kind, "file", weights, card_path, card)
    return get_model(text, kind=kind)


def verify(entry: ModelEntry, *, raise_error: bool = True) -> bool:
    """Check the weights file against the sha256 in its card.

    Returns True when it matches; on a mismatch (or missing checksum) raises a WeightsError,
    or returns False when ``raise_error`` is False.
    """
    expected = (entry.card.sha256 or "").lower()
    problem = None
    if not entry.weights_path.is_file():
        problem = f"weights file {entry.weights_path} is missing"
    elif not expected:
        problem = f"model card {entry.card_path} has no sha256"
    else:
        actual = sha256_file(entry.weights_path)
        if actual != expected:
            problem = (
                f"weights file {entry.weights_path} is damaged or was replaced: sha256 "
                f"{actual[:12]}... does not match {expected[:12]}... in {entry.card_path.name}"
            )
    if problem is None:
        return True
    if raise_error:
        raise WeightsError(problem)
    return False


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise WeightsError(
            f"invalid model name {name!r}: use letters, digits, '.', '_' and '-' "
            "(at most 100 characters, starting with a letter or digit)"
        )
    return name


def _user_entry(name: str) -> ModelEntry:
    entry = get_model(name)
    if entry.source != "user":
        raise WeightsError(
            f"model {name!r} is bundled with blastoseg and cannot be changed or deleted; "
            "register a copy under another name instead"
        )
    return entry


def register_model(
    weights_path: str | os.PathLike,
    card: ModelCard | dict | str | os.PathLike | None = None,
    name: str | None = None,
    *,
    overwrite: bool = False,
) -> ModelEntry:
    """Copy a weights file and its card into the user models folder.

    Parameters
    ----------
    weights_path
        A ``.safetensors`` file.
    card
        Its model card (ModelCard, dict, or path to the JSON); default: the ``.json`` beside
        ``weights_path``.
    name
        Registry name; default the card's name.
    overwrite
        Replace an existing user model of that name (bundled ones are never replaced).

    Raises
    ------
    WeightsError
        Not a readable safetensors file, sha256 differs from the card's, or the name is taken.
    """
    from blastoseg.weights.safetensors_io import read_metadata

    weights_path = Path(weights_path)
    read_metadata(weights_path)  # validates the safetensors header (clear error otherwise)
    if card is None:
        card = weights_path.with_suffix(".json")
    if isinstance(card, (str, os.PathLike)):
        card = read_card(card)
    elif isinstance(card, dict):
        card = ModelCard.from_dict(card)
    else:
        card = ModelCard.from_dict(card.to_dict())
    data = weights_path.read_bytes()

    actual = hashlib.sha256(data).hexdigest()
    if card.sha256 and card.sha256.lower() != actual:
        raise WeightsError(
            f"{weights_path} does not match its model card: sha256 {actual[:12]}... vs "
            f"{card.sha256[:12]}... (the file was changed or damaged after the card was written)"
        )
    card.sha256 = actual
    name = _check_name(name or card.name)
    card.name = name
    for entry in list_models():
        if entry.name == name:
            if entry.source == "bundled":
                raise WeightsError(f"{name!r} is the name of a bundled model; choose another")
            if not overwrite:
                raise WeightsError(
                    f"a user model named {name!r} exists already; choose another name, "
                    "rename or delete it, or pass overwrite=True"
                )
    folder = user_models_dir()
    dest = folder / f"{name}.safetensors"
    atomic_write_bytes(dest, data)
    card_path = write_card(card, folder / f"{name}.json")
    return ModelEntry(name, card.kind, "user", dest, card_path, card)


def rename_model(old: str, new: str) -> ModelEntry:
    """Rename a user model (bundled models refuse)."""
    entry = _user_entry(old)
    _check_name(new)
    if any(e.name == new for e in list_models()):
        raise WeightsError(f"cannot rename {old!r}: a model named {new!r} exists already")
    folder = entry.weights_path.parent
    new_weights = folder / f"{new}.safetensors"
    new_card_path = folder / f"{new}.json"
    card = entry.card
    card.name = new
    os.replace(entry.weights_path, new_weights)
    write_card(card, new_card_path)
    entry.card_path.unlink(missing_ok=True)
    return ModelEntry(new, card.kind, "user", new_weights, new_card_path, card)


def delete_model(name: str) -> None:
    """Delete a user model's weights and card (bundled models refuse). A user model whose
    card is broken (unreadable, so not listed) can still be deleted by its name."""
    try:
        entry = _user_entry(name)
    except WeightsError:
        folder = user_models_dir()
        _check_name(name)
        card, weights = folder / f"{name}.json", folder / f"{name}.safetensors"
        if not (card.exists() or weights.exists()) or \
                any(e.name == name for e in _scan(bundled_models_dir(), "bundled")):
            raise
        card.unlink(missing_ok=True)
        weights.unlink(missing_ok=True)
        return
    entry.card_path.unlink(missing_ok=True)
    entry.weights_path.unlink(missing_ok=True)
