"""Weights and model registry: bundled ``*.safetensors`` + ``*.json`` model cards live in this
folder; user and fine-tuned models in the per-user data folder (see :mod:`.registry`)."""

from blastoseg.weights.registry import (
    ModelCard,
    ModelEntry,
    bundled_models_dir,
    data_home,
    delete_model,
    get_model,
    list_models,
    read_card,
    register_model,
    rename_model,
    resolve_model,
    user_models_dir,
    verify,
    write_card,
)
from blastoseg.weights.safetensors_io import (
    WeightsError,
    check_state_dict,
    load_into_model,
    load_weights,
    read_metadata,
    save_weights,
    sha256_file,
)

__all__ = [
    "ModelCard",
    "ModelEntry",
    "WeightsError",
    "bundled_models_dir",
    "check_state_dict",
    "data_home",
    "delete_model",
    "get_model",
    "list_models",
    "load_into_model",
    "load_weights",
    "read_card",
    "read_metadata",
    "register_model",
    "rename_model",
    "resolve_model",
    "save_weights",
    "sha256_file",
    "user_models_dir",
    "verify",
    "write_card",
]
