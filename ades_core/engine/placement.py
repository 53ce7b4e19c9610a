"""Where a run's tensors must live (device, dtype, memory format), checked once before the first step.

Each of these mistakes is cheap to see before training and costly after:

* a model on another device than its batches fails deep inside the first
  convolution (or, for a model split across devices, runs with a host copy
  in every layer);
* half-precision weights train without a float32 master copy: ades keeps
  float32 weights and gets mixed precision from autocast (``--amp``);
* on CUDA a convolution weight left in NCHW (for example by a layer that
  was replaced after the model was converted) makes cuDNN transpose
  activations around it in every pass: correct, and silently slower.

:func:`check_placement` reads tensor metadata only (no host-device sync) and
raises :class:`PlacementError`, one line naming the first offending tensor,
what was expected and how to fix it.
"""

from __future__ import annotations

import torch
from torch import nn

from ades_core.errors import AdesError


class PlacementError(AdesError, ValueError):
    """A tensor of the run is not where (or what) the run expects; one line."""


def same_device(a: torch.device, b: torch.device) -> bool:
    """``cuda`` and ``cuda:<current>`` are the same device; otherwise type and index must match."""

    def index(d: torch.device) -> int | None:
        if d.type == "cuda" and d.index is None:
            return torch.cuda.current_device()
        return d.index

    return a.type == b.type and index(a) == index(b)


def check_model_device(model: nn.Module, device: torch.device) -> None:
    """Every parameter and buffer of ``model`` on ``device``, else :class:`PlacementError` naming the first."""
    for kind, named in (("parameter", model.named_parameters()), ("buffer", model.named_buffers())):
        for name, tensor in named:
            if not same_device(tensor.device, device):
                raise PlacementError(
                    f"model {kind} {name!r} is on {tensor.device}, but the run uses {device}: "
                    f"move the whole model with model.to({str(device)!r})"
                )


def check_placement(
    model: nn.Module, *, device: torch.device, data_device: torch.device | None = None
) -> None:
    """Check that ``model`` and the batches can train together on ``device``.

    Args:
        model: the classifier (``(B, C, H, W)`` in [0, 1] -> logits).
        device: the run's device.
        data_device: where the loader puts its batches, when known.

    Raises:
        PlacementError: a parameter or buffer not on ``device``; a floating
            parameter that is not float32; on CUDA, a 4-D convolution weight
            not in ``torch.channels_last``; batches on another device.
    """
    if data_device is not None and not same_device(data_device, device):
        raise PlacementError(
            f"the training batches are on {data_device}, but the run trains on {device}: "
            "build the loader with the run's device"
        )
    check_model_device(model, device)
    for name, param in model.named_parameters():
        if param.is_floating_point() and param.dtype != torch.float32:
            raise PlacementError(
                f"model parameter {name!r} is {str(param.dtype).replace('torch.', '')}, expected float32: "
                "ades keeps float32 weights and gets mixed precision from autocast (--amp bf16 or fp16); "
                "call model.float()"
            )
        if device.type == "cuda" and param.ndim == 4 and not param.is_contiguous(memory_format=torch.channels_last):
            raise PlacementError(
                f"model parameter {name!r} {tuple(param.shape)} is not channels_last on {device}: "
                "cuDNN would transpose around it in every pass; convert after the last change to the "
                "model: model.to(memory_format=torch.channels_last)"
            )


def channels_last(x: torch.Tensor, what: str = "input") -> torch.Tensor:
    """``x`` ``(B, C, H, W)`` in ``torch.channels_last``; anything but 4-D is refused in one line."""
    if x.ndim != 4:
        raise PlacementError(
            f"channels_last needs a 4-D (B, C, H, W) {what}, got shape {tuple(x.shape)}"
        )
    return x.contiguous(memory_format=torch.channels_last)
