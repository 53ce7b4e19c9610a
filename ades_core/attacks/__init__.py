"""Budgeted attacks (per-sample L-inf budgets) and the losses they maximise."""

from ades_core.attacks import losses, pgd  # noqa: F401  (registration)
from ades_core.attacks.pgd import PGD, budget_column

__all__ = ["PGD", "budget_column"]
