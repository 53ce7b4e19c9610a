"""Defenses (adversarial-training methods), registered by name in ``DEFENSES``.

Each registration's keywords beyond ``description`` and ``paper`` are the
fields of its :class:`~ades_core.registry_info.DefenseInfo` (the scheduler it
uses, whether it uses cues, the options and norms it accepts, its own config
rule); the rules that read them run when the
:class:`~ades_core.config.RunConfig` is built.
"""

from ades_core.defenses.budgeted import (
    BudgetedAdversarialTraining,
    DefenseParts,
    budgeted_defense,
    envelope_input,
)
from ades_core.defenses.fast_at import check_fast_at_config, fast_at_defense
from ades_core.config_fields import format_eps
from ades_core.registries import DEFENSES

DEFENSES.register(
    "pgd-at",
    budgeted_defense("pgd-at"),
    description="PGD adversarial training at one fixed budget eps",
    paper="Madry et al., ICLR 2018",
    scheduler="fixed",
    uses_cues=False,
    takes_loss=True,
    awp=True,
)
DEFENSES.register(
    "static-des",
    budgeted_defense("static-des"),
    description="per-sample budget from a fixed weighted mean of the cues",
    paper="ADES paper (ablation baseline)",
    scheduler="static",
    uses_cues=True,
    takes_loss=True,
)
DEFENSES.register(
    "ades",
    budgeted_defense("ades"),
    description="per-sample budget from a learnable MLP on the cues, trained jointly",
    paper="ADES: Adaptive Dynamic Epsilon Scheduling",
    scheduler="mlp",
    uses_cues=True,
    learnable=True,
    takes_loss=True,
    awp=True,
)
DEFENSES.register(
    "trades",
    budgeted_defense("trades", loss="trades"),
    description="clean CE + beta * KL(p(x) || p(x_adv)), KL-maximising PGD, fixed eps (--beta)",
    paper="Zhang et al., ICML 2019 (TRADES)",
    scheduler="fixed",
    uses_cues=False,
    loss="trades",
    awp=True,
)
DEFENSES.register(
    "mart",
    budgeted_defense("mart", loss="mart"),
    description="boosted CE on x_adv + beta * KL weighted by 1 - p_y(x), fixed eps (--beta)",
    paper="Wang et al., ICLR 2020 (MART)",
    scheduler="fixed",
    uses_cues=False,
    loss="mart",
    awp=True,
)
DEFENSES.register(
    "fast-at",
    fast_at_defense,
    description="FGSM from a uniform random start, step 1.25 eps, fixed eps: one gradient per attack",
    paper="Wong, Rice, Kolter, ICLR 2020 (Fast is better than free)",
    scheduler="fixed",
    uses_cues=False,
    check=check_fast_at_config,
    attack_note=lambda config: (
        f"FGSM from a uniform start, step {config.defense_options.fast_alpha_ratio:g} * eps = "
        f"{format_eps(config.defense_options.fast_alpha_ratio * config.budget.eps)}"
    ),
    norms=("linf",),
    norm_note=(
        "Wong et al.'s method is FGSM from a uniform start with a 1.25 eps sign step, an L-inf "
        "construction; its L2 form is unpublished and unvalidated (train L2 with pgd-at)"
    ),
)

__all__ = [
    "BudgetedAdversarialTraining",
    "DefenseParts",
    "budgeted_defense",
    "envelope_input",
    "fast_at_defense",
]

# ---------------------------------------------------------------- free-at, mma, iaat, cat
# (their own loops; per-sample state in registered buffers, see docs/defenses.md)
from ades_core.defenses.curriculum import cat_defense  # noqa: E402
from ades_core.defenses.free_at import free_at_defense  # noqa: E402
from ades_core.defenses.iaat import iaat_defense  # noqa: E402
from ades_core.defenses.mma import mma_defense  # noqa: E402

DEFENSES.register(
    "free-at",
    free_at_defense,
    description="each minibatch replayed m times (--replays), FGSM delta carried across replays and batches; epochs / m",
    paper="Shafahi et al., NeurIPS 2019 (Adversarial training for free!)",
    scheduler="fixed",
    uses_cues=False,
    attack_note=lambda config: (
        f"FGSM sign steps of eps carried over {config.defense_options.replays} replays per batch"
    ),
    norms=("linf",),
    norm_note=(
        "Shafahi et al.'s method carries one FGSM sign-step delta across replays, an L-inf "
        "construction; its L2 form is unpublished and unvalidated (train L2 with pgd-at)"
    ),
    attack_bn=False,
)
DEFENSES.register(
    "mma",
    mma_defense,
    description="trains each correct sample at its margin found by AN-PGD + bisection (hinge at --mma-max-eps)",
    paper="Ding, Sharma, Lui, Huang, ICLR 2020 (MMA training)",
    scheduler="fixed",
    uses_cues=False,
    budget_note="per-sample eps at each sample's margin, capped by --mma-max-eps",
    attack_note=lambda config: (
        f"AN-PGD-{config.attack.steps} + {config.defense_options.mma_search_steps}-step bisection"
    ),
    attack_bn=False,
)
DEFENSES.register(
    "iaat",
    iaat_defense,
    description="per-sample eps kept across epochs, moved by +-gamma as the sample resists or breaks",
    paper="Balaji, Goldstein, Hoffman, arXiv:1910.08051 (Instance adaptive AT)",
    scheduler="fixed",
    uses_cues=False,
    budget_note="per-sample eps adapted across epochs by IAAT's rule",
    attack_bn=False,
)
DEFENSES.register(
    "cat",
    cat_defense,
    description="curriculum: eps (and with --cat-steps the PGD steps) rises linearly over --cat-ramp of the epochs",
    paper="Cai, Liu, Song, IJCAI 2018 (Curriculum adversarial training)",
    scheduler="fixed",
    uses_cues=False,
    budget_note="eps ramped up to --eps over the first --cat-ramp of training",
)
