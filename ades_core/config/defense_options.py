"""Settings of particular defenses (``defense_options``): the outer loss, AWP, Free-AT, MMA, IAAT, CAT.

Which defense accepts ``loss`` and ``awp`` is its registry record's
(:class:`~ades_core.registry_info.DefenseInfo`); the run refuses an option its
defense would ignore (:mod:`ades_core.config.rules`).
"""

from __future__ import annotations

import attrs

from ades_core.cli_metadata import cli

from ades_core.config_fields import (
    EPS_FIELD,
    OPTIONAL_EPS_FIELD,
    ConfigError,
    _boolean,
    _in_choices,
    _int_at_least,
    _number_in,
    format_eps,
)

MMA_DEFAULT_MAX_EPS = {"linf": 32 / 255, "l2": 2.0}
"""MMA's d_max when ``mma_max_eps`` is unset, per norm (the authors' MMA-32 and MMA-2.0)."""

MMA_MARGINS = ("hard", "soft")
"""MMA's bisection test: the logit margin, or the log-sum-exp margin of the authors' code."""

TRAINING_LOSSES = ("ce", "trades", "mart")
"""The outer loss of a budgeted defense (pgd-at, static-des, ades): cross-entropy on
``x_adv`` (Madry), TRADES's clean CE + beta * KL, or MART's boosted CE + beta * weighted KL."""

KL_INNER_LOSSES = ("trades",)
"""The outer losses whose inner attack maximises ``KL(p(x) || p(x'))`` instead of the
attack loss, which therefore must stay ``ce`` (a config rule)."""


@attrs.frozen(kw_only=True)
class DefenseOptions:
    """Settings of particular defenses; each field names the defenses it applies to.

    ``loss`` (pgd-at, static-des, ades): the outer training loss, one of
    :data:`TRAINING_LOSSES`; the inner attack maximises the matching loss
    (the attack loss, CE, for ``ce`` and ``mart``; KL to the clean prediction
    for ``trades``); see :mod:`ades_core.defenses.losses`.
    ``beta`` (trades, mart, and ``loss`` trades/mart): weight of the robustness term.
    ``replays`` (free-at): minibatch replays m; the run's epochs are divided by m.
    ``awp`` (pgd-at, trades, mart, ades): adversarial weight perturbation of relative
    size ``awp_gamma`` per layer, from (0-based) epoch ``awp_warmup`` on.
    ``fast_alpha_ratio`` (fast-at): the FGSM step as a multiple of eps (1.25 in Wong et al.).
    Budgets here are in the run's norm; unset (``None``) ones take the norm's
    default (:meth:`mma_d_max`, :meth:`iaat_step`, :meth:`iaat_cap`).
    ``mma_*`` (mma): ``mma_max_eps`` the hinge's d_max (margins >= it add no
    loss; the search looks up to 1.05 d_max), ``mma_min_eps`` the smallest
    radius a margin search starts from, ``mma_clean_weight`` the weight of the
    clean CE, ``mma_search_steps`` the bisection steps, ``mma_margin`` the
    bisection's "flipped" test: ``hard`` (the logit margin, the paper's
    definition) or ``soft`` (the log-sum-exp margin, as the authors' code).
    ``iaat_*`` (iaat): ``iaat_warmup`` epochs at the fixed ``eps`` before the
    per-sample budgets adapt, ``iaat_gamma`` the budget step, ``iaat_beta`` the
    weight of the new value in the running average, ``iaat_max_eps`` the
    budgets' upper bound (unset: none, as the paper).
    ``cat_*`` (cat): ``cat_ramp`` the fraction of the epochs over which eps
    rises to ``eps``; ``cat_steps`` raises the PGD steps with it.
    """

    loss: str = attrs.field(
        default="ce",
        validator=_in_choices(*TRAINING_LOSSES),
        metadata=cli(
            "Outer training loss of pgd-at, static-des, ades: ce, trades or mart (per-sample budgets inside TRADES/MART).",
        ),
    )
    beta: float = attrs.field(
        default=6.0,
        validator=_number_in(0.0),
        metadata=cli("Weight of the TRADES/MART robustness term."),
    )
    replays: int = attrs.field(
        default=8,
        validator=_int_at_least(1),
        metadata=cli("free-at: replays m of each minibatch; the run makes ceil(epochs / m) passes."),
    )
    awp: bool = attrs.field(
        default=False,
        validator=_boolean,
        metadata=cli("Adversarial weight perturbation (pgd-at, trades, mart, ades)."),
    )
    awp_gamma: float = attrs.field(
        default=5e-3,
        validator=_number_in(0.0, low_open=True),
        metadata=cli("AWP's relative weight perturbation per layer."),
    )
    awp_warmup: int = attrs.field(
        default=0,
        validator=_int_at_least(0),
        metadata=cli("Epochs trained before AWP starts."),
    )
    fast_alpha_ratio: float = attrs.field(
        default=1.25,
        validator=_number_in(0.0, low_open=True),
        metadata=cli("Fast-AT's FGSM step as a multiple of eps."),
    )
    mma_max_eps: float | None = attrs.field(
        default=None,
        converter=OPTIONAL_EPS_FIELD,
        metadata=cli(
            "mma: d_max of the hinge, margins >= it add no loss (default 32/255 for linf, 2.0 for l2).",
            kind="eps",
        ),
    )
    mma_min_eps: float = attrs.field(
        default=0.005,
        converter=EPS_FIELD,
        metadata=cli("mma: smallest radius a margin search starts from.", kind="eps"),
    )
    mma_clean_weight: float = attrs.field(
        default=1 / 3,
        validator=_number_in(0.0, 1.0),
        metadata=cli("mma: weight of the clean cross-entropy (default 1/3; 0 is OMMA).", show_default=False),
    )
    mma_search_steps: int = attrs.field(
        default=10,
        validator=_int_at_least(1),
        metadata=cli("mma: bisection steps of the margin search."),
    )
    mma_margin: str = attrs.field(
        default="hard",
        validator=_in_choices(*MMA_MARGINS),
        metadata=cli(
            "mma: the bisection's flipped test, the logit margin (hard) or the log-sum-exp margin of the authors' code (soft).",
            choices=MMA_MARGINS,
        ),
    )
    iaat_warmup: int = attrs.field(
        default=10,
        validator=_int_at_least(0),
        metadata=cli("iaat: epochs at the fixed --eps before per-sample budgets adapt."),
    )
    iaat_gamma: float | None = attrs.field(
        default=None,
        converter=OPTIONAL_EPS_FIELD,
        metadata=cli(
            "iaat: step of the per-sample budget per visit (default 1.9/255 for linf, eps * 1.9/8 for l2).",
            kind="eps",
        ),
    )
    iaat_beta: float = attrs.field(
        default=0.1,
        validator=_number_in(0.0, 1.0, low_open=True),
        metadata=cli("iaat: weight of the new budget in the running average."),
    )
    iaat_max_eps: float | None = attrs.field(
        default=None,
        converter=OPTIONAL_EPS_FIELD,
        metadata=cli(
            "iaat: upper bound of the per-sample budgets (default 1 for linf: none; 8 * eps for l2).",
            kind="eps",
        ),
    )
    cat_ramp: float = attrs.field(
        default=0.5,
        validator=_number_in(0.0, 1.0, low_open=True),
        metadata=cli("cat: fraction of the epochs over which eps rises to --eps."),
    )
    cat_steps: bool = attrs.field(
        default=False,
        validator=_boolean,
        metadata=cli("cat: also raise the PGD steps from 1 to --steps."),
    )

    def mma_d_max(self, norm: str = "linf") -> float:
        """``mma_max_eps``, or the norm's default d_max: 32/255 (L-inf, the authors' MMA-32),
        2.0 (L2, the authors' MMA-2.0)."""
        if self.mma_max_eps is not None:
            return self.mma_max_eps
        return MMA_DEFAULT_MAX_EPS[norm]

    def iaat_step(self, norm: str, eps: float) -> float:
        """``iaat_gamma``, or the norm's default: 1.9/255 (L-inf, the authors'); for L2 the same
        fraction of the warm-up budget, ``eps * 1.9 / 8`` (0.119 at eps 0.5)."""
        if self.iaat_gamma is not None:
            return self.iaat_gamma
        return 1.9 / 255 if norm == "linf" else eps * 1.9 / 8

    def iaat_cap(self, norm: str = "linf", eps: float = 8 / 255) -> float:
        """``iaat_max_eps``, or in effect none (the authors' update has none): 1 for L-inf, which
        holds the whole box; ``8 * eps`` for L2 (4.0 at eps 0.5), above any budget the rule
        reaches in a run (it would take ``8 * eps / gamma`` = 34 net upward steps)."""
        if self.iaat_max_eps is not None:
            return self.iaat_max_eps
        return 1.0 if norm == "linf" else 8 * eps

    @mma_max_eps.validator
    def _mma_margin_range(self, attribute: attrs.Attribute, value: float | None) -> None:
        d_max = self.mma_d_max()
        if value is not None and value <= 0:
            raise ConfigError(attribute.name, "must be a positive budget (d_max), got 0")
        if value is not None and not 0 < self.mma_min_eps < d_max:
            raise ConfigError(
                "mma_min_eps",
                f"must lie in (0, mma_max_eps = {format_eps(d_max)}), got {self.mma_min_eps:.4g}",
            )
        if value is None and not 0 < self.mma_min_eps:
            raise ConfigError("mma_min_eps", f"must be positive, got {self.mma_min_eps:.4g}")


