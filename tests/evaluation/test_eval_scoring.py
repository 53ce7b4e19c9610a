"""How an evaluation scores: strict margins, eval mode enforced, attacks that touch the model refused, fp32."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ades_core.config import AttackOptions
from ades_core.data import ImageTensors
from ades_core.evaluation import AttackSpec, attack_outcome, clean_correct, evaluate, resolve_attacks
from ades_core.evaluation.runner import AttackContractError
from ades_core.scoring import strictly_correct
from ades_core.registries import ATTACKS
from tests.evaluation.models import PooledNet

CPU = torch.device("cpu")


def _data(count: int = 6, classes: int = 5, seed: int = 0) -> ImageTensors:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (count, 3, 4, 4), dtype=torch.uint8, generator=generator)
    labels = torch.arange(count) % classes
    return ImageTensors(images, labels, tuple("abcde"[:classes]))


class Tied(nn.Module):
    """Logits equal for classes 0 and 1, lower elsewhere: argmax says class 0."""

    def forward(self, x):
        logits = torch.zeros(x.shape[0], 5)
        logits[:, 2:] = -1.0
        return logits + 0 * x.flatten(1).sum(1, keepdim=True)


def test_a_tie_with_another_class_is_an_error_whatever_the_indices():
    logits = torch.tensor([[1.0, 1.0, 0.0], [2.0, 1.0, 2.0], [0.0, 3.0, 1.0]])
    y = torch.tensor([0, 2, 1])
    assert logits.argmax(dim=1).eq(y).tolist() == [True, False, True]  # argmax credits the lower index
    assert strictly_correct(logits, y).tolist() == [False, False, True]


def test_clean_accuracy_does_not_credit_a_tie():
    data = _data()
    correct = clean_correct(Tied(), data, batch_size=4, device=CPU)
    assert not correct.any()  # label 0 ties with class 1; the others are below


def _spec(name: str, make) -> AttackSpec:
    ATTACKS.register(name, lambda options, **kwargs: make())
    return AttackSpec(label=name, attack=name, options=AttackOptions(name="pgd"))


class LeavesTrainMode:
    name = "leaves-train-mode"

    def __call__(self, model, x, y, eps):
        model.train()  # as torchattacks does after an attack on a model it found training
        return x.clone()


class UpdatesBatchNorm:
    name = "updates-batchnorm"

    def __call__(self, model, x, y, eps):
        saved = [(m, m.training) for m in model.modules()]
        model.train()
        with torch.no_grad():
            model(x)  # a forward in train mode moves the BN running statistics
        for module, flag in saved:
            module.training = flag
        return x.clone()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (LeavesTrainMode, "left 6 submodule\\(s\\) of the model in another train/eval mode"),
        (UpdatesBatchNorm, "changed the model's buffers \\(BN running statistics\\)"),
    ],
)
def test_an_attack_that_changes_the_model_is_refused_not_scored(make, message):
    model = PooledNet().eval()
    data = _data(8)
    with torch.no_grad():
        data = ImageTensors(data.images, model(data.images.float() / 255).argmax(dim=1), data.classes)
    clean = torch.ones(len(data), dtype=torch.bool)
    with pytest.raises(AttackContractError, match=message):
        attack_outcome(model, data, make(), 8 / 255, clean=clean, batch_size=4, device=CPU)


def test_the_scoring_forward_runs_in_eval_mode_even_for_a_model_handed_over_training():
    model = PooledNet().train()  # dropout on, BN in batch statistics: scoring must not use them
    data = _data(8)
    with torch.no_grad():
        labels = model.eval()(data.images.float() / 255).argmax(dim=1)
    model.train()
    data = ImageTensors(data.images, labels, data.classes)
    clean = torch.ones(len(data), dtype=torch.bool)
    identity = lambda m, x, y, eps: x.clone()  # noqa: E731
    outcome = attack_outcome(model, data, identity, 0.0, clean=clean, batch_size=4, device=CPU)
    assert outcome.correct.all()  # eval-mode predictions of unchanged images equal the labels
    assert all(m.training for m in model.modules())  # and the caller's modes are restored


class RecordsTf32:
    name = "records-tf32"
    seen: list[tuple[bool, bool]] = []

    def __call__(self, model, x, y, eps):
        self.seen.append((torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32))
        return x.clone()


def test_evaluation_runs_in_float32_with_tf32_off_and_says_so():
    model = PooledNet().eval()
    data = _data(8)
    with torch.no_grad():
        data = ImageTensors(data.images, model(data.images.float() / 255).argmax(dim=1), data.classes)
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    spec = _spec("test-records-tf32", RecordsTf32)
    try:
        RecordsTf32.seen.clear()
        result = evaluate(model, data, [spec], 8 / 255, device=CPU, batch_size=4, checks=None)
        assert RecordsTf32.seen and set(RecordsTf32.seen) == {(False, False)}
        assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == (True, True)  # restored
        assert result.to_dict()["precision"] == {"dtype": "fp32", "tf32": False}
        low = evaluate(model, data, resolve_attacks(["fgsm"]), 8 / 255, device=CPU, batch_size=4, checks=None,
                       precision="bf16")
        assert low.to_dict()["precision"]["dtype"] == "bf16"
        with pytest.raises(ValueError, match="precision 'fp8' is not one of: fp32, bf16, fp16"):
            evaluate(model, data, [spec], 8 / 255, device=CPU, checks=None, precision="fp8")
    finally:
        ATTACKS.unregister(spec.attack)
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def test_an_evaluation_that_misses_classes_says_so():
    from ades_core.evaluation import EvalData

    def source(labels, order):
        images = torch.zeros(len(labels), 3, 4, 4, dtype=torch.uint8)
        data = ImageTensors(images, torch.tensor(labels), tuple("abcde"))
        return EvalData(data=data, dataset="imagefolder", data_dir="d", n=len(labels), subset=len(labels),
                        subset_seed=None, order=order)

    first = source([0, 0, 0, 1], "first")
    assert first.describe()["classes_present"] == 2
    warning = first.coverage_warning()
    assert warning.startswith("the 4 evaluated test images hold 2 of the 5 classes (an image folder lists")
    assert "--order random" in warning
    assert "image folder" not in source([0, 1, 1], "random").coverage_warning()
    assert source([0, 1, 2, 3, 4], "first").coverage_warning() is None
