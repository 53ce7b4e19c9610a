"""Exact save/restore of a model's train/eval mode, and device-agnostic autocast."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor, nn


@contextlib.contextmanager
def module_modes(model: nn.Module, training: bool) -> Iterator[nn.Module]:
    """Put every submodule in ``training`` mode, then restore each one's own flag.

    ``model.train(old)`` is not enough to restore: a model may mix modes (for
    example BN frozen in eval while dropout trains), so every submodule's
    ``training`` flag is saved and put back exactly, also on an exception.
    """
    saved = [(m, m.training) for m in model.modules()]
    try:
        model.train(training)
        yield model
    finally:
        for module, flag in saved:
            module.training = flag


def eval_mode(model: nn.Module) -> contextlib.AbstractContextManager[nn.Module]:
    """Eval mode (no BN statistic updates, dropout off) inside, exact restore after."""
    return module_modes(model, False)


@contextlib.contextmanager
def batch_statistics_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Train mode inside, with every BatchNorm layer normalising by its batch's statistics and
    never updating its running statistics (nor ``num_batches_tracked``); exact restore after.

    BatchNorm in train mode with ``track_running_stats`` off uses the batch's
    mean and variance and leaves its buffers alone, which is what an attack
    crafted "in train mode" (Madry et al.'s, Rice et al.'s, Wong et al.'s
    code) needs without the attack's passes moving the statistics.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    tracked = [m.track_running_stats for m in norms]
    try:
        with module_modes(model, True):
            for module in norms:
                module.track_running_stats = False
            yield model
    finally:
        for module, flag in zip(norms, tracked):
            module.track_running_stats = flag


ATTACK_BN_MODES: tuple[str, ...] = ("eval", "train")
"""The BatchNorm mode of a training attack's passes (``AttackOptions.bn``)."""


def attack_mode(model: nn.Module, bn: str) -> contextlib.AbstractContextManager[nn.Module]:
    """The mode an attack's passes run in: :func:`eval_mode` (``"eval"``) or
    :func:`batch_statistics_mode` (``"train"``); running statistics never change in either."""
    if bn == "eval":
        return eval_mode(model)
    if bn == "train":
        return batch_statistics_mode(model)
    raise ValueError(f"attack BN mode {bn!r} is not one of: {', '.join(ATTACK_BN_MODES)}")


def autocast_for(x: Tensor, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """``torch.autocast`` on ``x``'s device type when ``dtype`` is given, else a no-op."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=x.device.type, dtype=dtype)


PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
"""Evaluation precisions by name: the autocast dtype of the forward passes (``None``: float32)."""


@contextlib.contextmanager
def exact_float32() -> Iterator[None]:
    """TF32 off for matmuls and cuDNN convolutions inside (CUDA), each setting restored after.

    On Ampere and newer GPUs PyTorch may run float32 convolutions in TF32
    (10-bit mantissa); an evaluation in ``fp32`` must mean float32 arithmetic.
    A no-op on the CPU, where TF32 does not exist. (Only the ``allow_tf32``
    flags are touched: torch refuses to mix them with the newer
    ``fp32_precision`` settings in one process.)
    """
    matmul = torch.backends.cuda.matmul.allow_tf32
    cudnn = torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul
        torch.backends.cudnn.allow_tf32 = cudnn
