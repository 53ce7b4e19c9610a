"""Budget schedulers (``fixed``, ``static``, ``mlp``, ``random``) and the objectives of learnable ones."""

from ades_core.schedulers import fixed, lookahead, mlp, objectives, random, static, target  # noqa: F401  (registration)
from ades_core.schedulers.fixed import FixedBudget
from ades_core.schedulers.lookahead import LookAhead
from ades_core.schedulers.mlp import MLPScheduler, centre_sigma
from ades_core.schedulers.objectives import SchedulerObjective, attach_objective
from ades_core.schedulers.random import RandomAllocation
from ades_core.schedulers.static import StaticWeightedCues
from ades_core.schedulers.target import RobustnessTargetFit

__all__ = [
    "FixedBudget",
    "LookAhead",
    "MLPScheduler",
    "RandomAllocation",
    "RobustnessTargetFit",
    "SchedulerObjective",
    "StaticWeightedCues",
    "attach_objective",
    "centre_sigma",
]
