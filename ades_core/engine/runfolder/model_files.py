"""Model files: weights in safetensors, with what is needed to rebuild the model in its metadata.

No pickle anywhere: a ``model.safetensors`` holds tensors and string metadata
only, so loading someone else's file cannot run their code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from ades_core.backbones import create_classifier
from ades_core.engine.runfolder.atomic_files import atomic_write
from ades_core.errors import AdesError

MODEL_FILE = "model.safetensors"
BEST_MODEL_FILE = "model-best.safetensors"
EMA_MODEL_FILE = "model-ema.safetensors"
WEIGHT_FILES: dict[str, str] = {"last": MODEL_FILE, "best": BEST_MODEL_FILE, "ema": EMA_MODEL_FILE}
"""The model files of a run folder by which weights they hold: the last epoch's, the best
epoch's on robust validation accuracy (``--val-split``), the weight average (``--ema``)."""
FORMAT_VERSION = "1"
_SPEC_KEY = "ades_model"
_CONFIG_KEY = "ades_run_config"


class CheckpointError(AdesError, ValueError):
    """A model file that is missing, truncated, tampered with or not ades's; one line."""


@attrs.frozen(kw_only=True)
class ModelSpec:
    """Everything needed to rebuild a classifier: ``create_classifier(**spec)``."""

    backbone: str
    num_classes: int
    mean: tuple[float, ...] = attrs.field(converter=tuple)
    std: tuple[float, ...] = attrs.field(converter=tuple)
    drop_rate: float = 0.0

    def build(self) -> nn.Module:
        return create_classifier(
            self.backbone,
            num_classes=self.num_classes,
            mean=self.mean,
            std=self.std,
            drop_rate=self.drop_rate,
        )


def save_model(
    path: Path, model: nn.Module, spec: ModelSpec, run_config: dict[str, Any] | None = None
) -> None:
    """Write ``model``'s weights and ``spec`` (and the run's config) to ``path`` atomically."""
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    metadata = {
        "format": "ades",
        "format_version": FORMAT_VERSION,
        _SPEC_KEY: json.dumps(attrs.asdict(spec)),
    }
    if run_config is not None:
        metadata[_CONFIG_KEY] = json.dumps(run_config)
    atomic_write(Path(path), lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def resolve_model_file(path: str | Path, weights: str = "last") -> Path:
    """A run folder (its ``weights`` model file, :data:`WEIGHT_FILES`) or a ``.safetensors``
    file -> the model file; missing ones raise."""
    path = Path(path).expanduser()
    if weights not in WEIGHT_FILES:
        raise CheckpointError(f"--weights {weights!r} is not one of: {', '.join(WEIGHT_FILES)}")
    if path.is_dir():
        path = path / WEIGHT_FILES[weights]
        if not path.is_file() and weights != "last":
            option = "--val-split N" if weights == "best" else "--ema DECAY"
            raise CheckpointError(f"no {path.name} in {path.parent}: the run kept no {weights} weights (train with {option})")
    elif weights != "last":
        raise CheckpointError(f"--weights {weights} selects a file in a run folder; {path} is not a folder")
    if not path.is_file():
        raise CheckpointError(f"no model file at {path} (give a run folder or a .safetensors file)")
    return path


def read_metadata(path: str | Path) -> dict[str, str]:
    """The string metadata of an ades model file."""
    file = resolve_model_file(path)
    try:
        with safe_open(str(file), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{file} is not a readable safetensors file: {exc}") from None
    if metadata.get("format") != "ades" or _SPEC_KEY not in metadata:
        raise CheckpointError(f"{file} is a safetensors file but not an ades model (no ades metadata)")
    return metadata


def read_spec(path: str | Path) -> ModelSpec:
    metadata = read_metadata(path)
    try:
        return ModelSpec(**json.loads(metadata[_SPEC_KEY]))
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{resolve_model_file(path)}: corrupt model metadata: {exc}") from None


def read_run_config(path: str | Path) -> dict[str, Any] | None:
    """The run config stored beside the weights, or ``None``."""
    raw = read_metadata(path).get(_CONFIG_KEY)
    return None if raw is None else json.loads(raw)


def load_model(path: str | Path, *, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the classifier from a run folder or ``model.safetensors`` alone.

    Returns the model in eval mode on ``device``, taking ``(B, 3, H, W)``
    inputs in [0, 1] (normalisation is inside the model).

    Raises:
        CheckpointError: missing, truncated, tampered or foreign file.
    """
    file = resolve_model_file(path)
    spec = read_spec(file)
    try:
        tensors = load_file(str(file))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{file} is truncated or corrupt: {exc}") from None
    model = spec.build()
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise CheckpointError(f"{file}: weights do not match {spec.backbone}: {first}") from None
    return model.to(device).eval()
