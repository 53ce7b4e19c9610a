"""Side-by-side timings: training steps of each defense, cue cost, PGD throughput,
and (on request) one pgd-at training step in each execution format.

Every figure is measured in one process, on the same model, batch and device,
with warm-up and repeats; the minimum and the median are reported. On CUDA the
device is synchronised around each timed call (never inside it).

Memory of each training-step row (:func:`measure_row_memory`), measured on
that row's own calls, never shared between rows:

* CUDA: ``peak_memory_mb``, ``torch.cuda.max_memory_allocated`` during one
  call of the row alone, after the timed rounds, with the peak statistics
  reset just before it (everything allocated then counts: model, batch,
  optimiser state and the step's own tensors).
* CPU: no per-row peak exists (the process's peak resident set size is a
  high-water mark that cannot be reset), so ``peak_memory_mb`` is ``None``;
  ``peak_rss_growth_mb`` is how much the row's first call, before any timing,
  rows one after another in their order, raised the process's peak RSS: 0
  means the row needed no more memory than the process had already peaked at.
  :data:`MEMORY_NOTES` says so in the report.
"""

from __future__ import annotations

import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import attrs
import torch
from torch import nn

from ades_core.attacks import PGD
from ades_core.backbones import create_classifier
from ades_core.builder import build_defense, compile_model, resolve_autocast, resolve_device
from ades_core.config import CueOptions, RunConfig
from ades_core.cues import extract_cues
from ades_core.engine.placement import channels_last
from ades_core.errors import InputError
from ades_core.cue_context import CueContext
from ades_core.model_mode import eval_mode
from ades_core.registries import CUES

FORMATS = ("eager", "channels_last", "compile", "compile+channels_last")
"""Execution formats :func:`bench_formats` compares. ``eager``: contiguous NCHW
model and input; ``channels_last``: model and input in ``torch.channels_last``;
``compile``: the model compiled as ``ades run --compile`` does
(:func:`ades_core.builder.compile_model`); ``compile+channels_last``: both."""

FORMAT_DEFENSE = "pgd-at"
"""The defense whose training step :func:`bench_formats` times."""


def _known_formats(instance: Any, attribute: attrs.Attribute, value: tuple[str, ...]) -> None:
    unknown = [name for name in value if name not in FORMATS]
    if unknown:
        raise InputError(f"unknown format {unknown[0]!r}; choose from {', '.join(FORMATS)}")
    if len(set(value)) != len(value):
        raise InputError(f"formats repeat a name: {','.join(value)}")


@attrs.frozen(kw_only=True)
class BenchSettings:
    """What to measure on: the same for every row."""

    backbone: str = "ades_cnn_small"
    batch_size: int = attrs.field(default=128, validator=attrs.validators.ge(1))
    steps: int = attrs.field(default=10, validator=attrs.validators.ge(1))
    eval_steps: int = attrs.field(default=20, validator=attrs.validators.ge(1))
    warmup: int = attrs.field(default=1, validator=attrs.validators.ge(0))
    repeats: int = attrs.field(default=5, validator=attrs.validators.ge(1))
    device: str = "auto"
    amp: str = "auto"
    defenses: tuple[str, ...] = ("pgd-at", "ades", "static-des")
    cues: tuple[str, ...] = ("grad", "entropy", "mcdropout")
    seed: int = 0
    formats: tuple[str, ...] = attrs.field(default=(), validator=_known_formats)
    """Execution formats to compare (:data:`FORMATS`); empty: no format comparison."""
    formats_only: bool = False
    """Run only the format comparison (``formats`` must then name at least one)."""

    def __attrs_post_init__(self) -> None:
        if self.formats_only and not self.formats:
            raise InputError("formats_only needs at least one format (--formats eager,compile,...)")


def synchronize(device: torch.device) -> None:
    """Wait for ``device`` (CUDA); nothing on the CPU. Called around timed calls, never inside them."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_mb(device: torch.device) -> float:
    """CUDA: max allocated since the last reset; CPU: the process's peak RSS so far (MiB)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


MEMORY_NOTES = {
    "cuda": "peak_memory_mb: torch.cuda.max_memory_allocated during one call of the row alone, "
    "the peak reset before it",
    "cpu": "peak_memory_mb is null: the process's peak RSS cannot be reset, so no per-row peak exists; "
    "peak_rss_growth_mb: how much the row's first call (before timing, rows in order) raised the "
    "process's peak RSS, 0 when it needed no more than the process had already peaked at",
}
"""What the memory figures of the training-step rows mean, per device type (``report["memory_note"]``)."""


def measure_row_memory(calls: dict[str, Callable[[], Any]], device: torch.device) -> dict[str, dict[str, Any]]:
    """Memory of each call, measured on its own call (MiB), in the order of ``calls``.

    CUDA: ``{"peak_memory_mb": peak}``, the peak allocated during one call,
    the peak statistics reset before it. CPU: ``{"peak_memory_mb": None,
    "peak_rss_growth_mb": growth}``, how much that call raised the process's
    peak RSS (which only grows: call it before the calls have run, so it
    measures their first, largest allocations; see the module docstring).
    """
    rows: dict[str, dict[str, Any]] = {}
    for name, fn in calls.items():
        synchronize(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            fn()
            synchronize(device)
            rows[name] = {"peak_memory_mb": peak_memory_mb(device)}
        else:
            before = peak_memory_mb(device)
            fn()
            rows[name] = {"peak_memory_mb": None, "peak_rss_growth_mb": peak_memory_mb(device) - before}
    return rows


def time_calls(
    calls: dict[str, Callable[[], Any]], device: torch.device, *, warmup: int, repeats: int
) -> dict[str, dict[str, float]]:
    """Seconds per call of each function, ``{"min", "median", "mean", "repeats"}`` per name
    (the mean is the figure for a step whose cost varies by design, such as a look-ahead
    every ``k`` steps: time ``k`` or more repeats).

    The calls are interleaved (round robin, ``warmup`` rounds first), so a
    change of machine load during the measurement hits every row alike.
    """
    for _ in range(warmup):
        for fn in calls.values():
            fn()
    synchronize(device)
    seconds: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, fn in calls.items():
            start = time.perf_counter()
            fn()
            synchronize(device)
            seconds[name].append(time.perf_counter() - start)
    return {
        name: {"min": min(values), "median": statistics.median(values), "mean": statistics.fmean(values),
               "repeats": repeats}
        for name, values in seconds.items()
    }


def model_and_batch(
    backbone: str, batch_size: int, seed: int, device: torch.device
) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A 10-class CIFAR model of ``backbone`` on ``device`` (channels_last on CUDA) and a random batch
    ``x`` ``(batch_size, 3, 32, 32)`` in [0, 1] with labels ``y`` ``(batch_size,)``, from ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    model = create_classifier(backbone, num_classes=10, mean=(0.49, 0.48, 0.45), std=(0.25, 0.24, 0.26)).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    x = torch.rand(batch_size, 3, 32, 32, generator=generator).to(device)
    y = torch.randint(0, 10, (batch_size,), generator=generator).to(device)
    return model, x, y


def defense_row_config(row: str, settings: BenchSettings) -> RunConfig:
    """The run config of one training-step row: ``DEFENSE`` or ``DEFENSE:OBJECTIVE`` (a learnable
    defense with that scheduler objective, e.g. ``ades:lookahead``)."""
    defense, _, objective = row.partition(":")
    sections: dict[str, Any] = {"defense": defense, "cues": {"names": settings.cues}, "attack": {"steps": settings.steps}}
    if objective:
        sections["scheduler"] = {"objective": objective}
    return RunConfig.from_dict(sections)


def _model_and_batch(settings: BenchSettings, device: torch.device) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    return model_and_batch(settings.backbone, settings.batch_size, settings.seed, device)


def bench_training_steps(settings: BenchSettings) -> dict[str, Any]:
    """One full training step (defense step, backward, optimiser steps) per defense: seconds
    (:func:`time_calls`) and the row's own memory (:func:`measure_row_memory`)."""
    device = resolve_device(settings.device)
    autocast_dtype = resolve_autocast(settings.amp, device)
    model, x, y = _model_and_batch(settings, device)
    optimiser = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    steps: dict[str, Callable[[], None]] = {}
    for name in settings.defenses:
        steps[name] = training_step(
            build_defense(defense_row_config(name, settings), autocast_dtype), model, optimiser, x, y, device
        )
    model.train()
    # each row's memory from its own call: on the CPU before anything has run (the peak RSS
    # only grows), on CUDA after the timed rounds (warm caches), the peak reset per row
    memory = measure_row_memory(steps, device) if device.type != "cuda" else {}
    rows: dict[str, Any] = time_calls(steps, device, warmup=settings.warmup, repeats=settings.repeats)
    if device.type == "cuda":
        memory = measure_row_memory(steps, device)
    for name, row in rows.items():
        row |= memory[name]
    if "pgd-at" in rows:
        base, base_mean = rows["pgd-at"]["median"], rows["pgd-at"]["mean"]
        for row in rows.values():
            row["ratio_to_pgd_at"] = row["median"] / base
            row["mean_ratio_to_pgd_at"] = row["mean"] / base_mean
    return rows


def training_step(
    defense: Any, model: nn.Module, optimiser: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
    device: torch.device,
) -> Callable[[], None]:
    """One full training step of ``defense`` as a call: defense step (its attack included), backward,
    the model's optimiser step and, for a defense with parameters, an Adam step of those."""
    defense = defense.to(device) if isinstance(defense, nn.Module) else defense
    params = [p for p in defense.parameters() if p.requires_grad]
    defense_opt = torch.optim.Adam(params, lr=1e-3) if params else None
    idx = torch.arange(x.shape[0], device=device)

    def step() -> None:
        optimiser.zero_grad(set_to_none=True)
        if defense_opt is not None:
            defense_opt.zero_grad(set_to_none=True)
        out = defense.step(model, x, y, idx)
        out.loss.backward()
        optimiser.step()
        if defense_opt is not None:
            defense_opt.step()

    return step


def one_line(exc: BaseException) -> str:
    """``"TypeName: first line of the message"``: how a failed row is reported."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _format_step(
    name: str, settings: BenchSettings, device: torch.device, autocast_dtype: torch.dtype | None
) -> Callable[[], None]:
    """A fresh model (same seed, so the same weights), batch, optimiser and pgd-at step in format ``name``."""
    model, x, y = _model_and_batch(settings, device)
    in_channels_last = name.endswith("channels_last")
    model = model.to(memory_format=torch.channels_last if in_channels_last else torch.contiguous_format)
    x = channels_last(x, "batch") if in_channels_last else x.contiguous()
    if name.startswith("compile"):
        compile_model(model)
    model.train()
    optimiser = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    config = RunConfig.from_dict(
        {"defense": FORMAT_DEFENSE, "cues": {"names": settings.cues}, "attack": {"steps": settings.steps}}
    )
    return training_step(build_defense(config, autocast_dtype), model, optimiser, x, y, device)


def bench_formats(settings: BenchSettings) -> dict[str, Any]:
    """One pgd-at training step (PGD-``steps`` attack, backward, optimiser step) per execution format.

    Each format gets its own model (the same initial weights), batch and
    optimiser. Its first call is timed alone, before the interleaved rounds
    and outside them (``first_call_s``); for the compiled formats that call
    compiles, and ``compile_s`` is its excess over the format's median step.
    A format that fails to build or to run that first call is reported as
    ``{"failed": "<one-line reason>"}``; the others are still timed. Per
    format: ``min``/``median`` seconds per step, ``images_per_s`` (batch /
    median) and ``ratio_to_eager`` (median / eager's median; < 1 is faster).
    """
    device = resolve_device(settings.device)
    autocast_dtype = resolve_autocast(settings.amp, device)
    steps: dict[str, Callable[[], None]] = {}
    first_call: dict[str, float] = {}
    failed: dict[str, str] = {}
    for name in settings.formats:
        torch.manual_seed(settings.seed)  # the same random starts for every format's first call
        try:
            step = _format_step(name, settings, device, autocast_dtype)
            synchronize(device)
            start = time.perf_counter()
            step()
            synchronize(device)
            first_call[name] = time.perf_counter() - start
        except Exception as exc:  # a missing compiler, an unsupported op: report it, time the rest
            failed[name] = one_line(exc)
            continue
        steps[name] = step
    timed = time_calls(steps, device, warmup=settings.warmup, repeats=settings.repeats) if steps else {}
    rows: dict[str, Any] = {}
    for name in settings.formats:
        if name in failed:
            rows[name] = {"failed": failed[name]}
            continue
        row: dict[str, Any] = timed[name] | {"first_call_s": first_call[name]}
        if name.startswith("compile"):
            row["compile_s"] = max(first_call[name] - row["median"], 0.0)
        row["images_per_s"] = settings.batch_size / row["median"]
        if "eager" in timed:
            row["ratio_to_eager"] = row["median"] / timed["eager"]["median"]
        rows[name] = row
    return {"defense": FORMAT_DEFENSE, "steps": settings.steps} | rows


def bench_cues(settings: BenchSettings) -> dict[str, Any]:
    """Extra cost of the cues per batch: naive (at the clean batch) against shared.

    ``naive``: the shared forward/backward at ``x`` plus the cues, as ``point=clean``
    pays it (the gradient is not reused by PGD). ``shared``: only what the cues
    add once PGD's first gradient is reused (``point=start``): the MC-dropout
    passes and the normalisation; the forward/backward is PGD's own.
    """
    device = resolve_device(settings.device)
    autocast_dtype = resolve_autocast(settings.amp, device)
    model, x, y = _model_and_batch(settings, device)
    extractors = [CUES.build(name, CueOptions(names=settings.cues)) for name in settings.cues]
    warm = CueContext(model, x, y, autocast_dtype)
    warm.input_grad  # the pass PGD's first step would make anyway

    def naive() -> None:
        extract_cues(extractors, CueContext(model, x, y, autocast_dtype))

    def shared() -> None:
        ctx = CueContext(model, x, y, autocast_dtype)
        ctx._logits, ctx._input_grad, ctx._features = warm._logits, warm._input_grad, warm._features
        extract_cues(extractors, ctx)

    rows = time_calls({"naive": naive, "shared": shared}, device, warmup=settings.warmup, repeats=settings.repeats)
    return {"cues": list(settings.cues)} | rows


def bench_pgd_throughput(settings: BenchSettings) -> dict[str, Any]:
    """PGD-``eval_steps`` images/s: ours against torchattacks' PGD, same model, batch and settings."""
    device = resolve_device(settings.device)
    autocast_dtype = resolve_autocast(settings.amp, device)
    model, x, y = _model_and_batch(settings, device)
    model.eval()
    eps, alpha = 8 / 255, 2 / 255
    ours = PGD(steps=settings.eval_steps, alpha=alpha, random_start=True, autocast_dtype=autocast_dtype)
    calls: dict[str, Callable[[], Any]] = {"ades": lambda: ours(model, x, y, eps)}
    try:
        import torchattacks
    except ImportError:
        torchattacks = None
    if torchattacks is not None:
        theirs = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=settings.eval_steps, random_start=True)

        def run_theirs() -> None:
            with eval_mode(model):  # torchattacks changes the model's mode itself
                theirs(x, y)

        calls["torchattacks"] = run_theirs
    rows: dict[str, Any] = time_calls(calls, device, warmup=settings.warmup, repeats=settings.repeats)
    for row in rows.values():
        row["images_per_s"] = x.shape[0] / row["median"]
    if torchattacks is None:
        rows["torchattacks"] = {"skipped": "torchattacks is not installed"}
    else:
        rows["torchattacks"]["version"] = getattr(torchattacks, "__version__", "unknown")
        rows["ratio_ades_to_torchattacks"] = rows["ades"]["images_per_s"] / rows["torchattacks"]["images_per_s"]
    return rows


def run_benchmarks(settings: BenchSettings) -> dict[str, Any]:
    """Every benchmark, with the machine it ran on."""
    torch.manual_seed(settings.seed)
    device = resolve_device(settings.device)
    machine = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "autocast": str(resolve_autocast(settings.amp, device)),
    }
    report: dict[str, Any] = {"settings": attrs.asdict(settings), "machine": machine}
    if not settings.formats_only:
        report["training_step"] = bench_training_steps(settings)
        report["memory_note"] = MEMORY_NOTES["cuda" if device.type == "cuda" else "cpu"]
        report["cue_extraction"] = bench_cues(settings)
        report["pgd_throughput"] = bench_pgd_throughput(settings)
    if settings.formats:
        report["formats"] = bench_formats(settings)
    return report
