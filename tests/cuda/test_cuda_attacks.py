"""Each evaluation attack gives on CUDA the per-sample result it gives on the CPU.

The problem is the closed-form one of tests/evaluation/test_eval_closed_form.py:
a linear classifier, inputs far from 0 and 1, and only samples whose exact
worst-case margin at eps is at least ``MARGIN`` away from 0 (in logits), so
neither float rounding nor the random draws (the CPU and CUDA generators give
different numbers for one seed) can decide a sample. On it every attack but
Square finds exactly the non-robust samples, on both devices, in fp32 (TF32
off) and, for the PGD family, under bf16 autocast.

Tolerance: Square is a random search that on this problem breaks only some of
the non-robust samples, which ones depending on its draws; on both devices it
must break no robust sample, and the numbers it breaks may differ by at most
a quarter of the non-robust samples.
"""

from __future__ import annotations

import pytest
import torch

from ades_core.attacks import torchattacks_available
from ades_core.builder import native_bf16
from ades_core.evaluation import attack_outcome, clean_correct, resolve_attack, select
from ades_core.evaluation.specs import PRESET_NAMES
from ades_core.model_mode import exact_float32
from tests.cuda.gpu import CUDA_TESTS
from tests.evaluation.models import Linear, linear_data

pytestmark = CUDA_TESTS

EPS = 8 / 255
MARGIN = 0.3
RANDOM_SEARCH = {"square"}
PGD_FAMILY = ("pgd20", "pgd100", "cw", "fgsm")


@pytest.fixture(autouse=True)
def one_cpu_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: more threads only wait for each other
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def problem():
    model = Linear(48, 5, seed=3).eval()
    data = linear_data(model, 96, (3, 4, 4), seed=4)
    margin = model.exact_margin(data.images.float() / 255, data.labels, EPS)
    keep = (margin.abs() > MARGIN).nonzero().squeeze(1)
    return model, select(data, keep), margin[keep] > 0


def _outcome(model, data, name: str, device: torch.device, dtype=None) -> torch.Tensor:
    model = model.to(device)
    clean = clean_correct(model, data, batch_size=64, device=device)
    assert clean.all()  # the labels are the model's own predictions
    attack = resolve_attack(name).build(autocast_dtype=dtype)
    with exact_float32():
        outcome = attack_outcome(
            model, data, attack, EPS, clean=clean, batch_size=64, device=device, seed=0, autocast_dtype=dtype
        )
    return outcome.correct.cpu()


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_each_evaluation_attack_gives_on_cuda_the_per_sample_result_of_the_cpu(problem, name):
    if name == "autoattack-torchattacks" and not torchattacks_available():
        pytest.skip("needs torchattacks: pip install --no-deps torchattacks==3.5.1")
    model, data, robust = problem
    on_cpu = _outcome(model, data, name, torch.device("cpu"))
    on_cuda = _outcome(model, data, name, torch.device("cuda"))
    if name in RANDOM_SEARCH:
        assert on_cpu[robust].all() and on_cuda[robust].all(), "a robust sample was broken"
        broken_cpu, broken_cuda = int((~on_cpu).sum()), int((~on_cuda).sum())
        assert abs(broken_cpu - broken_cuda) <= int((~robust).sum()) // 4, (broken_cpu, broken_cuda)
    else:
        assert torch.equal(on_cuda, on_cpu), f"differ on samples {(on_cuda != on_cpu).nonzero().flatten().tolist()}"
        assert torch.equal(on_cuda, robust)


@pytest.mark.parametrize("name", PGD_FAMILY)
def test_the_pgd_family_under_bf16_autocast_agrees_on_cuda_and_cpu(problem, name):
    if not native_bf16(torch.device("cuda")):
        pytest.skip(f"{torch.cuda.get_device_name()} has no native bf16 (compute capability < 8.0)")
    model, data, robust = problem
    on_cpu = _outcome(model, data, name, torch.device("cpu"), torch.bfloat16)
    on_cuda = _outcome(model, data, name, torch.device("cuda"), torch.bfloat16)
    assert torch.equal(on_cuda, on_cpu)
    assert torch.equal(on_cuda, robust)
