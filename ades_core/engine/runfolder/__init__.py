"""The run folder: every file a training run writes, how it is saved, and how a run resumes from it.

One module per thing the folder holds (the folder itself is drawn in
:mod:`.layout`):

==================  ==========================================================
module              holds
==================  ==========================================================
``layout``          the files' names; whether a folder holds a run; clearing one
``config_file``     ``config.json``: whether a new run may use a folder, what a
                    resumed run may change (:data:`RESUMABLE_FIELDS`)
``resolved``        ``config.json``'s ``resolved`` part: what the builder chose
``model_files``     ``model*.safetensors``: weights plus what rebuilds the model
``state_capture``   the training state: taken from a setup, put back on resume
``rng_state``       every random generator's state, part of the training state
``state_files``     ``checkpoint/``: the training state's files, atomic and verified
``state_codec``     the state's tree <-> strict JSON plus a flat dict of tensors
``atomic_files``    atomic writes and strict JSON, for every file ades writes
``writer``          the trainer's door to the folder: start or resume, save, checkpoint
==================  ==========================================================

The names below are the folder's public ones; ``writer`` is the trainer's
(:mod:`ades_core.engine.runfolder.writer`).
"""

from ades_core.engine.runfolder.config_file import (
    RESUMABLE_FIELDS,
    ResumeConflictError,
    RunFolderError,
    check_new_run,
    config_differences,
    fixed_config,
    read_config_file,
    read_run_config,
    resume_config,
)
from ades_core.engine.runfolder.layout import (
    CONFIG_FILE,
    DEFENSE_FILE,
    METRICS_FILE,
    RUN_FILES,
    TELEMETRY_FILE,
    TENSORBOARD_DIR,
    clear_run,
    holds_run,
)
from ades_core.engine.runfolder.model_files import (
    BEST_MODEL_FILE,
    EMA_MODEL_FILE,
    MODEL_FILE,
    WEIGHT_FILES,
    CheckpointError,
    ModelSpec,
    load_model,
    save_model,
)
from ades_core.engine.runfolder.state_files import (
    STATE_DIR,
    NonFiniteStateError,
    TrainingStateError,
    has_training_state,
    load_training_state,
    save_training_state,
    state_folder,
)

__all__ = [
    "BEST_MODEL_FILE",
    "CONFIG_FILE",
    "CheckpointError",
    "DEFENSE_FILE",
    "EMA_MODEL_FILE",
    "METRICS_FILE",
    "MODEL_FILE",
    "ModelSpec",
    "NonFiniteStateError",
    "RESUMABLE_FIELDS",
    "RUN_FILES",
    "ResumeConflictError",
    "RunFolderError",
    "STATE_DIR",
    "TELEMETRY_FILE",
    "TENSORBOARD_DIR",
    "TrainingStateError",
    "WEIGHT_FILES",
    "check_new_run",
    "clear_run",
    "config_differences",
    "fixed_config",
    "has_training_state",
    "holds_run",
    "load_model",
    "load_training_state",
    "read_config_file",
    "read_run_config",
    "resume_config",
    "save_model",
    "save_training_state",
    "state_folder",
]
