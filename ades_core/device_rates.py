"""What a measured call achieves on a device: its FLOPs, their rate, their fraction of the peak.

FLOPs are counted as the call runs; the peak is the device's datasheet one;
:func:`machine` describes the device and software a report was measured on.

Used by ``ades bench --paper-scale`` (:mod:`ades_core.paper_scale`); the peaks
themselves are in :mod:`ades_core.device_peaks`.
"""

from __future__ import annotations

import platform
from collections.abc import Callable
from typing import Any

import attrs
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from ades_core.builder import native_bf16
from ades_core.device_peaks import Peak


class _FlopCount(TorchDispatchMode):
    """Sums the FLOPs of the operations torch's flop counter knows (matmuls, convolutions, attention).

    ``FlopCounterMode`` itself cannot be used: its per-module tracking hooks
    fail inside ``torch.autograd.grad`` with respect to an input (the attack).
    """

    def __init__(self) -> None:
        super().__init__()
        self.flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.flops += int(formula(*args, **kwargs, out_val=out))
        return out


def count_flops(fn: Callable[[], Any]) -> int:
    """Floating point operations of one call of ``fn`` (matmuls and convolutions, forward and backward,
    a multiply-add counting 2), with the formulas of ``torch.utils.flop_counter``, as the call runs."""
    with _FlopCount() as counter:
        fn()
    return counter.flops


def machine(device: torch.device) -> dict[str, Any]:
    """The device and software a report was measured on."""
    info: dict[str, Any] = {"device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads()}
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        info |= {
            "device_name": torch.cuda.get_device_name(device),
            "capability": f"{major}.{minor}",
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(),
            "native_bf16": native_bf16(device),
            "tf32_convolutions": bool(torch.backends.cudnn.allow_tf32),
            "tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32),
            "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
            "memory_mb": torch.cuda.get_device_properties(device).total_memory / 2**20,
        }
    else:
        info["device_name"] = platform.processor() or platform.machine()
    return info


def achieved_rates(flops: int, seconds: float, peak: Peak) -> dict[str, Any]:
    """FLOPs of one call, the TFLOP/s they reach in ``seconds`` and their fraction of ``peak``."""
    achieved = flops / seconds / 1e12
    return {
        "flops_per_step": flops,
        "achieved_tflops": achieved,
        "peak": attrs.asdict(peak),
        "fraction_of_peak": None if peak.tflops is None else achieved / peak.tflops,
    }


__all__ = ["achieved_rates", "count_flops", "machine"]
