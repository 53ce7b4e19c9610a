"""Budget schedulers (``fixed``, ``static``, ``mlp``) and the objectives of learnable ones."""

from ades_core.schedulers import fixed, mlp, objectives, static  # noqa: F401  (registration)
from ades_core.schedulers.fixed import FixedBudget
from ades_core.schedulers.mlp import MLPScheduler, centre_sigma
from ades_core.schedulers.objectives import SchedulerObjective
from ades_core.schedulers.static import StaticWeightedCues

__all__ = ["FixedBudget", "MLPScheduler", "SchedulerObjective", "StaticWeightedCues", "centre_sigma"]
