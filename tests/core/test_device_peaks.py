"""Known GPUs' dense peaks: which entry a CUDA device name gets, and which peak a precision uses."""

from __future__ import annotations

import pytest

from ades_core.device_peaks import KNOWN_GPUS, known_gpu, peak_for


@pytest.mark.parametrize(
    ("device_name", "entry"),
    [
        ("Tesla V100-SXM2-16GB", "NVIDIA V100 SXM2"),
        ("Tesla V100-PCIE-32GB", "NVIDIA V100 PCIe"),
        ("Tesla T4", "NVIDIA T4"),
        ("NVIDIA A100-SXM4-80GB", "NVIDIA A100"),
        ("NVIDIA A100 80GB PCIe", "NVIDIA A100"),
        ("NVIDIA A10", "NVIDIA A10"),
        ("NVIDIA L4", "NVIDIA L4"),
        ("NVIDIA L40S", "NVIDIA L40S"),
        ("NVIDIA H100 80GB HBM3", "NVIDIA H100 SXM"),
        ("NVIDIA H100 PCIe", "NVIDIA H100 PCIe"),
        ("NVIDIA H100 NVL", "NVIDIA H100 NVL"),
        ("NVIDIA H200", "NVIDIA H200 SXM"),
        ("NVIDIA H200 NVL", "NVIDIA H200 NVL"),
    ],
)
def test_a_device_name_finds_its_entry(device_name, entry):
    assert known_gpu(device_name).name == entry


@pytest.mark.parametrize("device_name", ["NVIDIA A10G", "NVIDIA GeForce RTX 4090", "NVIDIA L40", "AMD Instinct MI300X"])
def test_an_unknown_gpu_gets_no_guess(device_name):
    assert known_gpu(device_name) is None
    peak = peak_for(device_name, "bf16")
    assert peak.tflops is None and peak.name.startswith(f"unknown: {device_name!r} is not among the known GPUs")


def test_each_precision_uses_its_dense_tensor_peak():
    assert peak_for("NVIDIA H200", "bf16").tflops == peak_for("NVIDIA H100 80GB HBM3", "bf16").tflops
    bf16 = peak_for("NVIDIA H200", "bf16")
    assert (bf16.name, bf16.unit, bf16.tflops) == ("NVIDIA H200 SXM bf16 tensor, dense", "bf16 tensor", 989.4)
    assert peak_for("NVIDIA A100-SXM4-40GB", "fp32", tf32=True).tflops == 156.0
    assert peak_for("NVIDIA A100-SXM4-40GB", "fp32", tf32=False).tflops == 19.5


def test_fp32_falls_back_to_the_plain_rate_where_there_is_no_tf32():
    peak = peak_for("Tesla V100-SXM2-16GB", "fp32", tf32=True)
    assert (peak.unit, peak.tflops) == ("fp32", 15.7)


def test_a_gpu_without_bf16_units_says_so():
    peak = peak_for("Tesla V100-SXM2-16GB", "bf16")
    assert peak.tflops is None and peak.name == "unknown: NVIDIA V100 SXM2 has no bf16 tensor units"


def test_the_table_is_dense_and_ordered_from_specific_to_general():
    for gpu in KNOWN_GPUS:
        rates = [r for r in (gpu.tf32, gpu.bf16, gpu.fp16) if r is not None]
        assert all(r > gpu.fp32 for r in rates), gpu.name  # tensor cores beat the plain fp32 rate
        if gpu.tf32 is not None and gpu.bf16 is not None:
            assert gpu.bf16 == pytest.approx(2 * gpu.tf32, rel=0.02), gpu.name  # dense bf16 is twice dense tf32
    with pytest.raises(ValueError, match="precision 'int8' is not one of: bf16, fp16, fp32"):
        peak_for("NVIDIA H200", "int8")
