"""The attack suite: several attacks, the per-sample worst case, an eps sweep, the masking checks.

    >>> from ades_core.evaluation import evaluate, resolve_attacks
    >>> result = evaluate(model, data, resolve_attacks(["pgd20", "cw", "autoattack"]), 8 / 255,
    ...                   sweep=[4 / 255, 8 / 255], device=torch.device("cpu"))   # doctest: +SKIP
    >>> result.worst_case.robust_acc                                          # doctest: +SKIP

Robust accuracy of one attack counts a sample when it is correct clean and
after that attack; the worst-case row counts it only when it is correct clean
and after *every* attack run. The model is never modified: it runs in eval
mode (every submodule's mode restored afterwards), parameters receive no
gradients, BN statistics do not move.

Under ``torchrun``, pass the rank's context as ``distributed``: every pass is
sharded over the ranks in whole batches and the per-sample results merged
(:mod:`ades_core.evaluation.sharding`), so every rank returns the same
:class:`EvalResult`, equal to the single-process one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import torch
from torch import Tensor, nn

from ades_core.config import format_eps
from ades_core.data import ImageTensors
from ades_core.distributed import DistributedContext
from ades_core.evaluation.masking import CheckResult, MaskingCheckConfig, run_masking_checks
from ades_core.evaluation.resume import ResumeStore
from ades_core.evaluation.runner import attack_outcome, clean_correct
from ades_core.evaluation.specs import AttackSpec, pgd_spec
from ades_core.model_mode import PRECISIONS, eval_mode, exact_float32
from ades_core.norms import NORMS

SWEEP_ATTACK = "pgd20"


@attrs.frozen(kw_only=True)
class AttackRow:
    """One attack's result on ``n`` samples at budget ``eps`` in ``norm`` (L-inf: [0, 1] pixel scale;
    L2: a Euclidean radius)."""

    name: str
    eps: float
    n: int
    clean_acc: float
    robust_acc: float
    seconds: float
    robust_count: int = 0
    attacked: int = 0
    settings: dict[str, Any] = attrs.field(factory=dict)
    white_box: bool = True
    norm: str = "linf"

    def to_dict(self) -> dict[str, Any]:
        return {"eps_text": format_eps(self.eps, self.norm), **attrs.asdict(self)}


@attrs.frozen(kw_only=True)
class EvalResult:
    """What :func:`evaluate` measured. ``worst_case`` is ``None`` when no attack ran.

    ``per_sample`` maps ``"clean"``, each attack's label and ``"worst-case"``
    to bool ``(N,)`` on the CPU, in the order of the evaluated split: is the
    sample correct clean (and under that attack, or under every attack)?
    It is not written to ``eval.json``.
    """

    n: int
    eps: float
    clean_acc: float
    seed: int
    precision: str
    attacks: list[AttackRow]
    worst_case: AttackRow | None
    sweep: list[AttackRow]
    checks: list[CheckResult]
    seconds: float
    per_sample: dict[str, Tensor] = attrs.field(factory=dict, eq=False, repr=False)
    norm: str = "linf"

    @property
    def warnings(self) -> list[str]:
        return [c.message for c in self.checks if c.failed]

    def row(self, name: str) -> AttackRow | None:
        return next((r for r in self.attacks if r.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "norm": self.norm,
            "eps": self.eps,
            "eps_text": format_eps(self.eps, self.norm),
            "seed": self.seed,
            "precision": {"dtype": self.precision, "tf32": False},
            "clean_acc": self.clean_acc,
            "attacks": [r.to_dict() for r in self.attacks],
            "worst_case": None if self.worst_case is None else self.worst_case.to_dict(),
            "sweep": {"attack": SWEEP_ATTACK, "points": [r.to_dict() for r in self.sweep]},
            "checks": [c.to_dict() for c in self.checks],
            "warnings": self.warnings,
            "seconds": self.seconds,
        }


def evaluate(
    model: nn.Module,
    data: ImageTensors,
    attacks: Sequence[AttackSpec],
    eps: float,
    *,
    device: torch.device,
    batch_size: int = 256,
    seed: int = 0,
    sweep: Sequence[float] = (),
    checks: MaskingCheckConfig | None = MaskingCheckConfig(),
    precision: str = "fp32",
    progress: Callable[[str], None] | None = None,
    on_row: Callable[[AttackRow], None] | None = None,
    distributed: DistributedContext | None = None,
    resume: ResumeStore | None = None,
    norm: str = "linf",
) -> EvalResult:
    """Evaluate ``model`` on ``data`` under ``attacks`` at ``eps`` in ``norm``, with an optional eps sweep.

    Args:
        model: a classifier on ``device`` taking ``(B, C, H, W)`` in [0, 1]; left unchanged.
        data: the evaluation split.
        attacks: the attacks, each run on every clean-correct sample.
        eps: the budget in ``norm``: L-inf in [0, 1] pixel scale (``8 / 255``), L2 a
            Euclidean radius in pixel space (``0.5``).
        sweep: budgets for PGD-20 in ``norm`` (one row each), plotted by :func:`plot_sweeps`.
        norm: ``linf`` or ``l2``: every attack (resolved in this norm,
            :func:`~ades_core.evaluation.specs.resolve_attacks`), the sweep, the
            masking checks and the ball check of every returned image.
        checks: the gradient-masking checks' settings, or ``None`` to skip them.
        seed: every attack run starts from this seed: deterministic results.
        precision: ``fp32`` (the default, whatever precision training used:
            float32 arithmetic, TF32 off on CUDA), ``bf16`` or ``fp16``
            (autocast of the forward passes; AutoAttack and Square always
            run in float32). Recorded in the result.
        progress: called with a short text before each run (for a CLI).
        on_row: called with each row as soon as it is measured.
        distributed: this rank's context under ``torchrun`` (every rank must
            call :func:`evaluate` with the same arguments); ``None`` alone.
        resume: this process's resume state: finished batches are read from
            it and new ones stored (:mod:`ades_core.evaluation.resume`).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"evaluation precision {precision!r} is not one of: {', '.join(PRECISIONS)}")
    threat = NORMS.get(norm)
    for budget in (eps, *sweep):
        threat.check_budget(budget)
    other = [spec.label for spec in attacks if spec.options.norm != norm]
    if other:
        raise ValueError(
            f"attack(s) {', '.join(other)} were resolved in another norm than the evaluation's {norm}; "
            f"resolve them with resolve_attacks(names, {norm!r})"
        )
    with exact_float32():
        return _evaluate(
            model, data, attacks, eps, device=device, batch_size=batch_size, seed=seed, sweep=sweep, checks=checks,
            precision=precision, progress=progress, on_row=on_row, distributed=distributed, resume=resume,
            norm=norm,
        )


def _evaluate(
    model: nn.Module,
    data: ImageTensors,
    attacks: Sequence[AttackSpec],
    eps: float,
    *,
    device: torch.device,
    batch_size: int,
    seed: int,
    sweep: Sequence[float],
    checks: MaskingCheckConfig | None,
    precision: str,
    progress: Callable[[str], None] | None,
    on_row: Callable[[AttackRow], None] | None,
    distributed: DistributedContext | None,
    resume: ResumeStore | None,
    norm: str,
) -> EvalResult:
    autocast_dtype = PRECISIONS[precision]
    start = time.perf_counter()
    say = progress or (lambda text: None)
    emit = on_row or (lambda row: None)
    n = len(data)
    with eval_mode(model):
        say(f"clean predictions on {n}")
        clean = clean_correct(
            model, data, batch_size=batch_size, device=device, autocast_dtype=autocast_dtype,
            distributed=distributed,
        )
        clean_count = int(clean.sum())
        clean_acc = clean_count / n if n else 0.0

        def run(spec: AttackSpec, budget: float, label: str) -> tuple[AttackRow, torch.Tensor]:
            attack = spec.build(autocast_dtype=autocast_dtype)
            say(f"{label} at {norm} {format_eps(budget, norm)} on {int(clean.sum())} clean-correct of {n}")
            outcome = attack_outcome(
                model, data, attack, budget, clean=clean, batch_size=batch_size, device=device,
                seed=seed, autocast_dtype=autocast_dtype, distributed=distributed,
                checkpoint=None if resume is None else resume.row(f"{label}@{budget!r}"), norm=norm,
            )
            row = AttackRow(
                name=label, eps=budget, n=n, clean_acc=clean_acc, robust_acc=outcome.accuracy,
                seconds=outcome.seconds, robust_count=outcome.count, attacked=clean_count,
                settings=spec.settings(attack), white_box=spec.white_box, norm=norm,
            )
            emit(row)
            return row, outcome.correct

        rows: list[AttackRow] = []
        per_sample = {"clean": clean}
        worst = clean.clone()
        for spec in attacks:
            row, correct = run(spec, eps, spec.label)
            rows.append(row)
            per_sample[spec.label] = correct
            worst &= correct
        worst_row = None
        if rows:
            worst_count = int(worst.sum())
            worst_row = AttackRow(
                name="worst-case", eps=eps, n=n, clean_acc=clean_acc,
                robust_acc=worst_count / n if n else 0.0,
                seconds=sum(r.seconds for r in rows), robust_count=worst_count, attacked=clean_count,
                settings={"attacks": [r.name for r in rows]},
                white_box=all(r.white_box for r in rows), norm=norm,
            )
            per_sample["worst-case"] = worst
            emit(worst_row)

        # A sweep point that repeats the main PGD-20 run (same seed, samples, budget) is reused.
        sweep_spec = pgd_spec(20, norm=norm)
        reusable = {r.eps: r for r, spec in zip(rows, attacks) if spec == sweep_spec}
        sweep_rows = [
            reusable[budget] if budget in reusable else run(sweep_spec, budget, SWEEP_ATTACK)[0]
            for budget in sorted(set(sweep))
        ]

        results: list[CheckResult] = []
        if checks is not None:
            sweep_points = None
            if sweep_rows:
                sweep_points = ([r.eps for r in sweep_rows], [r.robust_acc for r in sweep_rows], n)
            results = run_masking_checks(
                model, data, eps, clean=clean, config=checks, batch_size=batch_size, device=device,
                seed=seed, autocast_dtype=autocast_dtype, sweep=sweep_points, progress=say,
                distributed=distributed, resume=resume, norm=norm,
            )
    return EvalResult(
        n=n, eps=eps, clean_acc=clean_acc, seed=seed, precision=precision, attacks=rows, worst_case=worst_row,
        sweep=sweep_rows, checks=results, seconds=time.perf_counter() - start, per_sample=per_sample, norm=norm,
    )
