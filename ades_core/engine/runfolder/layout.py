"""The files of a run folder, by name: whether a folder holds a run, and how one is cleared.

Run folder (``out``)::

    config.json          the resolved config (the scheduler named even when the defense chose it)
                         and what the builder chose (``resolved``)           config_file.py
    metrics.jsonl        one JSON object per finished epoch
    telemetry.jsonl      one JSON object per finished epoch: the budgets' distribution (engine/telemetry.py)
    model.safetensors    the model weights, with the config in the metadata  model_files.py
    model-best.safetensors  the weights of the best epoch on robust validation accuracy (--val-split)
    model-ema.safetensors   the exponential moving average of the weights (--ema)
    tensorboard/         TensorBoard event files (--tensorboard)
    defense.safetensors  the defense's own state (a learnable scheduler), if any
    checkpoint/          the resumable training state                        state_files.py

The model files' names live with the model files (:mod:`.model_files`), the
training state's folder with its files (:mod:`.state_files`); this module
names the rest and lists them all.
"""

from __future__ import annotations

from pathlib import Path

from ades_core.engine.runfolder.atomic_files import fsync_dir
from ades_core.engine.runfolder.model_files import BEST_MODEL_FILE, EMA_MODEL_FILE, MODEL_FILE
from ades_core.engine.runfolder.state_files import STATE_DIR, remove_training_state

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
DEFENSE_FILE = "defense.safetensors"
TELEMETRY_FILE = "telemetry.jsonl"
TENSORBOARD_DIR = "tensorboard"
RUN_FILES = (
    CONFIG_FILE, METRICS_FILE, TELEMETRY_FILE, MODEL_FILE, BEST_MODEL_FILE, EMA_MODEL_FILE, DEFENSE_FILE, STATE_DIR
)
"""Every file (or folder) a run writes: a folder holding any of them holds a run."""


def holds_run(out: Path) -> bool:
    """Whether ``out`` holds any file of an ades run."""
    return any((Path(out) / name).exists() for name in RUN_FILES)


def clear_run(out: Path) -> None:
    """Delete the files of the run in ``out`` (for ``overwrite``); other files are left alone.

    The training state goes first, so a crash midway can never leave an old
    state beside a new config.
    """
    out = Path(out)
    remove_training_state(out)
    for name in (METRICS_FILE, TELEMETRY_FILE, MODEL_FILE, BEST_MODEL_FILE, EMA_MODEL_FILE, DEFENSE_FILE, CONFIG_FILE):
        (out / name).unlink(missing_ok=True)
    events = out / TENSORBOARD_DIR
    if events.is_dir():
        for file in events.glob("events.out.tfevents.*"):
            file.unlink()
    if out.is_dir():
        fsync_dir(out)


__all__ = [
    "BEST_MODEL_FILE",
    "CONFIG_FILE",
    "DEFENSE_FILE",
    "EMA_MODEL_FILE",
    "METRICS_FILE",
    "MODEL_FILE",
    "RUN_FILES",
    "STATE_DIR",
    "TELEMETRY_FILE",
    "TENSORBOARD_DIR",
    "clear_run",
    "holds_run",
]
