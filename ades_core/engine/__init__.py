"""Training loop, evaluation, model files, the run folder and its resumable training state."""

from ades_core.engine.checkpoint import CheckpointError, ModelSpec, load_model, save_model
from ades_core.engine.evaluator import AccuracyReport, evaluate_robustness
from ades_core.engine.nonfinite import NonFiniteError
from ades_core.engine.run_folder import RESUMABLE_FIELDS, RunFolderError, resume_config
from ades_core.engine.setup import TrainingSetup
from ades_core.engine.training_state import TrainingStateError, load_training_state

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
