"""channels_last and torch.compile on CUDA: the paths ``ades run`` takes, and ``ades bench --formats``.

On the CPU these paths were measured (docs/benchmarks.md); on CUDA they must
at least run: the builder's channels_last model with the loader's NCHW
batches, a compiled run (``--compile``: inductor and Triton), and every
execution format of the benchmark in bf16. The checks the trainer makes
before training refuse, in one line, a CUDA model that is not channels_last.
"""

from __future__ import annotations

import math

import pytest
import torch

from ades_core import RunConfig, build
from ades_core.benchmark import FORMATS, BenchSettings, bench_formats
from ades_core.builder import BuildError, native_bf16, resolve_autocast
from ades_core.engine.placement import PlacementError
from ades_core.engine.trainer import Trainer
from ades_core.model_mode import exact_float32
from tests.cuda.gpu import CUDA_TESTS, image_folder, tiny_run_config

pytestmark = CUDA_TESTS


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return image_folder(tmp_path_factory.mktemp("images"))


def test_the_built_model_is_channels_last_and_its_output_matches_nchw(data_dir):
    setup = build(RunConfig.from_dict(tiny_run_config(data_dir, defense="pgd-at", amp="off")))
    convolutions = [p for p in setup.model.parameters() if p.ndim == 4]
    assert convolutions and all(p.is_contiguous(memory_format=torch.channels_last) for p in convolutions)
    x, _, _ = next(iter(setup.train_loader))
    assert x.is_cuda and x.is_contiguous()  # the loader's batches stay NCHW; the model's format decides
    nchw = setup.model_spec.build().cuda().eval()
    nchw.load_state_dict(setup.model.state_dict())
    with torch.no_grad(), exact_float32():  # float32 arithmetic in both: TF32 would differ by format
        torch.testing.assert_close(setup.model.eval()(x), nchw(x), rtol=1e-4, atol=1e-5)


def test_a_cuda_model_that_is_not_channels_last_is_refused_before_training(data_dir):
    setup = build(RunConfig.from_dict(tiny_run_config(data_dir, defense="pgd-at")))
    setup.model.to(memory_format=torch.contiguous_format)
    with pytest.raises(PlacementError, match=r"is not channels_last on cuda"):
        Trainer(setup, progress=False)


def test_bf16_is_accepted_or_refused_in_one_line_as_the_gpu_allows():
    device = torch.device("cuda")
    if native_bf16(device):
        assert resolve_autocast("bf16", device) == torch.bfloat16
        assert resolve_autocast("auto", device) == torch.bfloat16
    else:
        with pytest.raises(BuildError, match="has no native bf16"):
            resolve_autocast("bf16", device)
        assert resolve_autocast("auto", device) == torch.float16


def test_a_compiled_run_trains_and_evaluates(data_dir, tmp_path):
    setup = build(RunConfig.from_dict(tiny_run_config(data_dir, defense="ades", compile=True)))
    (record,) = Trainer(setup, progress=False).fit(tmp_path / "run")
    assert record["nonfinite_steps"] == 0 and math.isfinite(record["train_loss"])
    assert record["test_n"] == 8


def test_every_execution_format_runs_a_bf16_training_step():
    amp = "bf16" if native_bf16(torch.device("cuda")) else "fp16"
    rows = bench_formats(BenchSettings(
        formats=FORMATS, batch_size=32, steps=2, warmup=0, repeats=1, device="cuda", amp=amp,
    ))  # fmt: skip
    failed = {name: rows[name]["failed"] for name in FORMATS if "failed" in rows[name]}
    assert not failed, failed
    for name in FORMATS:
        assert rows[name]["images_per_s"] > 0
