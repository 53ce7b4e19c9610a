"""Training loop, evaluation, model files and the run folder."""

from ades_core.engine.checkpoint import CheckpointError, ModelSpec, load_model, save_model
from ades_core.engine.evaluator import AccuracyReport, evaluate_robustness
from ades_core.engine.setup import TrainingSetup

__all__ = [
    "AccuracyReport",
    "CheckpointError",
    "ModelSpec",
    "TrainingSetup",
    "evaluate_robustness",
    "load_model",
    "save_model",
]
