"""The paper's setting timed on one device: ``ades bench --paper-scale``.

WRN-34-10 (``ades_wrn34_10``), batch 128, PGD-10 adversarial training with
alpha 2/255 at eps 8/255, as ``ades run --preset paper`` trains it (eager,
channels_last on CUDA, the default cues and scheduler). Every figure is
measured in one process, on one model and one batch already on the device,
rows interleaved round robin after warm-up (:func:`ades_core.benchmark.time_calls`).
:func:`run_paper_scale` returns one JSON-ready dict:

``training_step[precision][defense]``
    One full training step (defense step with its PGD attack, backward,
    optimiser steps). ``min``/``median`` seconds, ``images_per_s`` (batch /
    median), ``s_per_epoch`` (``epoch_images`` / ``images_per_s``: training
    steps only; no per-epoch evaluation, no data loading, which is a
    device-side slice), ``flops_per_step`` (counted on one step by
    ``torch.utils.flop_counter.FlopCounterMode``: matmuls and convolutions,
    forward and backward, as they run, so the attack's input-only backward
    passes count no weight gradients), ``achieved_tflops``, ``peak`` (the
    dense datasheet peak used, :mod:`ades_core.device_peaks`; for fp32 the
    TF32 one when cuDNN may use TF32), ``fraction_of_peak``,
    ``floor_s_per_epoch`` (the epoch at 100% of that peak: the physical
    limit of this step on this device), ``speedup_vs_reference`` (against
    :data:`REFERENCE_S_PER_EPOCH`) and the row's own memory
    (:func:`ades_core.benchmark.measure_row_memory`: on CUDA the peak
    allocated during one call, reset per row).
``pgd[precision]``
    PGD-``eval_steps`` as ``ades eval`` runs it (``keep_broken``, TF32 off):
    seconds per batch, ``images_per_s``, ``s_per_10k`` (a CIFAR test set).
``autoattack``
    The official standard AutoAttack (pyautoattack) in float32, TF32 off, as
    ``ades eval --attack autoattack`` runs it, once on the batch labelled
    with the model's own predictions, so that every point enters APGD-CE.
    Its cost grows with the robustness of the model: APGD-T, FAB-T and
    Square attack only the points the earlier components left standing, and
    on an untrained model APGD-CE breaks nearly all of them. ``projection``
    therefore also gives the time on 10,000 images of a model whose points
    survive APGD-CE with probability 0.5, from the measured cost of one
    forward-backward and one forward pass (a model, not a measurement; its
    formula is in the report).

A row that fails (bf16 on a GPU without it, out of memory) is reported as
``{"failed": "<one line>"}``; the other rows are still measured.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import attrs
import torch

from ades_core.attacks.autoattack import (
    STANDARD_ITERATIONS,
    STANDARD_SQUARE_QUERIES,
    STANDARD_TARGET_CLASSES,
    AutoAttack,
)
from ades_core.attacks.gradients import loss_input_gradient
from ades_core.benchmark import (
    MEMORY_NOTES,
    measure_row_memory,
    model_and_batch,
    one_line,
    peak_memory_mb,
    synchronize,
    time_calls,
    training_step,
)
from ades_core.builder import build_defense, resolve_autocast, resolve_device
from ades_core.config import RunConfig
from ades_core.device_peaks import Peak, peak_for
from ades_core.device_rates import achieved_rates, count_flops, machine  # noqa: F401  (count_flops: public here too)
from ades_core.errors import InputError
from ades_core.evaluation.specs import resolve_attack
from ades_core.model_mode import exact_float32
from ades_core.registries import ATTACK_LOSSES, DEFENSES
from ades_core.scoring import strictly_correct

PRECISIONS = ("bf16", "fp32")
"""Training precisions the report times: bf16 autocast, and float32 (TF32 convolutions as PyTorch
defaults). fp16 is left out: ``ades run`` trains it with loss scaling, which this step has not."""

EPS = 8 / 255
"""The budget of every attack here ([0, 1] pixel scale)."""

TEST_IMAGES = 10_000
"""Images of the CIFAR test sets, for ``s_per_10k``."""

REFERENCE_S_PER_EPOCH = 105.0
REFERENCE = {
    "s_per_epoch": REFERENCE_S_PER_EPOCH,
    "device": "NVIDIA V100",
    "what": "one epoch of PGD-10 AT on WRN-34-10 at batch 128 over 50,000 CIFAR-10 images: "
    "the figure ades was seeded with",
}
"""The figure ``speedup_vs_reference`` divides by."""

_AMP = {"bf16": "bf16", "fp32": "off"}


def _known_defenses(instance: Any, attribute: attrs.Attribute, value: tuple[str, ...]) -> None:
    unknown = [name for name in value if name not in DEFENSES]
    if unknown:
        raise InputError(f"unknown defense {unknown[0]!r}; choose from {', '.join(DEFENSES.names())}")
    if not value or len(set(value)) != len(value):
        raise InputError(f"defenses must name at least one defense, each once: {','.join(value)}")


def _known_precisions(instance: Any, attribute: attrs.Attribute, value: tuple[str, ...]) -> None:
    unknown = [name for name in value if name not in PRECISIONS]
    if unknown:
        raise InputError(f"unknown precision {unknown[0]!r}; choose from {', '.join(PRECISIONS)}")
    if not value or len(set(value)) != len(value):
        raise InputError(f"precisions must name at least one precision, each once: {','.join(value)}")


def _positive_or_none(instance: Any, attribute: attrs.Attribute, value: int | None) -> None:
    if value is not None and value < 1:
        raise InputError(f"{attribute.name} must be >= 1 or unset, got {value}")


@attrs.frozen(kw_only=True)
class PaperScaleSettings:
    """What the paper-scale report measures; the defaults are the paper's setting."""

    backbone: str = "ades_wrn34_10"
    batch_size: int = attrs.field(default=128, validator=attrs.validators.ge(1))
    steps: int = attrs.field(default=10, validator=attrs.validators.ge(1))
    """PGD steps of the training attack."""
    eval_steps: int = attrs.field(default=20, validator=attrs.validators.ge(1))
    """PGD steps of the evaluation attack."""
    defenses: tuple[str, ...] = attrs.field(default=("pgd-at", "trades", "ades"), validator=_known_defenses)
    precisions: tuple[str, ...] = attrs.field(default=PRECISIONS, validator=_known_precisions)
    warmup: int = attrs.field(default=1, validator=attrs.validators.ge(0))
    repeats: int = attrs.field(default=3, validator=attrs.validators.ge(1))
    device: str = "auto"
    epoch_images: int = attrs.field(default=50_000, validator=attrs.validators.ge(1))
    """Training images per epoch (CIFAR-10: 50,000), for ``s_per_epoch``."""
    autoattack: bool = True
    autoattack_iterations: int | None = attrs.field(default=None, validator=_positive_or_none)
    """APGD/FAB iterations; ``None``: the authors' 100. Fewer only for quick checks (the report says so)."""
    autoattack_queries: int | None = attrs.field(default=None, validator=_positive_or_none)
    """Square's queries; ``None``: the authors' 5,000."""
    seed: int = 0


def _peak(device: torch.device, precision: str, *, tf32: bool) -> Peak:
    if device.type != "cuda":
        return Peak("unknown: no peak table for CPUs", None, None)
    return peak_for(torch.cuda.get_device_name(device), precision, tf32=tf32)


def _free(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def bench_training(settings: PaperScaleSettings, model, x, y, device: torch.device) -> dict[str, Any]:
    """``training_step[precision][defense]`` rows (see the module docstring)."""
    optimiser = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    model.train()
    calls: dict[str, Callable[[], None]] = {}
    failed: dict[str, str] = {}
    rss_growth: dict[str, float] = {}
    for precision in settings.precisions:
        for name in settings.defenses:
            key = f"{precision}/{name}"
            try:
                dtype = resolve_autocast(_AMP[precision], device)
                config = RunConfig.from_dict({"defense": name, "attack": {"steps": settings.steps}})
                step = training_step(build_defense(config, dtype), model, optimiser, x, y, device)
                before = peak_memory_mb(device)
                step()  # the first call: lazy state and cuDNN set-up, and the proof that the row runs
                synchronize(device)
                rss_growth[key] = peak_memory_mb(device) - before
            except Exception as exc:  # out of memory, no bf16 on this GPU: report it, time the others
                failed[key] = one_line(exc)
                _free(device)
                continue
            calls[key] = step
    flops: dict[str, int] = {}
    for key, step in calls.items():
        defense = key.split("/", 1)[1]
        if defense not in flops:  # the same operations in every precision
            flops[defense] = count_flops(step)
    timed = time_calls(calls, device, warmup=settings.warmup, repeats=settings.repeats) if calls else {}
    if device.type == "cuda":
        memory = measure_row_memory(calls, device)
    else:
        memory = {key: {"peak_memory_mb": None, "peak_rss_growth_mb": growth} for key, growth in rss_growth.items()}
    tf32 = device.type == "cuda" and bool(torch.backends.cudnn.allow_tf32)
    rows: dict[str, dict[str, Any]] = {precision: {} for precision in settings.precisions}
    for precision in settings.precisions:
        for name in settings.defenses:
            key = f"{precision}/{name}"
            if key in failed:
                rows[precision][name] = {"failed": failed[key]}
                continue
            row: dict[str, Any] = dict(timed[key])
            images_per_s = settings.batch_size / row["median"]
            s_per_epoch = settings.epoch_images / images_per_s
            row |= {"images_per_s": images_per_s, "s_per_epoch": s_per_epoch}
            peak = _peak(device, precision, tf32=tf32)
            row |= achieved_rates(flops[name], row["median"], peak)
            epoch_flops = flops[name] / settings.batch_size * settings.epoch_images
            row["floor_s_per_epoch"] = None if peak.tflops is None else epoch_flops / (peak.tflops * 1e12)
            row["speedup_vs_reference"] = REFERENCE_S_PER_EPOCH / s_per_epoch
            row |= memory[key]
            rows[precision][name] = row
        base = rows[precision].get("pgd-at", {}).get("median")
        for row in rows[precision].values():
            if base is not None and "median" in row:
                row["ratio_to_pgd_at"] = row["median"] / base
    return rows


def bench_pgd(settings: PaperScaleSettings, model, x, y, device: torch.device) -> dict[str, Any]:
    """``pgd[precision]``: PGD-``eval_steps`` as ``ades eval`` runs it, per precision."""
    model.eval()
    calls: dict[str, Callable[[], Any]] = {}
    failed: dict[str, str] = {}
    for precision in settings.precisions:
        try:
            dtype = resolve_autocast(_AMP[precision], device)
            attack = resolve_attack(f"pgd{settings.eval_steps}").build(autocast_dtype=dtype)

            def call(attack=attack) -> None:
                with exact_float32():
                    attack(model, x, y, EPS)

            call()
            synchronize(device)
        except Exception as exc:
            failed[precision] = one_line(exc)
            _free(device)
            continue
        calls[precision] = call
    flops = count_flops(next(iter(calls.values()))) if calls else 0
    timed = time_calls(calls, device, warmup=settings.warmup, repeats=settings.repeats) if calls else {}
    rows: dict[str, Any] = {"attack": f"pgd{settings.eval_steps}", "eps": EPS}
    for precision in settings.precisions:
        if precision in failed:
            rows[precision] = {"failed": failed[precision]}
            continue
        row: dict[str, Any] = dict(timed[precision])
        images_per_s = settings.batch_size / row["median"]
        row |= {"images_per_s": images_per_s, "s_per_10k": TEST_IMAGES / images_per_s}
        row |= achieved_rates(flops, row["median"], _peak(device, precision, tf32=False))
        rows[precision] = row
    return rows


def _seconds(fn: Callable[[], Any], device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def bench_autoattack(settings: PaperScaleSettings, model, x, device: torch.device) -> dict[str, Any]:
    """``autoattack``: one timed run of the official standard AutoAttack, and its projection."""
    model.eval()
    attack = AutoAttack(
        version="standard", iterations=settings.autoattack_iterations,
        square_queries=settings.autoattack_queries, seed=settings.seed,
    )  # fmt: skip
    with torch.no_grad(), exact_float32():
        labels = model(x).argmax(dim=1)  # every point is "correct", so every point enters APGD-CE
    result: dict[str, torch.Tensor] = {}

    def run() -> None:
        with exact_float32():
            result["x_adv"] = attack(model, x, labels, EPS)

    try:
        seconds = _seconds(run, device)
    except Exception as exc:
        _free(device)
        return {"failed": one_line(exc)}
    with torch.no_grad(), exact_float32():
        robust = float(strictly_correct(model(result["x_adv"]), labels).float().mean())
        forward_s = min(_seconds(lambda: model(x), device) for _ in range(3))
    ce = ATTACK_LOSSES.get("ce")
    with exact_float32():
        gradient_s = min(_seconds(lambda: loss_input_gradient(model, x, labels, ce), device) for _ in range(3))
    images_per_s = settings.batch_size / seconds
    iterations = settings.autoattack_iterations or STANDARD_ITERATIONS
    queries = settings.autoattack_queries or STANDARD_SQUARE_QUERIES
    targets = STANDARD_TARGET_CLASSES  # 10 classes
    survive = 0.5
    per_batch = iterations * gradient_s + survive * (
        2 * targets * iterations * gradient_s + queries * forward_s
    )
    return {
        "seconds": seconds,
        "images_per_s": images_per_s,
        "s_per_10k": TEST_IMAGES / images_per_s,
        "robust_fraction": robust,
        "settings": attack.settings(),
        "labels": "the model's own predictions (every point enters APGD-CE)",
        "projection": {
            "what": "AutoAttack's time on 10,000 images of a model whose points survive APGD-CE with probability "
            "0.5: a model of the cost, not a measurement",
            "formula": "10000/B * (I*g + p*(2*T*I*g + Q*f)): APGD-CE I iterations of one forward-backward g; "
            "then on the surviving fraction p, APGD-T and FAB-T (T targets x I iterations, about g each) and "
            "Square (Q queries of one forward f)",
            "forward_backward_s": gradient_s,
            "forward_s": forward_s,
            "iterations": iterations,
            "targets": targets,
            "queries": queries,
            "survive": survive,
            "s_per_10k": TEST_IMAGES / settings.batch_size * per_batch,
        },
    }


def run_paper_scale(
    settings: PaperScaleSettings, *, on_section: Callable[[dict[str, Any]], None] | None = None
) -> dict[str, Any]:
    """Every figure of the paper-scale report (see the module docstring), with the machine.

    ``on_section``: called with the report so far after each section
    (training steps, PGD, AutoAttack), so that a run stopped by a time limit
    keeps what it measured; ``complete`` is False until the last section is in.
    """
    device = resolve_device(settings.device)
    torch.manual_seed(settings.seed)
    model, x, y = model_and_batch(settings.backbone, settings.batch_size, settings.seed, device)
    report: dict[str, Any] = {
        "settings": attrs.asdict(settings),
        "machine": machine(device),
        "reference": REFERENCE,
        "complete": False,
    }
    sections: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        ("training_step", lambda: bench_training(settings, model, x, y, device)),
        ("pgd", lambda: bench_pgd(settings, model, x, y, device)),
    ]
    if settings.autoattack:
        sections.append(("autoattack", lambda: bench_autoattack(settings, model, x, device)))
    for name, measure in sections:
        report[name] = measure()
        if name == "training_step":
            report["memory_note"] = MEMORY_NOTES["cuda" if device.type == "cuda" else "cpu"]
        if name == sections[-1][0]:
            report["complete"] = True
        if on_section is not None:
            on_section(report)
    return report
