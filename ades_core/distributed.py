"""Training on many processes with ``torchrun``: the process group, sharding and DDP.

A run started by ``torchrun`` (which sets ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK``) calls :func:`init_from_env` once; it joins the default process
group (``nccl`` on CUDA, each rank on ``cuda:LOCAL_RANK``; ``gloo`` on the CPU)
and records the :class:`DistributedContext` as the process's *active* one
(:func:`active`), as ``torch.distributed`` has one default group per process.
That record is for the entry points and their teardown (:func:`shutdown`):
the builder reads it once and hands the context on explicitly
(``TrainingSetup.dist``), and the components that compute batch statistics
(cues, schedulers, objectives, defenses) never read it: they are handed a
:class:`~ades_core.batch_reduction.BatchReduction` made from the context.

What else is here (sharding, gradient averaging, buffer broadcast, the CPU
SyncBatchNorm) is used by the builder, the trainer and the evaluator, with
the context passed explicitly.
"""

from __future__ import annotations

import os

import attrs
import torch
import torch.distributed as dist
from torch import Tensor, nn

from ades_core.batch_reduction import RankReduction, sum_over_ranks
from ades_core.errors import AdesError

__all__ = [
    "CpuSyncBatchNorm",
    "DistributedContext",
    "DistributedError",
    "active",
    "average_gradients",
    "broadcast_module",
    "convert_sync_batchnorm",
    "init_from_env",
    "launched_by_torchrun",
    "shard_bounds",
    "shutdown",
    "unwrap_model",
    "wrap_ddp",
]


class DistributedError(AdesError, ValueError):
    """A distributed setting that cannot work (one line, says what to change)."""


@attrs.frozen
class DistributedContext:
    """This process's place in the process group.

    Attributes:
        rank: global rank in ``[0, world_size)``; rank 0 writes the run folder.
        world_size: number of processes (> 1).
        local_rank: rank on this node (the CUDA device index on GPUs).
        backend: ``nccl`` or ``gloo``.
        device: this rank's device (``cuda:LOCAL_RANK`` or ``cpu``).
    """

    rank: int
    world_size: int
    local_rank: int
    backend: str
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that writes files and shows progress."""
        return self.rank == 0

    def all_reduce(self, tensor: Tensor, op: str = "sum") -> Tensor:
        """A reduced copy of ``tensor`` over all ranks (``op``: sum, min, max); not differentiable."""
        out = tensor.detach().clone()
        dist.all_reduce(out, op={"sum": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN, "max": dist.ReduceOp.MAX}[op])
        return out

    def barrier(self) -> None:
        dist.barrier()


_ACTIVE: DistributedContext | None = None


def active() -> DistributedContext | None:
    """The active context of this process, or ``None`` for a single-process run."""
    return _ACTIVE


def launched_by_torchrun() -> bool:
    """``WORLD_SIZE`` > 1 in the environment, or a one-rank ``torchrun`` (``TORCHELASTIC_RUN_ID`` set).

    ``torchrun`` sets ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK`` and
    ``TORCHELASTIC_RUN_ID``. A one-rank launch (``--nproc-per-node 1`` on a
    one-GPU machine) takes the same path as many ranks: process group
    (``nccl`` on CUDA), DDP, sharded evaluation.
    """
    world = int(os.environ.get("WORLD_SIZE", "1") or "1")
    return world > 1 or (world == 1 and bool(os.environ.get("TORCHELASTIC_RUN_ID")))


def init_from_env(device: str = "auto") -> DistributedContext | None:
    """Join the process group ``torchrun`` describes; ``None`` when not launched with ``WORLD_SIZE`` > 1.

    Args:
        device: the run's ``--device``: ``auto`` picks CUDA when available;
            ``cuda``/``cuda:N`` use ``cuda:LOCAL_RANK`` (``N`` is ignored: each
            rank has its own GPU) with ``nccl``; ``cpu`` uses ``gloo``.

    Raises:
        DistributedError: a variable is missing, or a rank has no GPU of its own.
    """
    global _ACTIVE
    if not launched_by_torchrun():
        return None
    if _ACTIVE is not None:
        return _ACTIVE
    try:
        rank, world, local = (int(os.environ[k]) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    except KeyError as exc:
        raise DistributedError(
            f"WORLD_SIZE is set but {exc.args[0]} is not: launch with torchrun --nproc-per-node N -m ades_cli run ..."
        ) from None
    use_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        if local >= torch.cuda.device_count():
            raise DistributedError(
                f"local rank {local} has no GPU (this node has {torch.cuda.device_count()}); "
                "use --nproc-per-node <= the GPU count, or --device cpu"
            )
        torch.cuda.set_device(local)
        where, backend = torch.device("cuda", local), "nccl"
    else:
        where, backend = torch.device("cpu"), "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    _ACTIVE = DistributedContext(rank=rank, world_size=world, local_rank=local, backend=backend, device=where)
    return _ACTIVE


def shutdown() -> None:
    """Leave the process group (a no-op when none is active)."""
    global _ACTIVE
    if _ACTIVE is not None and dist.is_initialized():
        dist.destroy_process_group()
    _ACTIVE = None


# ------------------------------------------------------------------ sharding and sync
def shard_bounds(n: int, rank: int, world_size: int, *, align: int = 1) -> tuple[int, int]:
    """``[start, stop)`` of rank ``rank``'s contiguous part of ``n`` items.

    The items are cut into blocks of ``align`` (the last one may be shorter),
    and the blocks are split as evenly as possible, in order: concatenating the
    parts of ranks ``0 .. world_size - 1`` gives ``range(n)``. With ``align`` =
    the evaluation batch size, every rank evaluates whole batches of the
    single-process order, so per-batch seeded attacks draw the same noise.
    """
    if world_size < 1 or not 0 <= rank < world_size or align < 1 or n < 0:
        raise ValueError(f"bad shard: n={n}, rank={rank}, world_size={world_size}, align={align}")
    blocks = -(-n // align)
    first, last = rank * blocks // world_size, (rank + 1) * blocks // world_size
    return min(first * align, n), min(last * align, n)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside a ``DistributedDataParallel`` wrapper (``model`` itself otherwise).

    Passes that must not synchronise gradients or buffers (cues, attacks,
    evaluation) run on the unwrapped module; only the training forward goes
    through the wrapper.
    """
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def wrap_ddp(model: nn.Module, defense: object, ctx: DistributedContext) -> nn.Module:
    """``model`` in ``DistributedDataParallel``; the defense's own parameters copied from rank 0.

    The defense is not wrapped: the training step averages its gradients
    itself (:func:`average_gradients`).
    """
    if isinstance(defense, nn.Module):
        broadcast_module(defense, ctx)
    ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def average_gradients(params: list[nn.Parameter], ctx: DistributedContext | None) -> None:
    """Replace each parameter's ``.grad`` by its mean over the ranks of ``ctx`` (no-op for ``None``).

    For parameters DDP does not own (the learnable scheduler), so they stay
    identical on every rank: one flat all-reduce
    (:meth:`~ades_core.batch_reduction.RankReduction.average_gradients`).
    Parameters without a gradient are skipped (they have none on any rank:
    the graph is the same everywhere).
    """
    if ctx is not None:
        RankReduction(ctx).average_gradients(params)


def broadcast_module(module: nn.Module, ctx: DistributedContext | None, *, buffers_only: bool = False) -> None:
    """Copy rank 0's parameters (unless ``buffers_only``) and buffers to every rank of ``ctx``
    (no-op for ``None``)."""
    if ctx is None:
        return
    tensors = list(module.buffers()) + ([] if buffers_only else list(module.parameters()))
    with torch.no_grad():
        for t in tensors:
            dist.broadcast(t.data, src=0)


# ------------------------------------------------------------------ SyncBatchNorm
class CpuSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch normalisation over the global batch, for CPU (``gloo``) runs.

    ``torch.nn.SyncBatchNorm`` accepts GPU inputs only; this is the same
    computation for any device: in training mode the per-channel sum, sum of
    squares and count are all-reduced (differentiably, in float64), the batch
    is normalised with the global mean and biased variance, and the running
    statistics move towards the global mean and unbiased variance. In eval
    mode it is ``BatchNorm``. Its ``state_dict`` is a ``BatchNorm2d``'s.
    """

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least a 2-d input (N, C, ...), got {input.dim()}-d")

    def forward(self, input: Tensor) -> Tensor:
        self._check_input_dim(input)
        if not self.training or not dist.is_initialized():
            return super().forward(input)
        channels = input.shape[1]
        dims = [0, *range(2, input.dim())]
        x64 = input.double()
        count = x64.new_full((1,), float(input.numel() // channels))
        total = sum_over_ranks(torch.cat([x64.sum(dims), (x64 * x64).sum(dims), count]))
        n = total[-1].detach()
        mean = total[:channels] / n
        var = (total[channels : 2 * channels] / n - mean * mean).clamp(min=0.0)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                unbiased = var * (n / (n - 1)) if n > 1 else var
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), momentum)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), momentum)
        shape = (1, channels) + (1,) * (input.dim() - 2)
        scale = torch.rsqrt(var + self.eps)
        out = (x64 - mean.view(shape)) * scale.view(shape)
        if self.affine:
            out = out * self.weight.double().view(shape) + self.bias.double().view(shape)
        return out.to(input.dtype)


def convert_sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """Every BatchNorm layer of ``model`` normalising over the global batch.

    CUDA: ``torch.nn.SyncBatchNorm.convert_sync_batchnorm``; other devices:
    :class:`CpuSyncBatchNorm` in place of each ``_BatchNorm`` (parameters and
    statistics copied). Parameter names and saved files are unchanged.
    """
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return _convert_cpu(model)


def _convert_cpu(module: nn.Module) -> nn.Module:
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, CpuSyncBatchNorm):
        new = CpuSyncBatchNorm(
            module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats
        ).to(next(iter(module.state_dict().values())).device if module.state_dict() else "cpu")
        new.load_state_dict(module.state_dict())
        new.train(module.training)
        return new
    for name, child in module.named_children():
        converted = _convert_cpu(child)
        if converted is not child:
            setattr(module, name, converted)
    return module
