"""Training-state files: tensors in safetensors, the rest in JSON, atomic, and never trusted blindly."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch

from ades_core.engine.runfolder.state_codec import StateCodecError, decode, encode
from ades_core.engine.runfolder.state_files import (
    NonFiniteStateError,
    TrainingStateError,
    has_training_state,
    load_training_state,
    remove_training_state,
    save_training_state,
    state_folder,
)


def _state(value: float = 1.0) -> dict:
    return {
        "position": {"epoch": 1, "step": 3, "global_step": 7},
        "model": {"w": torch.full((2, 3), value), "n": torch.tensor(5)},
        "optimizers": {
            "model": {
                "state": {0: {"momentum_buffer": torch.arange(3.0)}, 1: {"momentum_buffer": None}},
                "param_groups": [{"lr": 0.1, "betas": (0.9, 0.999), "params": [0, 1]}],
            }
        },
        "lr_schedule": {"milestones": Counter({75: 1, 90: 1}), "last_epoch": 3},
        "history": [{"epoch": 1, "sigma_mean": float("nan"), "warnings": []}],
    }


def test_a_state_round_trips_with_its_python_types(tmp_path):
    save_training_state(tmp_path, _state())
    assert has_training_state(tmp_path)
    back = load_training_state(tmp_path)
    assert torch.equal(back["model"]["w"], torch.ones(2, 3)) and back["model"]["n"].dtype == torch.int64
    optimizer = back["optimizers"]["model"]
    assert set(optimizer["state"]) == {0, 1}  # int keys stay ints
    assert optimizer["state"][1]["momentum_buffer"] is None
    assert optimizer["param_groups"][0]["betas"] == (0.9, 0.999)  # tuples stay tuples
    assert isinstance(back["lr_schedule"]["milestones"], Counter)
    assert list(back["lr_schedule"]["milestones"].elements()) == [75, 90]
    files = sorted(p.name for p in state_folder(tmp_path).iterdir())
    assert files[0] == "state.json" and files[1].startswith("tensors-") and len(files) == 2


def test_a_new_state_replaces_the_old_pair_whole(tmp_path):
    save_training_state(tmp_path, _state(1.0))
    save_training_state(tmp_path, _state(2.0))
    assert torch.equal(load_training_state(tmp_path)["model"]["w"], torch.full((2, 3), 2.0))
    assert len(list(state_folder(tmp_path).glob("tensors-*"))) == 1  # the old tensor file is gone


def test_an_object_that_would_need_pickle_is_refused():
    with pytest.raises(StateCodecError, match="cannot store a object at model/x.*nothing is pickled"):
        encode({"model": {"x": object()}}, {})


def test_decode_inverts_encode():
    tensors: dict = {}
    tree = encode(_state(), tensors)
    json.dumps(tree)  # JSON-ready
    back = decode(json.loads(json.dumps(tree)), tensors)
    assert back["position"] == _state()["position"]


def test_a_non_finite_state_is_not_written_and_the_last_good_one_stays(tmp_path):
    save_training_state(tmp_path, _state(1.0), finite=("model",))
    with pytest.raises(NonFiniteStateError, match="NaN or Inf in model/w; it was not written"):
        save_training_state(tmp_path, _state(float("nan")), finite=("model",))
    assert torch.equal(load_training_state(tmp_path)["model"]["w"], torch.ones(2, 3))


def test_no_state_is_none(tmp_path):
    assert load_training_state(tmp_path) is None


def _tensor_file(run):
    (path,) = state_folder(run).glob("tensors-*.safetensors")
    return path


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("truncate tensors", r"holds \d+ bytes but \d+ were written; it is truncated or replaced"),
        ("flip a tensor byte", "does not match the hash in .*state.json; it was modified or corrupted"),
        ("delete tensors", "named by .*state.json, is missing"),
        ("truncate json", "state.json is truncated or not JSON"),
        ("edit json", "state.json does not match its own hash; it was edited or corrupted"),
        ("foreign json", "state.json is not an ades training state"),
        ("future version", "has format version 99; this ades reads version 1"),
        ("path in json", "names an invalid tensor file"),
    ],
)
def test_damaged_state_files_are_one_clear_line(tmp_path, damage, message):
    save_training_state(tmp_path, _state())
    pointer = state_folder(tmp_path) / "state.json"
    document = json.loads(pointer.read_text())
    tensors = _tensor_file(tmp_path)
    if damage == "truncate tensors":
        tensors.write_bytes(tensors.read_bytes()[:-10])
    elif damage == "flip a tensor byte":
        data = bytearray(tensors.read_bytes())
        data[-1] ^= 0xFF
        tensors.write_bytes(bytes(data))
    elif damage == "delete tensors":
        tensors.unlink()
    elif damage == "truncate json":
        pointer.write_text(pointer.read_text()[:100])
    elif damage == "edit json":
        document["state"]["position"]["step"] = 2
        pointer.write_text(json.dumps(document))
    elif damage == "foreign json":
        pointer.write_text(json.dumps({"hello": "world"}))
    elif damage == "future version":
        document["format_version"] = 99
        pointer.write_text(json.dumps(document))
    elif damage == "path in json":
        document["tensors_file"] = "../../etc/passwd"
        pointer.write_text(json.dumps(document))
    with pytest.raises(TrainingStateError, match=message) as info:
        load_training_state(tmp_path)
    assert "\n" not in str(info.value)


def test_leftovers_of_a_crash_are_cleaned_by_the_next_save(tmp_path):
    save_training_state(tmp_path, _state())
    folder = state_folder(tmp_path)
    (folder / ".state.json.abc.tmp").write_text("{half")
    (folder / "tensors-orphan.safetensors").write_bytes(b"partial")
    save_training_state(tmp_path, _state(3.0))
    names = sorted(p.name for p in folder.iterdir())
    assert len(names) == 2 and names[0] == "state.json"
    remove_training_state(tmp_path)
    assert not folder.exists()
