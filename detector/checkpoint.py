"""Detector checkpoints: everything another tool needs to rebuild the model, loaded as data only.

Layout (the same keys Lightning writes, plus ``detector``)::

    {"state_dict": {"model.<param>": Tensor, ..., ["ema_model.module.<param>": Tensor, ...]},
     "detector": {"config": build_model kwargs (image size, mean, std included),
                  "label_map": {"category_ids": [...], "names": [...]},
                  ["weights": {"use": "ema" | "model", ...}]}}

``weights`` (training runs with an EMA, :mod:`detector.training.weights_choice`) says which copy
scored better on the validation set; loaders load that one unless told otherwise.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from detector.files import atomic_write
from detector.labels import LabelMap
from detector.modeling.ssdlite import SSDLite, build_model

MODEL_PREFIX = "model."
EMA_PREFIX = "ema_model.module."
WEIGHTS_KEY = "weights"  # detector[WEIGHTS_KEY]["use"]: the copy the run validated as better


def detector_meta(model: SSDLite, label_map: LabelMap) -> dict[str, Any]:
    """The ``detector`` entry: plain Python types only, so ``weights_only=True`` loads it."""
    config = dict(model.config)
    config["pretrained_backbone"] = "none"  # the weights travel in the checkpoint itself
    return {"config": config, "label_map": label_map.to_dict()}


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` through :func:`detector.files.atomic_write`: no half-written checkpoint."""
    with atomic_write(path) as tmp:
        torch.save(obj, tmp)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else the CPU; anything else as ``torch.device`` reads it."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def save_checkpoint(path: str | Path, model: SSDLite, label_map: LabelMap, dtype: torch.dtype | None = None) -> None:
    """Write a standalone inference checkpoint of ``model`` (atomically). ``dtype``: store the floating
    tensors in it (``torch.float16`` halves a shipped file; loading casts them back to the model's float32)."""
    state = {MODEL_PREFIX + k: v.detach().cpu() for k, v in model.state_dict().items()}
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    atomic_save({"state_dict": state, "detector": detector_meta(model, label_map)}, path)


def load_data(path: str | Path, map_location: Any = "cpu") -> Any:
    """``torch.load`` of a file from anywhere, as data only (``weights_only=True``): a pickle that
    would run code on loading is refused before any of it runs, with an error naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    with path.open("rb") as handle:
        head = handle.read(8)
    # torch.save writes a zip archive (PK..), or a bare pickle (protocol 2+: 0x80) with the legacy format.
    if not (head.startswith(b"PK") or head[:1] == b"\x80"):
        raise ValueError(f"{path}: not a PyTorch checkpoint (a torch.save file is a zip archive or a pickle; "
                         f"this one starts with {head!r})")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:
        raise ValueError(
            f"{path}: cannot be loaded as data with torch.load(weights_only=True); it is corrupt or needs "
            f"code to unpickle, which this project refuses to run ({type(error).__name__}: {error})"
        ) from error


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu", kind: str = "detector") -> dict[str, Any]:
    """Load a checkpoint file as data (:func:`load_data`); ``ValueError`` unless it holds ``state_dict``
    and the ``kind`` entry (``"detector"``, or ``"classifier"`` for :mod:`detector.pretrain`).

    ``zoo:NAME`` reads a published model of :mod:`detector.zoo` (fetched once, checksum checked,
    converted), so every loader of detector (and classifier) checkpoints takes zoo names too."""
    if kind == "detector" and str(path).startswith("zoo:"):
        from detector.zoo import zoo_checkpoint  # the zoo and its converters load only when asked for

        return zoo_checkpoint(str(path))
    if kind == "classifier" and str(path).startswith("zoo:"):
        from detector.zoo import zoo_classifier_checkpoint

        return zoo_classifier_checkpoint(str(path))
    checkpoint = load_data(path, map_location)
    if not isinstance(checkpoint, dict) or kind not in checkpoint or "state_dict" not in checkpoint:
        raise ValueError(f"{path}: not a {kind} checkpoint (no '{kind}' and 'state_dict' entries)")
    return checkpoint


def preferred_weights(checkpoint: dict[str, Any]) -> str:
    """``"ema"`` or ``"model"``: the copy the checkpoint's run scored better (``detector.weights``), else
    the EMA whenever there is one (checkpoints written before the comparison existed)."""
    entry = (checkpoint.get("detector") or {}).get(WEIGHTS_KEY) or {}
    return "model" if entry.get("use") == "model" else "ema"


def model_state_dict(checkpoint: dict[str, Any], prefer_ema: bool | None = None) -> dict[str, torch.Tensor]:
    """The model's weights from a checkpoint: the trained ones (``model.*``) or the EMA copy
    (``ema_model.module.*``, when there is one). ``prefer_ema``: ``None`` follows the checkpoint's
    record of which scored better (:func:`preferred_weights`); ``True`` / ``False`` force a copy."""
    state = checkpoint["state_dict"]
    ema = {k[len(EMA_PREFIX):]: v for k, v in state.items() if k.startswith(EMA_PREFIX)}
    if prefer_ema is None:
        prefer_ema = preferred_weights(checkpoint) == "ema"
    if prefer_ema and ema:
        return ema
    return {k[len(MODEL_PREFIX):]: v for k, v in state.items() if k.startswith(MODEL_PREFIX)}


def load_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu", prefer_ema: bool | None = None
) -> tuple[SSDLite, LabelMap]:
    """Rebuild the model of a checkpoint (ours or Lightning's ``*.ckpt``) in eval mode, with its labels;
    of a training checkpoint with an EMA, the copy its run validated as better (``prefer_ema``:
    :func:`model_state_dict`)."""
    checkpoint = read_checkpoint(path, map_location)
    meta = checkpoint["detector"]
    model = build_model(meta["config"])
    model.load_state_dict(model_state_dict(checkpoint, prefer_ema))
    return model.to(map_location).eval(), LabelMap.from_dict(meta["label_map"])
