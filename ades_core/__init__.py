"""ades: instance-adaptive adversarial training with per-sample L-inf budgets.

Importing the package registers the built-in cues, schedulers, attacks,
defenses, datasets and ``ades_*`` timm backbones, then loads plugins.

    >>> import ades_core
    >>> setup = ades_core.build(ades_core.RunConfig(defense="ades"))   # doctest: +SKIP
    >>> setup.fit("runs/ades")                                         # doctest: +SKIP
"""

from ades_core import attacks, backbones, cues, data, defenses, schedulers  # noqa: F401  (registration)
from ades_core.builder import BuildError, build, build_defense
from ades_core.config import (
    AttackOptions,
    BudgetConfig,
    CueOptions,
    DataConfig,
    EvalConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
    SchedulerOptions,
    format_eps,
    parse_eps,
)
from ades_core.engine import CheckpointError, evaluate_robustness, load_model
from ades_core.plugins import PLUGIN_FAILURES, load_plugins
from ades_core.protocols import Budget, BudgetedAttack, CueExtractor, Cues, Defense, Scheduler, StepOutput
from ades_core.registries import ATTACKS, CUES, DATASETS, DEFENSES, SCHEDULER_OBJECTIVES, SCHEDULERS
from ades_core.registry import RegistryError

__version__ = "0.1.0"

load_plugins()

__all__ = [
    "ATTACKS",
    "CUES",
    "DATASETS",
    "DEFENSES",
    "PLUGIN_FAILURES",
    "SCHEDULERS",
    "SCHEDULER_OBJECTIVES",
    "AttackOptions",
    "Budget",
    "BudgetConfig",
    "BudgetedAttack",
    "BuildError",
    "CheckpointError",
    "CueExtractor",
    "CueOptions",
    "Cues",
    "DataConfig",
    "Defense",
    "EvalConfig",
    "ModelConfig",
    "OptimConfig",
    "RegistryError",
    "RunConfig",
    "Scheduler",
    "SchedulerOptions",
    "StepOutput",
    "build",
    "build_defense",
    "evaluate_robustness",
    "format_eps",
    "load_model",
    "load_plugins",
    "parse_eps",
]
