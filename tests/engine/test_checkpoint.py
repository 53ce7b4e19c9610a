"""Model files: safetensors only, rebuilt from the file alone, bad files named clearly."""

from __future__ import annotations

import json

import attrs
import pytest
import torch
from safetensors.torch import save_file

from ades_core import CheckpointError, load_model
from ades_core.engine.runfolder.model_files import ModelSpec, read_run_config, save_model


def _spec() -> ModelSpec:
    return ModelSpec(backbone="ades_cnn_small", num_classes=10, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


def test_a_saved_model_is_rebuilt_from_the_file_alone(tmp_path):
    torch.manual_seed(0)
    model = _spec().build().eval()
    save_model(tmp_path / "model.safetensors", model, _spec(), {"defense": "ades"})
    loaded = load_model(tmp_path)  # the run folder works as well as the file
    assert not loaded.training
    x = torch.rand(4, 3, 32, 32)
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    assert read_run_config(tmp_path / "model.safetensors") == {"defense": "ades"}


def test_a_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="no model file at"):
        load_model(tmp_path)


def test_a_truncated_file_is_a_clear_error(tmp_path):
    path = tmp_path / "model.safetensors"
    save_model(path, _spec().build(), _spec())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt|not a readable safetensors"):
        load_model(path)


def test_garbage_is_a_clear_error(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"\x80\x04\x95 this is a pickle, not safetensors")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_model(path)


def test_a_foreign_safetensors_file_is_refused(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(CheckpointError, match="not an ades model"):
        load_model(path)


def test_tampered_weights_are_refused(tmp_path):
    path = tmp_path / "model.safetensors"
    model = _spec().build()
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    state.pop("backbone.fc.weight")
    metadata = {"format": "ades", "ades_model": json.dumps(attrs.asdict(_spec()))}
    save_file(state, str(path), metadata=metadata)
    with pytest.raises(CheckpointError, match="weights do not match ades_cnn_small"):
        load_model(path)
