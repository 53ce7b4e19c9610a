"""The one public way to assemble a run: ``build(RunConfig) -> TrainingSetup``.

    >>> from ades_core import RunConfig, build
    >>> config = RunConfig.from_dict({
    ...     "defense": "ades",
    ...     "data": {"dataset": "imagefolder", "data_dir": "cifar10-imagefolder", "train_subset": 512},
    ...     "model": {"backbone": "ades_cnn_small"},
    ...     "optim": {"epochs": 1},
    ... })                                                   # doctest: +SKIP
    >>> build(config).fit("runs/ades-small")                 # doctest: +SKIP

Components are looked up by name in their registries (built-ins and
plugins) and checked against their protocols once, here.
"""

from __future__ import annotations

import math
from typing import Any

import attrs
import torch
from typing_extensions import get_protocol_members

from ades_core.batch_reduction import LOCAL, BatchReduction, batch_reduction
from ades_core.config import RunConfig
from ades_core.data import DataRequest, DeviceLoader, load_datasets
from ades_core.defenses import DefenseParts
from ades_core.distributed import active, convert_sync_batchnorm, wrap_ddp
from ades_core.data.validation_split import hold_out
from ades_core.engine.lr_schedules import build_lr_schedule, per_iteration
from ades_core.engine.optimizers import build_optimizers
from ades_core.engine.runfolder.model_files import ModelSpec
from ades_core.engine.runfolder.resolved import resolved_record
from ades_core.engine.setup import TrainingSetup
from ades_core.engine.validation import held_out_attack
from ades_core.protocols import BudgetedAttack, CueExtractor, Defense, Scheduler, replays_of
from ades_core.registries import ATTACKS, CUES, DEFENSES, SCHEDULER_OBJECTIVES, SCHEDULERS
from ades_core.errors import AdesError
from ades_core.registry import Registry
from ades_core.schedulers.objectives import SchedulerObjective, with_grad_norm


class BuildError(AdesError, ValueError):
    """Parts that do not fit together; one line."""


def resolve_device(name: str) -> torch.device:
    """``auto`` -> ``cuda`` when available, else ``cpu``; a CUDA name without CUDA fails clearly."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BuildError(f"device {name!r} asked for but CUDA is not available; use --device cpu or auto")
    return device


BF16_CAPABILITY = (8, 0)
"""The CUDA compute capability from which bf16 runs natively on tensor cores (Ampere)."""

COMPILE_CAPABILITY = (7, 0)
"""The oldest CUDA compute capability inductor's Triton kernels (``torch.compile``) support (Volta)."""


def _capability(device: torch.device) -> tuple[int, int]:
    return torch.cuda.get_device_capability(device)


def _gpu(device: torch.device) -> str:
    major, minor = _capability(device)
    return f"{torch.cuda.get_device_name(device)} (compute capability {major}.{minor})"


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes in bf16 natively: the CPU, or a GPU of compute capability 8.0+.

    (``torch.cuda.is_bf16_supported()`` also says yes for older GPUs, which
    emulate bf16 several times slower than fp16.)
    """
    return device.type != "cuda" or _capability(device) >= BF16_CAPABILITY


def resolve_autocast(amp: str, device: torch.device) -> torch.dtype | None:
    """Mixed-precision dtype: ``auto`` is bf16 on CUDA (fp16 on GPUs without native bf16), off on CPU.

    Raises:
        BuildError: ``bf16`` asked for on a GPU without native bf16 (compute capability < 8.0).
    """
    if amp == "off":
        return None
    if amp == "bf16":
        if not native_bf16(device):
            raise BuildError(
                f"--amp bf16 asked for, but {_gpu(device)} has no native bf16 (it needs compute "
                "capability 8.0+) and would emulate it slowly; use --amp fp16 or --amp off"
            )
        return torch.bfloat16
    if amp == "fp16":
        return torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if native_bf16(device) else torch.float16
    return None


def training_passes(epochs: int, replays: int) -> int:
    """Passes over the data of an ``epochs``-epoch run whose defense replays each minibatch
    ``replays`` times (Free-AT's m): ``ceil(epochs / replays)``, so the cost in
    forward/backward passes matches ``epochs`` ordinary epochs (100 epochs, m = 8: 13)."""
    return max(1, math.ceil(epochs / max(1, replays)))


def _protocol_members(protocol: type) -> list[str]:
    """The attributes and methods a ``typing.Protocol`` class asks for, sorted
    (``typing_extensions.get_protocol_members``, ``typing``'s own from Python 3.13)."""
    return sorted(get_protocol_members(protocol))


def _checked(obj: Any, protocol: type, what: str, source: str = "ades") -> Any:
    """``obj`` when it satisfies ``protocol``; otherwise a one-line error naming what is missing.

    ``source`` is the registry entry's origin: ``"ades"`` or a plugin's ``dist==version``.
    """
    if not isinstance(obj, protocol):
        missing = [m for m in _protocol_members(protocol) if not hasattr(obj, m)]
        origin = f" from plugin {source}" if source != "ades" else ""
        lacking = f" (missing: {', '.join(missing)})" if missing else ""
        raise BuildError(
            f"{what}{origin} built a {type(obj).__name__}, which does not satisfy the "
            f"{protocol.__name__} protocol{lacking}"
        )
    return obj


def _build_part(
    registry: Registry, name: str, protocol: type, what: str, *args: Any, **kwargs: Any
) -> Any:
    """Build ``name`` from ``registry`` and check it against ``protocol``.

    A plugin's factory that raises is reported as a :class:`BuildError` naming
    the plugin and its distribution; built-in factories raise as they are.
    """
    source = registry.entry(name).source
    try:
        obj = registry.build(name, *args, **kwargs)
    except Exception as exc:
        if source == "ades":
            raise
        first = (str(exc).strip().splitlines() or [""])[0]
        raise BuildError(
            f"{what} from plugin {source} failed to build: {type(exc).__name__}: {first}"
        ) from exc
    return _checked(obj, protocol, what, source)


def _reduction_for(name: str, reduction: BatchReduction) -> dict[str, BatchReduction]:
    """``{"reduction": reduction}`` for an objective whose record says ``reduces_batch``, else
    nothing (a factory that takes no statistics over the batch is not passed one)."""
    return {"reduction": reduction} if SCHEDULER_OBJECTIVES.entry(name).info.reduces_batch else {}


def build_defense(
    config: RunConfig,
    autocast_dtype: torch.dtype | None = None,
    *,
    num_samples: int = 0,
    reduction: BatchReduction = LOCAL,
) -> Defense:
    """The defense of ``config`` with its cues, scheduler, objective and attack.

    ``num_samples``: the training-set size, for defenses that keep per-sample
    state indexed by dataset index (IAAT, MMA). ``reduction``: how the parts reduce over
    the batch (:mod:`ades_core.batch_reduction`; :func:`build` passes the global batch's
    under ``torchrun``), handed to the defense (``DefenseParts.reduction``; its cues carry it
    to the scheduler), to ``with_grad_norm`` and to the objective factories that say ``reduces_batch``.
    """
    entry = DEFENSES.entry(config.defense)
    uses_cues = entry.info.uses_cues
    cue_names = config.cues.names if uses_cues else ()
    cues = tuple(
        _build_part(CUES, name, CueExtractor, f"cue {name!r}", config.cues) for name in cue_names
    )
    scheduler_name = config.scheduler_name()
    learnable = SCHEDULERS.entry(scheduler_name).info.learnable  # as the defense needs: checked by the config
    objective = None
    if learnable:
        objective = _build_part(
            SCHEDULER_OBJECTIVES,
            config.scheduler.objective,
            SchedulerObjective,
            f"scheduler objective {config.scheduler.objective!r}",
            config.scheduler,
            budget=config.budget,
            **_reduction_for(config.scheduler.objective, reduction),
        )
        objective = with_grad_norm(objective, config.scheduler.grad_norm, reduction)
    scheduler = _build_part(
        SCHEDULERS,
        scheduler_name,
        Scheduler,
        f"scheduler {scheduler_name!r}",
        config.scheduler,
        num_cues=len(cues),
        budget=config.budget,
        allocation=objective.allocation if objective is not None else "free",
    )
    attack = _build_part(
        ATTACKS,
        config.attack.name,
        BudgetedAttack,
        f"attack {config.attack.name!r}",
        config.attack,
        autocast_dtype=autocast_dtype,
    )
    parts = DefenseParts(
        cues=cues,
        scheduler=scheduler,
        attack=attack,
        objective=objective,
        autocast_dtype=autocast_dtype,
        cue_point=config.cues.point,
        options=config.defense_options,
        budget=config.budget,
        attack_options=config.attack,
        num_samples=num_samples,
        reverse=config.scheduler.reverse,
        shuffle=config.scheduler.shuffle,
        reduction=reduction,
    )
    return _build_part(DEFENSES, config.defense, Defense, f"defense {config.defense!r}", parts)


def check_image_budgets(config: RunConfig, dims: int) -> None:
    """Refuse a budget beyond the diameter of the image box (``sqrt(C * H * W)`` in L2), once the
    data tell the image size: such a ball holds every image, so the attack is unconstrained.

    Raises:
        BuildError: one line naming the field, its value and the diameter.
    """
    from ades_core.norms import NORMS

    if dims <= 0:
        return
    threat = NORMS.get(config.norm)
    diameter = threat.diameter(dims)
    budgets = config.budget_fields() | {"budget.eps_min + budget.lam": config.budget.eps_max}
    for field, value in budgets.items():
        if value is not None and value > diameter + 1e-9:
            raise BuildError(
                f"{field} = {threat.format(value)} exceeds the {threat.label} diameter {diameter:.4g} of "
                f"[0, 1]^{dims}: a ball that large holds every image; lower it"
            )


def compile_model(model: torch.nn.Module, *, backend: str = "inductor") -> torch.nn.Module:
    """``torch.compile`` the passes ades runs, in place: ``forward`` and, where the model
    has them, ``forward_features`` and ``forward_head`` (shared cues call those).

    The module is not wrapped, so parameter names, ``state_dict`` keys and
    saved files are the same as without compilation.

    Raises:
        BuildError: the model is on a GPU older than inductor supports
            (:data:`COMPILE_CAPABILITY`); without this check the first call
            would fail deep inside the compiler.
    """
    first = next(model.parameters(), None)
    if backend == "inductor" and first is not None and first.device.type == "cuda":
        if _capability(first.device) < COMPILE_CAPABILITY:
            raise BuildError(
                f"--compile needs compute capability 7.0+ (inductor's Triton kernels), "
                f"{_gpu(first.device)} is older; run without --compile"
            )
    for name in ("forward", "forward_features", "forward_head"):
        if hasattr(model, name):
            setattr(model, name, torch.compile(getattr(model, name), backend=backend))
    return model


def build(config: RunConfig) -> TrainingSetup:
    """Load the data, build model, defense, optimisers and loaders for ``config``.

    Seeds torch's generators with ``config.seed`` first, so the same config
    builds the same initial weights.

    Under ``torchrun`` (an active :mod:`ades_core.distributed` context): the
    device is the rank's own, ``data.batch_size`` is the *global* batch (each
    rank loads ``batch_size / world_size`` of it), BatchNorm is synchronised
    with ``config.sync_bn``, the model is wrapped in ``DistributedDataParallel``
    (``setup.train_model``; ``setup.model`` stays the plain module), and after
    building, torch's generators are re-seeded per rank (``seed + rank``) so
    random starts differ between ranks.

    ``setup.config`` is ``config`` with the scheduler it resolved to named
    (:meth:`RunConfig.with_resolved_scheduler`): ``config.json``, the model
    file and the training state record the scheduler the run used, not ``null``.
    """
    config = config.with_resolved_defaults()
    dist = active()
    torch.manual_seed(config.seed)
    device = resolve_device(config.device) if dist is None else dist.device
    if dist is not None and config.data.batch_size % dist.world_size:
        raise BuildError(
            f"the global batch size {config.data.batch_size} is not divisible by the "
            f"{dist.world_size} ranks; pick --batch-size as a multiple of --nproc-per-node x nodes"
        )
    autocast_dtype = resolve_autocast(config.amp, device)
    data_cfg = config.data
    data = load_datasets(
        data_cfg.dataset,
        DataRequest(
            root=data_cfg.data_dir,
            train_subset=data_cfg.train_subset,
            test_subset=data_cfg.test_subset,
            seed=config.seed,
            download=data_cfg.download,
            image_size=data_cfg.image_size,
        ),
    )
    val_data = None
    if config.val.split:  # held out of the loaded training images, from the seed alone
        held = hold_out(data.train, config.val.split, config.seed)
        data = attrs.evolve(data, train=held.train)
        val_data = held.val
    spec = ModelSpec(
        backbone=config.model.backbone,
        num_classes=data.num_classes,
        mean=data.mean,
        std=data.std,
        drop_rate=config.model.drop_rate,
    )
    check_image_budgets(config, data.train.images[0].numel() if len(data.train) else 0)
    model = spec.build().to(device)
    if dist is not None and config.sync_bn:
        model = convert_sync_batchnorm(model, device)
    # channels_last on every device: measured side by side (docs/benchmarks.md), a PGD-AT
    # step of the small CNN takes about 0.8x the time of NCHW on the CPU as well
    model = model.to(memory_format=torch.channels_last)
    if config.compile:
        compile_model(model)
    # components reduce over the global batch under torchrun because they are handed it
    defense = build_defense(config, autocast_dtype, num_samples=len(data.train), reduction=batch_reduction(dist))
    if isinstance(defense, torch.nn.Module):
        defense = defense.to(device)
    train_model = model if dist is None else wrap_ddp(model, defense, dist)
    # a defense that replays each minibatch m times (free-at) trains ceil(epochs / m) passes
    passes = training_passes(config.optim.epochs, replays_of(defense))
    optim = config.optim
    optimizers = build_optimizers(config, model, defense, device, autocast_dtype)
    world = 1 if dist is None else dist.world_size
    train_loader = DeviceLoader(
        data.train,
        batch_size=data_cfg.batch_size // world,
        device=device,
        shuffle=True,
        augment=data_cfg.augment,
        drop_last=False,
        seed=config.seed,
        rank=0 if dist is None else dist.rank,
        world_size=world,
    )
    if len(train_loader) == 0:
        raise BuildError(
            f"{len(data.train)} training images make no full global batch of {data_cfg.batch_size}"
        )
    # the schedule spans the passes (milestones scale with them); per-iteration schedules
    # count every optimiser step, a replaying defense's replays included
    replays = replays_of(defense)
    lr_schedule = build_lr_schedule(optimizers.model, optim, epochs=passes, steps_per_epoch=len(train_loader) * replays)
    eval_attack = held_out_attack(config, autocast_dtype)
    uses_cues = DEFENSES.entry(config.defense).info.uses_cues
    resolved = resolved_record(
        config, device=device, autocast_dtype=autocast_dtype, data=data, val_data=val_data, defense=defense,
        uses_cues=uses_cues, learnable=optimizers.defense is not None, passes=passes, dist=dist,
    )
    if dist is not None:
        torch.manual_seed(config.seed + dist.rank)
    return TrainingSetup(
        config=config,
        resolved=resolved,
        device=device,
        autocast_dtype=autocast_dtype,
        model=model,
        model_spec=spec,
        defense=defense,
        optimizer=optimizers.model,
        lr_schedule=lr_schedule,
        defense_optimizer=optimizers.defense,
        grad_scaler=optimizers.grad_scaler,
        train_loader=train_loader,
        test_data=data.test,
        val_data=val_data,
        lr_per_iteration=per_iteration(optim),
        eval_attack=eval_attack,
        epochs=passes,
        dist=dist,
        train_model=train_model,
    )

