"""Training loop, evaluation, model files, the run folder and its resumable training state."""

from ades_core.engine.evaluator import AccuracyReport, evaluate_robustness
from ades_core.engine.nonfinite import NonFiniteError
from ades_core.engine.runfolder import (
    RESUMABLE_FIELDS,
    CheckpointError,
    ModelSpec,
    RunFolderError,
    TrainingStateError,
    load_model,
    load_training_state,
    resume_config,
    save_model,
)
from ades_core.engine.setup import TrainingSetup

__all__ = [
    "AccuracyReport",
    "CheckpointError",
    "ModelSpec",
    "NonFiniteError",
    "RESUMABLE_FIELDS",
    "RunFolderError",
    "TrainingSetup",
    "TrainingStateError",
    "evaluate_robustness",
    "load_model",
    "load_training_state",
    "resume_config",
    "save_model",
]
