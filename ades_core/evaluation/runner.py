"""Per-sample outcomes of clean and attacked predictions over a split.

Everything here keeps per-sample boolean vectors (``True`` = still correct),
so the worst case over several attacks is an AND of vectors: a sample counts
as robust only if it is correct clean *and* under every attack run. Only the
clean-correct samples are attacked (the others can never count as robust),
which makes expensive attacks such as AutoAttack affordable on weak models.

Each attacked batch starts from ``torch.manual_seed(batch_seed(seed, i))``,
``i`` the global index of its first sample, inside
:func:`torch.random.fork_rng` (the caller's random state is left alone), so a
run is deterministic for its seed, independent of which attacks ran before it
and of how its batches are spread over ``torchrun`` ranks (``distributed``:
see :mod:`ades_core.evaluation.sharding`). The model is used in eval mode with
every submodule's mode restored afterwards; no parameter, gradient or BN
statistic changes.

Correct means strictly: a sample counts as correct when its true logit is
larger than every other one, ``z_y > max_{j != y} z_j``
(:func:`strictly_correct`); a tie is an error, whatever the class indices.
Every scoring pass runs in eval mode, and an attack that leaves a submodule
in another mode or changes a buffer (BN statistics) is refused
(:class:`AttackContractError`) rather than scored.

With a :class:`~ades_core.evaluation.resume.RowCheckpoint`, each finished
batch's flags are stored and a resumed run skips the stored batches.
"""

from __future__ import annotations

import time

import attrs
import torch
from torch import Tensor, nn

from ades_core.data import DeviceLoader, ImageTensors
from ades_core.distributed import DistributedContext
from ades_core.errors import AdesError
from ades_core.evaluation.sharding import batch_seed, merge_flags, shard_range
from ades_core.model_mode import autocast_for, eval_mode
from ades_core.norms import NORMS
from ades_core.evaluation.resume import RowCheckpoint
from ades_core.protocols import BudgetedAttack, Named
from ades_core.scoring import strictly_correct


@attrs.frozen(eq=False)
class Outcome:
    """Per-sample correctness of one attack run.

    Attributes:
        correct: bool ``(N,)`` on the CPU: correct clean and after the attack.
        seconds: wall time of the attack and of the forward pass on its output.
    """

    correct: Tensor
    seconds: float

    @property
    def count(self) -> int:
        """How many samples stayed correct."""
        return int(self.correct.sum())

    @property
    def accuracy(self) -> float:
        """``count / N`` (exact in Python floats), 0 for an empty split."""
        return self.count / len(self.correct) if len(self.correct) else 0.0


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rng_devices(device: torch.device) -> list[torch.device]:
    return [device] if device.type == "cuda" else []


def select(data: ImageTensors, index: Tensor) -> ImageTensors:
    """The samples of ``data`` at ``index`` (int64 ``(M,)``), in that order."""
    return ImageTensors(data.images[index], data.labels[index], data.classes)


def clean_correct(
    model: nn.Module,
    data: ImageTensors,
    *,
    batch_size: int,
    device: torch.device,
    autocast_dtype: torch.dtype | None = None,
    distributed: DistributedContext | None = None,
) -> Tensor:
    """bool ``(N,)`` on the CPU: is each sample of ``data`` classified correctly?

    With ``distributed``, each rank predicts its contiguous share of whole
    batches and every rank returns the flags of the whole split.
    """
    n = len(data)
    start, stop = shard_range(n, batch_size, distributed)
    correct = torch.zeros(n, dtype=torch.bool)
    if stop > start:
        part = data if (start, stop) == (0, n) else select(data, torch.arange(start, stop))
        loader = DeviceLoader(part, batch_size=batch_size, device=device, shuffle=False, augment=False)
        parts = []
        with eval_mode(model), torch.no_grad():
            for x, y, _ in loader:
                with autocast_for(x, autocast_dtype):
                    logits = model(x)
                parts.append(strictly_correct(logits, y))
        correct[start:stop] = torch.cat(parts).cpu()
    return merge_flags(correct, distributed)


BALL_TOLERANCE = 1e-5
"""How far (pixel scale) an adversarial input may lie outside its ball or [0, 1]
before the attack is rejected: float32 rounding of ``x +- eps`` is ~1e-7, and
of an L2 norm over a CIFAR image ~1e-6 at most."""


class AttackContractError(AdesError, ValueError):
    """An attack broke its contract (inputs outside its ball or [0, 1], the model's
    modes or buffers changed): its accuracy would be meaningless."""


def _attack_name(attack: BudgetedAttack) -> str:
    return attack.name if isinstance(attack, Named) and isinstance(attack.name, str) else type(attack).__name__


class ModelGuard:
    """Refuse an attack that leaves the model in other modes or with other buffers.

    Taken inside :func:`~ades_core.model_mode.eval_mode`, so every submodule
    is in eval mode; :meth:`after_attack` checks (host-side, no device read)
    that it still is, and accumulates on the device whether any buffer (BN
    running statistics, ``num_batches_tracked``) differs from its value here;
    :meth:`check_buffers` reads that once.
    """

    def __init__(self, model: nn.Module, attack: BudgetedAttack) -> None:
        self.model = model
        self.attack = attack
        self.modes = [m.training for m in model.modules()]
        self.buffers = [b.detach().clone() for b in model.buffers()]
        self.changed: Tensor | None = None

    def after_attack(self) -> None:
        modes = [m.training for m in self.model.modules()]
        if modes != self.modes:
            moved = sum(a != b for a, b in zip(modes, self.modes, strict=True))
            raise AttackContractError(
                f"attack {_attack_name(self.attack)} left {moved} submodule(s) of the model in another "
                "train/eval mode; an attack must restore every submodule's mode (its results are not scored)"
            )
        for now, before in zip(self.model.buffers(), self.buffers, strict=True):
            differs = (now.detach() != before).any()
            self.changed = differs if self.changed is None else self.changed | differs

    def check_buffers(self) -> None:
        if self.changed is not None and bool(self.changed):
            raise AttackContractError(
                f"attack {_attack_name(self.attack)} changed the model's buffers (BN running statistics); "
                "it ran the model in train mode, so every later result would be of another model"
            )


def _outside(x: Tensor, x_adv: Tensor, eps: Tensor | float, norm: str = "linf") -> Tensor:
    """0-d: how far ``x_adv`` ``(B, C, H, W)`` lies beyond its ``eps`` ball (of ``norm``) or the
    [0, 1] box (0 if inside)."""
    radius = eps.detach().float().flatten() if isinstance(eps, Tensor) else float(eps)
    x32, adv = x.float(), x_adv.detach().float()
    beyond_ball = (NORMS.get(norm).distance(adv - x32) - radius).amax()
    beyond_box = torch.maximum(-adv.amin(), adv.amax() - 1.0)
    return torch.maximum(beyond_ball, beyond_box).clamp(min=0.0)


def _check_inside(excess: Tensor, attack: BudgetedAttack, eps: Tensor | float, norm: str = "linf") -> None:
    """One host read per attack run: refuse results from inputs outside the ball or the box."""
    worst = float(excess)
    if worst > BALL_TOLERANCE:
        raise AttackContractError(
            f"attack {_attack_name(attack)} returned inputs up to {worst:.3g} outside the {NORMS.get(norm).label} ball "
            f"(eps {float(eps.max()) if isinstance(eps, Tensor) else eps:.4g}) or [0, 1]; "
            "its accuracy would not be robust accuracy at that budget: fix the attack"
        )


def attack_outcome(
    model: nn.Module,
    data: ImageTensors,
    attack: BudgetedAttack,
    eps: float,
    *,
    clean: Tensor,
    batch_size: int,
    device: torch.device,
    seed: int = 0,
    autocast_dtype: torch.dtype | None = None,
    distributed: DistributedContext | None = None,
    checkpoint: RowCheckpoint | None = None,
    norm: str = "linf",
) -> Outcome:
    """Which samples stay correct under ``attack`` at budget ``eps`` in ``norm`` (L-inf: [0, 1] pixel
    scale; L2: a Euclidean radius). Every returned image is checked to lie in its ball of
    ``norm`` and in [0, 1] before it is scored.

    Only the samples with ``clean[i]`` True are attacked, in batches of
    ``batch_size`` of them in index order; the others are reported as not
    robust. Each batch's randomness is seeded from ``seed`` and the global
    index of its first sample, so the outcome is deterministic for ``seed``.
    Robustness is decided here, by the model on the returned images
    (:func:`strictly_correct`, eval mode), never by an attack's own flags.
    With ``distributed``, the attacked batches are split into contiguous
    shares, one per rank, and every rank returns the outcome of the whole
    split, equal to the single-process one. With ``checkpoint``, batches
    already stored are not attacked again and new ones are stored as they
    finish (one host read per batch).

    Raises:
        AttackContractError: the attack returned inputs outside the ball or
            [0, 1], or changed the model's modes or buffers.
    """
    start = time.perf_counter()
    index = clean.nonzero().squeeze(1)
    first, stop = shard_range(len(index), batch_size, distributed)
    mine = index[first:stop]
    correct = torch.zeros(len(data), dtype=torch.bool)
    if len(mine):
        loader = DeviceLoader(select(data, mine), batch_size=batch_size, device=device, shuffle=False, augment=False)
        firsts = mine[::batch_size].tolist()
        parts: list[Tensor] = []
        excess = torch.zeros((), device=device)  # the largest step outside the ball or the box
        with torch.random.fork_rng(devices=_rng_devices(device)), eval_mode(model):
            guard = ModelGuard(model, attack)
            for first_index, (x, y, _) in zip(firsts, loader, strict=True):
                stored = None if checkpoint is None else checkpoint.get(first_index, len(y))
                if stored is not None:
                    parts.append(stored.to(device))
                    continue
                torch.manual_seed(batch_seed(seed, first_index))
                x_adv = attack(model, x, y, eps)
                guard.after_attack()
                excess = torch.maximum(excess, _outside(x, x_adv, eps, norm))
                with eval_mode(model), torch.no_grad(), autocast_for(x_adv, autocast_dtype):
                    logits = model(x_adv)
                flags = strictly_correct(logits, y)
                parts.append(flags)
                if checkpoint is not None:  # check before storing: a stored batch is never re-checked
                    _check_inside(excess, attack, eps, norm)
                    guard.check_buffers()
                    checkpoint.put(first_index, flags)
        _check_inside(excess, attack, eps, norm)
        guard.check_buffers()
        correct[mine] = torch.cat(parts).cpu()
    if checkpoint is not None:
        checkpoint.finish()
    correct = merge_flags(correct, distributed)
    _sync(device)
    return Outcome(correct=correct, seconds=time.perf_counter() - start)
