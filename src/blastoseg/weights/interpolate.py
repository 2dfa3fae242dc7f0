"""Weight-space interpolation of a fine-tuned model with the model it started from.

WiSE-FT (Wortsman et al., "Robust fine-tuning of zero-shot models", CVPR 2022, eq. 1):
``theta = (1 - alpha) * theta_base + alpha * theta_tuned``. Fine-tuning from a base model
keeps both in one basin of the loss, so the straight line between them holds models that keep
most of what the base knew (here: the synthetic benchmark) while gaining much of what the
fine-tuning taught (here: real-looking frames). ``alpha = 0`` is the base, 1 the fine-tuned
model. blastoseg ships ``amodal-default`` made this way (docs/models/amodal.md) and users can do
the same after fine-tuning on their clinic's frames: ``blastoseg models interpolate``.

Only models of the same kind and architecture can be mixed (same tensor names and shapes);
floating-point tensors are interpolated, integer buffers (e.g. BatchNorm's batch counter) are
taken from the nearer model. The result gets the tuned model's card (its config: post-processing
calibrated for it), with both parents and ``alpha`` recorded in ``training.interpolation``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch

from blastoseg.weights.registry import ModelCard, ModelEntry, register_model, resolve_model
from blastoseg.weights.safetensors_io import WeightsError, load_weights, save_weights

__all__ = ["interpolate_models", "interpolate_state"]


def interpolate_state(base: dict[str, torch.Tensor], tuned: dict[str, torch.Tensor],
                      alpha: float) -> dict[str, torch.Tensor]:
    """``(1 - alpha) * base + alpha * tuned`` tensor by tensor (WiSE-FT, eq. 1).

    Raises
    ------
    WeightsError
        ``alpha`` outside [0, 1], or the two state dicts differ in names or shapes.
    """
    alpha = float(alpha)
    if not (math.isfinite(alpha) and 0.0 <= alpha <= 1.0):
        raise WeightsError(f"alpha must be a number from 0 (base) to 1 (tuned); got {alpha}")
    if set(base) != set(tuned):
        only = sorted(set(base) ^ set(tuned))[:5]
        raise WeightsError("the two models have different tensors (e.g. "
                           f"{', '.join(only)}): they are not the same architecture")
    out: dict[str, torch.Tensor] = {}
    for key, a in base.items():
        b = tuned[key]
        if a.shape != b.shape:
            raise WeightsError(f"tensor {key} is {tuple(a.shape)} in one model and "
                               f"{tuple(b.shape)} in the other: not the same architecture")
        if a.is_floating_point() and b.is_floating_point():
            mixed = (1.0 - alpha) * a.double() + alpha * b.double()
            out[key] = mixed.to(b.dtype)
        else:
            out[key] = (b if alpha >= 0.5 else a).clone()
    return out


def interpolate_models(base: str | os.PathLike, tuned: str | os.PathLike, alpha: float,
                       name: str, *, overwrite: bool = False,
                       out_dir: str | os.PathLike | None = None) -> ModelEntry | Path:
    """Mix two models of one kind and register the result as a user model ``name``.

    ``base`` and ``tuned`` are model names, ``.safetensors`` files or training job folders.
    With ``out_dir`` the weights and card are written there (``name.safetensors`` and
    ``name.json``) instead of being registered, and the weights path is returned.
    """
    a, b = resolve_model(base), resolve_model(tuned)
    if a.kind != b.kind:
        raise WeightsError(f"cannot mix a {a.kind!r} model with a {b.kind!r} model")
    arch_a = (a.card.config or {}).get("model")
    arch_b = (b.card.config or {}).get("model")
    if arch_a is not None and arch_b is not None and arch_a != arch_b:
        differ = sorted(k for k in set(arch_a) | set(arch_b) if arch_a.get(k) != arch_b.get(k))
        raise WeightsError(f"{a.name} and {b.name} are configured differently "
                           f"({', '.join(differ[:5])}): they cannot be mixed")
    state = interpolate_state(load_weights(a.weights_path), load_weights(b.weights_path), alpha)
    card = ModelCard.from_dict({**b.card.to_dict(), "name": name, "sha256": "", "created": "",
                                "metrics": {}})
    card.base_model = a.name
    card.training = {**(card.training or {}), "interpolation": {
        "method": "WiSE-FT (Wortsman et al. 2022): (1 - alpha) * base + alpha * tuned",
        "base": a.name, "base_sha256": a.card.sha256, "tuned": b.name,
        "tuned_sha256": b.card.sha256, "alpha": float(alpha)}}
    card.description = (f"{b.name} mixed with its base {a.name} in weight space, "
                        f"alpha = {float(alpha):g} (0 = base, 1 = tuned)")
    if out_dir is not None:
        from blastoseg.weights.registry import write_card
        from blastoseg.weights.safetensors_io import sha256_file

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        weights = out / f"{name}.safetensors"
        save_weights(state, weights)
        card.sha256 = sha256_file(weights)
        write_card(card, out / f"{name}.json")
        return weights
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / f"{name}.safetensors"
        save_weights(state, weights)
        return register_model(weights, card, name, overwrite=overwrite)
