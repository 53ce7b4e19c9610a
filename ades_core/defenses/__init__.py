"""Defenses (adversarial-training methods), registered by name in ``DEFENSES``.

Registry metadata: ``scheduler`` (the scheduler used unless the config names
one), ``uses_cues`` (whether cues are computed), ``learnable`` (whether the
scheduler must be learnable).
"""

from ades_core.defenses.budgeted import (
    BudgetedAdversarialTraining,
    DefenseParts,
    budgeted_defense,
    envelope_input,
)
from ades_core.registries import DEFENSES

DEFENSES.register(
    "pgd-at",
    budgeted_defense("pgd-at"),
    description="PGD adversarial training at one fixed budget eps",
    paper="Madry et al., ICLR 2018",
    scheduler="fixed",
    uses_cues=False,
)
DEFENSES.register(
    "static-des",
    budgeted_defense("static-des"),
    description="per-sample budget from a fixed weighted mean of the cues",
    paper="ADES paper (ablation baseline)",
    scheduler="static",
    uses_cues=True,
)
DEFENSES.register(
    "ades",
    budgeted_defense("ades"),
    description="per-sample budget from a learnable MLP on the cues, trained jointly",
    paper="ADES: Adaptive Dynamic Epsilon Scheduling",
    scheduler="mlp",
    uses_cues=True,
    learnable=True,
)

__all__ = ["BudgetedAdversarialTraining", "DefenseParts", "budgeted_defense", "envelope_input"]
