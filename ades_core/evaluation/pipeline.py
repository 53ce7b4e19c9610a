"""An evaluation request carried out: model, data, attacks prepared; the suite run; eval.json written.

The request is an :class:`~ades_core.evaluation.request.EvalRequest`; the
suite runs with its resume state beside the report.

Two steps, so that a caller can say what is about to run between them:

* :func:`prepare_evaluation` reads and checks everything the evaluation
  needs (the run's norm, the budgets, the attacks and their optional
  packages, the model, the test split) and runs nothing; every mistake in
  the request surfaces here as an :class:`~ades_core.errors.AdesError`.
* :func:`run_evaluation` runs the suite, keeping every finished batch in the
  resume state beside the report (so a killed evaluation continues with
  ``resume=True``), and writes the report on the main rank.

Under ``torchrun`` both run on every rank (``dist``); the ranks hold the same
result and rank 0 alone writes it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import torch
from torch import nn

from ades_core.errors import AdesError
from ades_core.evaluation.masking import MaskingCheckConfig
from ades_core.evaluation.report import build_report, write_report
from ades_core.evaluation.request import EvalRequest
from ades_core.evaluation.resume import ResumeStore, file_sha256, state_path, tensor_sha256
from ades_core.evaluation.sources import EvalData, RunInfo, describe_run, load_test_data
from ades_core.evaluation.specs import AttackSpec, resolve_attacks
from ades_core.evaluation.suite import AttackRow, EvalResult, evaluate

if TYPE_CHECKING:
    from ades_core.distributed import DistributedContext


@attrs.frozen(kw_only=True)
class PreparedEvaluation:
    """Everything an evaluation reads, loaded and checked; nothing has run yet.

    Attributes:
        request: what was asked.
        model: the classifier on ``device``, taking images in [0, 1].
        info: the model file and what its run recorded.
        source: the test images (``(N, C, H, W)`` uint8) and where they came from.
        specs: the attacks, resolved in ``norm``.
        norm: the evaluation's norm; ``trained_norm`` the run's (``None`` for a
            model ades did not train).
        eps: the budget in ``norm``; ``sweep`` the PGD-20 sweep's budgets.
        checks: the masking checks' settings, ``None`` when they do not run.
        device: where the forward passes run.
        report_path: where ``eval.json`` goes.
    """

    request: EvalRequest
    model: nn.Module
    info: RunInfo
    source: EvalData
    specs: tuple[AttackSpec, ...]
    norm: str
    trained_norm: str | None
    eps: float
    sweep: tuple[float, ...]
    checks: MaskingCheckConfig | None
    device: torch.device
    report_path: Path


@attrs.frozen(kw_only=True)
class EvalOutcome:
    """What :func:`run_evaluation` produced: the result on every rank; the report on the main rank.

    Attributes:
        result: the suite's rows, sweep and checks.
        payload: the ``eval.json`` mapping (``None`` off the main rank).
        report_file: the file written (``None`` off the main rank).
    """

    result: EvalResult
    payload: dict[str, Any] | None
    report_file: Path | None


def trained_norm(model: Path | None) -> str | None:
    """The norm the run in ``model`` trained in (``linf`` for runs from before L2), or ``None``
    when there is no readable run there (the evaluation then reports that itself)."""
    try:
        info = describe_run(model)
    except AdesError:
        return None
    return (info.config.get("attack") or {}).get("norm", "linf")


def prepare_evaluation(request: EvalRequest, *, dist: DistributedContext | None = None) -> PreparedEvaluation:
    """Resolve ``request``: the norm, budgets and attacks first (so a mistake there fails before
    anything is loaded), then the model and its test split.

    Raises:
        AdesError: the first mistake, in one line (an unknown attack, a budget out of
            range, a missing optional package, no model file, no data).
    """
    from ades_core.builder import resolve_device
    from ades_core.engine import load_model

    recorded = None if request.external is not None else trained_norm(request.model)
    norm = request.norm or recorded or "linf"
    eps, sweep = request.budgets(norm)
    specs = tuple(resolve_attacks(request.attacks, norm))
    for spec in specs:  # fail on a missing optional dependency before loading anything
        spec.build()
    device = resolve_device(request.device) if dist is None else dist.device
    if request.external is None:
        info = describe_run(request.model, request.weights)
    else:
        from ades_core.evaluation.external import load_external_model

        external = request.external
        model, info = load_external_model(
            external.arch, external.weights, num_classes=external.num_classes, mean=external.mean,
            std=external.std, device=device,
        )
    source = load_test_data(
        info, dataset=request.dataset, data_dir=request.data_dir, n=request.n, seed=request.seed,
        order=request.order, image_size=request.image_size,
    )
    if request.external is None:
        model = load_model(info.model_file, device=device)
    return PreparedEvaluation(
        request=request, model=model, info=info, source=source, specs=specs, norm=norm, trained_norm=recorded,
        eps=eps, sweep=sweep, checks=MaskingCheckConfig(n=request.check_n) if request.checks else None,
        device=device, report_path=request.out or info.default_eval_file,
    )


def open_resume_store(prepared: PreparedEvaluation, *, dist: DistributedContext | None = None) -> ResumeStore:
    """The resume state of this evaluation (this rank's), fingerprinted by everything its results depend on."""
    request = prepared.request
    rank, world_size = (0, 1) if dist is None else (dist.rank, dist.world_size)
    fingerprint = {
        "model_sha256": file_sha256(prepared.info.model_file),
        "data_sha256": tensor_sha256(prepared.source.data.images, prepared.source.data.labels),
        "dataset": prepared.source.describe() | {"data_dir": None},
        "attacks": [
            {"label": s.label, "attack": s.attack, "options": attrs.asdict(s.options)} for s in prepared.specs
        ],
        "norm": prepared.norm,
        "eps": prepared.eps,
        "sweep": sorted(set(prepared.sweep)),
        "seed": request.seed,
        "batch_size": request.batch_size,
        "precision": request.precision,
        "checks": None if prepared.checks is None else attrs.asdict(prepared.checks),
        "world_size": world_size,
    }
    return ResumeStore(state_path(prepared.report_path, rank, world_size), fingerprint, resume=request.resume)


def run_evaluation(
    prepared: PreparedEvaluation,
    *,
    dist: DistributedContext | None = None,
    progress: Callable[[str], None] | None = None,
    on_row: Callable[[AttackRow], None] | None = None,
    notice: Callable[[str], None] | None = None,
) -> EvalOutcome:
    """Run the suite of ``prepared`` and write its report (on the main rank).

    ``progress`` hears each stage as it starts, ``on_row`` each finished row,
    ``notice`` whether the resume state was picked up. Whatever stops the
    suite (an error, ``KeyboardInterrupt``, ``SystemExit``), every finished
    batch is saved first for a later ``resume=True``; the state is removed once
    the report is written.
    """
    request = prepared.request
    store = open_resume_store(prepared, dist=dist)
    if notice is not None and store.loaded:
        notice(f"resuming: {store.resumed_batches} attacked batches kept in {store.path}")
    elif notice is not None and request.resume:
        notice(f"--resume: no state at {store.path}; starting from the beginning")
    try:
        result = evaluate(
            prepared.model, prepared.source.data, prepared.specs, prepared.eps, device=prepared.device,
            batch_size=request.batch_size, seed=request.seed, sweep=prepared.sweep, checks=prepared.checks,
            precision=request.precision, progress=progress, on_row=on_row, distributed=dist, resume=store,
            norm=prepared.norm,
        )
    except BaseException:
        store.save(force=True)  # keep every finished batch for resume
        raise
    if dist is not None and not dist.is_main:
        store.remove()
        return EvalOutcome(result=result, payload=None, report_file=None)  # rank 0 alone writes
    world_size = 1 if dist is None else dist.world_size
    payload = build_report(
        result, prepared.info, prepared.source, device=prepared.device, batch_size=request.batch_size,
        world_size=world_size,
    )
    target = write_report(prepared.report_path, payload)
    store.remove()
    return EvalOutcome(result=result, payload=payload, report_file=target)


__all__ = [
    "EvalOutcome",
    "PreparedEvaluation",
    "open_resume_store",
    "prepare_evaluation",
    "run_evaluation",
    "trained_norm",
]
