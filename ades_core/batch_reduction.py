"""Reductions over the batch, passed to the components that compute batch statistics.

ADES defines some quantities over the *batch*: the cue min-max normalisation,
the fixed mean of sigma, the scheduler objectives' RMS, median and means, the
allocation controls' mean, per-sample state written by dataset index. Under
``torchrun`` each rank holds a slice of the global batch, and these must be
computed over the global batch, so that N ranks with B/N samples each follow
the definition of one process with B samples.

A component never finds out by itself where it runs: it is handed a
:class:`BatchReduction` and reduces through it.

* :data:`LOCAL`: one process; every reduction is over the tensor it is given
  (no communication, no copy). The default of every component, so a
  component built directly on one process computes what it always did.
* :class:`RankReduction`: over the ranks of a
  :class:`~ades_core.distributed.DistributedContext` (all-reduces and an
  all-gather on the default process group). The builder makes it with
  :func:`batch_reduction` from the setup's context and hands it down: to the
  defense (``DefenseParts.reduction``), which puts it on the
  :class:`~ades_core.cue_context.CueContext` (the cue normalisation) and uses
  it for the allocation controls and per-sample state; to the schedulers and
  scheduler objectives whose registry record says ``reduces_batch``
  (their factories then take ``reduction=``); to
  :func:`~ades_core.schedulers.objectives.with_grad_norm`.

Every method of a rank reduction is a collective: every rank calls it, in the
same order, with the same shapes (the sharded loader gives every rank an
equal slice of each global batch).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import torch
import torch.distributed as dist
from torch import Tensor, nn

if TYPE_CHECKING:
    from ades_core.distributed import DistributedContext


@runtime_checkable
class BatchReduction(Protocol):
    """How a component reduces over its batch: the local one, or the global batch across ranks.

    Shapes: ``values`` is ``(B,)`` or ``(B, k)``, the component's own slice of
    the batch. :meth:`mean` is differentiable (its gradient is that of the
    global mean w.r.t. the rank's own samples); the others are detached.
    Built-ins: :data:`LOCAL`, :class:`RankReduction` (this module; made by
    :func:`batch_reduction`).
    """

    def min(self, values: Tensor) -> Tensor:
        """Column minima ``(1, k)`` (``(1,)`` for ``(B,)``) over the batch, detached."""
        ...

    def max(self, values: Tensor) -> Tensor:
        """Column maxima ``(1, k)`` (``(1,)`` for ``(B,)``) over the batch, detached."""
        ...

    def mean(self, values: Tensor) -> Tensor:
        """The mean of ``values`` ``(B,)`` over the batch, a 0-d tensor, with its gradient."""
        ...

    def total(self, values: Tensor) -> Tensor:
        """The sum of ``values`` over the batch, a 0-d tensor, detached."""
        ...

    def gather(self, values: Tensor) -> Tensor:
        """``values`` ``(B, ...)`` of the whole batch, in rank order ``(world_size * B, ...)``, detached."""
        ...

    def assign(self, buffer: Tensor, idx: Tensor, values: Tensor) -> None:
        """``buffer[idx] = values`` for every sample of the batch (per-sample state by dataset index).

        ``buffer`` ``(N,)`` float, ``idx`` ``(B,)`` int64 in ``[0, N)``,
        ``values`` ``(B,)`` cast to ``buffer``'s dtype.
        """
        ...

    def average_gradients(self, params: Sequence[nn.Parameter]) -> None:
        """Each ``.grad`` replaced by its mean over the ranks: the gradient of a loss that is a
        mean over the batch, when each rank's is the mean over its slice (parameters without a
        gradient are skipped)."""
        ...


class LocalReduction:
    """One process: every reduction is over the tensor given (no communication, no copy)."""

    def min(self, values: Tensor) -> Tensor:
        return values.amin(dim=0, keepdim=True)

    def max(self, values: Tensor) -> Tensor:
        return values.amax(dim=0, keepdim=True)

    def mean(self, values: Tensor) -> Tensor:
        return values.mean()

    def total(self, values: Tensor) -> Tensor:
        return values.detach().sum()

    def gather(self, values: Tensor) -> Tensor:
        return values.detach()

    def assign(self, buffer: Tensor, idx: Tensor, values: Tensor) -> None:
        buffer[idx] = values.detach().to(buffer.dtype)

    def average_gradients(self, params: Sequence[nn.Parameter]) -> None:
        return None

    def __repr__(self) -> str:
        return "LOCAL"


LOCAL = LocalReduction()
"""The single-process reduction: what every component uses unless it is handed another."""


class RankReduction:
    """Over the global batch held by the ranks of ``context`` (the default process group).

    * ``min``/``max``: ``all_reduce`` MIN/MAX of the rank's column extremes;
    * ``mean``: ``(sum over ranks of the local sums) / (sum of the local
      counts)``, one all-reduce of two numbers whose backward all-reduces the
      incoming gradients (:func:`sum_over_ranks`), so each rank receives the
      gradient of the global mean through its own samples; every rank must
      run the backward;
    * ``total``: ``all_reduce`` SUM; ``gather``: ``all_gather`` of equal-sized slices;
    * ``assign``: every rank's ``(idx, values)`` summed into zero ``(N,)``
      buffers with a count (one SUM all-reduce of a ``(2, N)`` tensor) and
      written on every rank, so the buffers stay identical across ranks; a
      sample two ranks hold at once (the sampler's padding) gets the mean;
    * ``average_gradients``: one flat all-reduce, divided by the world size.
    """

    def __init__(self, context: DistributedContext) -> None:
        self.context = context

    def min(self, values: Tensor) -> Tensor:
        return self.context.all_reduce(values.amin(dim=0, keepdim=True), "min")

    def max(self, values: Tensor) -> Tensor:
        return self.context.all_reduce(values.amax(dim=0, keepdim=True), "max")

    def mean(self, values: Tensor) -> Tensor:
        local = torch.stack([values.sum(), values.new_full((), float(values.numel()))])
        total = sum_over_ranks(local)
        return total[0] / total[1].detach()

    def total(self, values: Tensor) -> Tensor:
        return self.context.all_reduce(values.detach().sum(), "sum")

    def gather(self, values: Tensor) -> Tensor:
        parts = [torch.empty_like(values) for _ in range(self.context.world_size)]
        dist.all_gather(parts, values.detach().contiguous())
        return torch.cat(parts)

    def assign(self, buffer: Tensor, idx: Tensor, values: Tensor) -> None:
        values = values.detach().to(buffer.dtype)
        both = torch.zeros(2, buffer.shape[0], dtype=buffer.dtype, device=buffer.device)
        both[0].index_add_(0, idx, values)
        both[1].index_add_(0, idx, torch.ones_like(values))
        both = self.context.all_reduce(both, "sum")
        buffer.copy_(torch.where(both[1] > 0, both[0] / both[1].clamp(min=1), buffer))

    def average_gradients(self, params: Sequence[nn.Parameter]) -> None:
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.context.world_size
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()

    def __repr__(self) -> str:
        return f"RankReduction(rank={self.context.rank}, world_size={self.context.world_size})"


def batch_reduction(context: DistributedContext | None) -> BatchReduction:
    """The reduction of a run: :data:`LOCAL` on one process, :class:`RankReduction` under ``torchrun``."""
    return LOCAL if context is None else RankReduction(context)


class _SumOverRanks(torch.autograd.Function):
    """``all_reduce`` SUM with its exact backward: the gradient is summed over ranks too.

    For ``y = sum_r x_r`` seen on every rank, ``dL/dx_r = sum_r' dL_r'/dy``
    where ``L_r'`` is rank r''s part of the loss: the backward all-reduces the
    incoming gradients. Every rank must run the backward.
    """

    @staticmethod
    def forward(ctx: object, tensor: Tensor) -> Tensor:  # type: ignore[override]
        out = tensor.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx: object, grad: Tensor) -> Tensor:  # type: ignore[override]
        out = grad.contiguous().clone()
        dist.all_reduce(out)
        return out


def sum_over_ranks(tensor: Tensor) -> Tensor:
    """``tensor`` summed over the ranks of the default process group, differentiably (a collective)."""
    return _SumOverRanks.apply(tensor)


__all__ = ["LOCAL", "BatchReduction", "LocalReduction", "RankReduction", "batch_reduction", "sum_over_ranks"]
