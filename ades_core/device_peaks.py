"""Dense peak arithmetic throughput of known GPUs, for the fraction of the peak a step reaches.

The figures are the vendors' datasheet numbers in TFLOP/s (10^12 floating
point operations per second, a multiply-add counting 2), *dense*: NVIDIA
quotes tensor-core figures "with sparsity", twice the dense ones, and those
are halved here. ``fp32`` is the plain (non-tensor) float32 rate; ``tf32`` the
tensor-core rate cuDNN uses for float32 convolutions when
``torch.backends.cudnn.allow_tf32`` is on (PyTorch's default); ``bf16`` and
``fp16`` the tensor-core rates with float32 accumulation. ``None``: the GPU has
no such unit (no bf16 before Ampere, no TF32 before Ampere).

A GPU not in :data:`KNOWN_GPUS` gets no peak: its fraction is reported as
unknown, never guessed.

    >>> peak_for("NVIDIA H100 80GB HBM3", "bf16").tflops
    989.4
    >>> peak_for("NVIDIA H100 80GB HBM3", "fp32", tf32=True).unit
    'tf32 tensor'
    >>> peak_for("Quadro X", "bf16").tflops is None
    True
"""

from __future__ import annotations

import re

import attrs


@attrs.frozen(kw_only=True)
class GpuPeaks:
    """One GPU model's dense peaks (TFLOP/s) and the pattern that recognises its CUDA device name."""

    name: str
    pattern: str
    """A regular expression searched (case-insensitive) in ``torch.cuda.get_device_name()``."""
    fp32: float
    tf32: float | None
    bf16: float | None
    fp16: float | None


KNOWN_GPUS: tuple[GpuPeaks, ...] = (
    # order matters: the first pattern that matches wins (NVL and PCIe before the SXM default)
    GpuPeaks(name="NVIDIA V100 SXM2", pattern=r"V100-SXM", fp32=15.7, tf32=None, bf16=None, fp16=125.0),
    GpuPeaks(name="NVIDIA V100 PCIe", pattern=r"V100-PCIE", fp32=14.0, tf32=None, bf16=None, fp16=112.0),
    GpuPeaks(name="NVIDIA T4", pattern=r"\bT4\b", fp32=8.1, tf32=None, bf16=None, fp16=65.0),
    GpuPeaks(name="NVIDIA A100", pattern=r"\bA100\b", fp32=19.5, tf32=156.0, bf16=312.0, fp16=312.0),
    GpuPeaks(name="NVIDIA A10", pattern=r"\bA10\b", fp32=31.2, tf32=62.5, bf16=125.0, fp16=125.0),
    GpuPeaks(name="NVIDIA L4", pattern=r"\bL4\b", fp32=30.3, tf32=60.0, bf16=121.0, fp16=121.0),
    GpuPeaks(name="NVIDIA L40S", pattern=r"\bL40S\b", fp32=91.6, tf32=183.0, bf16=362.0, fp16=362.0),
    GpuPeaks(name="NVIDIA H100 NVL", pattern=r"\bH100 NVL\b", fp32=60.0, tf32=417.5, bf16=835.5, fp16=835.5),
    GpuPeaks(name="NVIDIA H100 PCIe", pattern=r"\bH100 PCIe\b", fp32=51.0, tf32=378.0, bf16=756.0, fp16=756.0),
    GpuPeaks(name="NVIDIA H100 SXM", pattern=r"\bH100\b", fp32=67.0, tf32=494.7, bf16=989.4, fp16=989.4),
    GpuPeaks(name="NVIDIA H200 NVL", pattern=r"\bH200 NVL\b", fp32=60.0, tf32=417.5, bf16=835.5, fp16=835.5),
    GpuPeaks(name="NVIDIA H200 SXM", pattern=r"\bH200\b", fp32=67.0, tf32=494.7, bf16=989.4, fp16=989.4),
)
"""Known GPUs, dense datasheet peaks (TFLOP/s). Add a GPU here to have its fraction of the peak reported."""


@attrs.frozen
class Peak:
    """The peak a step is measured against: ``name`` (``"NVIDIA H200 SXM bf16 tensor, dense"``), its
    ``unit`` (``"bf16 tensor"``, ``"tf32 tensor"``, ``"fp32"``) and ``tflops``; ``tflops`` is ``None``
    when it is unknown, and ``name`` then says why."""

    name: str
    unit: str | None
    tflops: float | None


def known_gpu(device_name: str) -> GpuPeaks | None:
    """The entry of :data:`KNOWN_GPUS` whose pattern matches ``device_name``, or ``None``."""
    for gpu in KNOWN_GPUS:
        if re.search(gpu.pattern, device_name, flags=re.IGNORECASE):
            return gpu
    return None


def peak_for(device_name: str, precision: str, *, tf32: bool = False) -> Peak:
    """The dense peak of ``device_name`` for a step in ``precision`` (``bf16``, ``fp16``, ``fp32``).

    ``tf32``: float32 convolutions run on TF32 tensor cores (cuDNN's
    ``allow_tf32``); the fp32 peak is then the TF32 one, where the GPU has it.
    """
    if precision not in ("bf16", "fp16", "fp32"):
        raise ValueError(f"precision {precision!r} is not one of: bf16, fp16, fp32")
    gpu = known_gpu(device_name)
    if gpu is None:
        return Peak(f"unknown: {device_name!r} is not among the known GPUs ({_names()})", None, None)
    if precision == "fp32":
        unit, tflops = ("tf32 tensor", gpu.tf32) if tf32 and gpu.tf32 is not None else ("fp32", gpu.fp32)
    else:
        unit, tflops = f"{precision} tensor", getattr(gpu, precision)
    if tflops is None:
        return Peak(f"unknown: {gpu.name} has no {unit} units", unit, None)
    return Peak(f"{gpu.name} {unit}, dense", unit, tflops)


def _names() -> str:
    return ", ".join(gpu.name.removeprefix("NVIDIA ") for gpu in KNOWN_GPUS)
