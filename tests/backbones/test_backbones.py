"""Backbones: every ades_* model in timm's registry, the [0, 1] wrapper and the factory."""

from __future__ import annotations

import functools

import pytest
import timm
import torch
from torch import nn

import ades_core.backbones as backbones
from ades_core.backbones import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    NormalizedClassifier,
    ades_backbone_names,
    backbone_description,
    create_classifier,
)
from ades_core.registry import RegistryError

ADES_NAMES = timm.list_models("ades_*")
# The two wide ResNets (36M and 46M parameters) take seconds each to build and run on a CPU:
# their cases run with the slow set (`pytest -m slow`), the others in the fast one.
WIDE = {"ades_wrn28_10", "ades_wrn34_10"}
ADES_CASES = [pytest.param(name, marks=pytest.mark.slow) if name in WIDE else name for name in ADES_NAMES]


@functools.lru_cache(maxsize=None)
def _model(name: str) -> nn.Module:
    """One instance per registered name, shared by the tests (they set the mode they need)."""
    torch.manual_seed(0)
    return timm.create_model(name)


def _images(batch: int = 2) -> torch.Tensor:
    """``(B, 3, 32, 32)`` in [0, 1]."""
    return torch.rand(batch, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def test_ades_backbones_are_registered_in_timm():
    assert set(ADES_NAMES) >= {
        "ades_cnn_small",
        "ades_preact_resnet18",
        "ades_wrn16_4",
        "ades_wrn28_10",
        "ades_wrn34_10",
    }
    assert ades_backbone_names() == sorted(ADES_NAMES)


@pytest.mark.parametrize("name", ADES_CASES)
def test_forward_shape_and_finite_gradients(name):
    model = _model(name).train()
    model.zero_grad(set_to_none=True)
    x = _images().requires_grad_(True)
    logits = model(x)
    assert logits.shape == (2, 10)
    logits.logsumexp(dim=1).sum().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    model.zero_grad(set_to_none=True)


@pytest.mark.parametrize("name", ADES_CASES)
def test_forward_is_head_of_features_and_classifier_of_pre_logits(name):
    model = _model(name).eval()
    x = _images()
    with torch.no_grad():
        logits = model(x)
        features = model.forward_features(x)
        pre_logits = model.forward_head(features, pre_logits=True)
        torch.testing.assert_close(model.forward_head(features), logits)
        torch.testing.assert_close(model.get_classifier()(pre_logits), logits)
    assert pre_logits.shape == (2, model.num_features)
    assert model.num_classes == 10


@pytest.mark.parametrize("name", ["ades_cnn_small", "ades_preact_resnet18"])
def test_pre_logits_come_before_the_final_dropout(name):
    torch.manual_seed(0)
    model = timm.create_model(name, drop_rate=0.5).train()
    features = model.forward_features(_images(4))
    first = model.forward_head(features, pre_logits=True)
    second = model.forward_head(features, pre_logits=True)
    torch.testing.assert_close(first, second)  # no dropout applied to pre-logits
    assert not torch.equal(model.forward_head(features), model.get_classifier()(first))


@pytest.mark.parametrize("name", ADES_CASES)
def test_reset_classifier_changes_the_number_of_logits(name):
    model = _model(name)
    classifier = model.get_classifier()
    try:
        model.reset_classifier(5)
        assert model.num_classes == 5
        assert model.get_classifier()(torch.rand(2, model.num_features)).shape == (2, 5)
    finally:
        model.fc, model.num_classes = classifier, 10


@pytest.mark.parametrize("name", ADES_CASES)
def test_default_cfg_is_cifar(name):
    cfg = _model(name).pretrained_cfg
    assert cfg["input_size"] == (3, 32, 32)
    assert cfg["num_classes"] == 10
    assert tuple(cfg["mean"]) == CIFAR10_MEAN and tuple(cfg["std"]) == CIFAR10_STD
    assert not cfg.get("url") and not cfg.get("hf_hub_id")


@pytest.mark.parametrize("name", ADES_CASES)
def test_no_pretrained_weights(name):
    with pytest.raises(ValueError, match="no pretrained weights"):
        timm.create_model(name, pretrained=True)


@pytest.mark.parametrize(
    ("name", "expected", "tolerance"),
    [
        ("ades_wrn34_10", 46.16e6, 0.1e6),
        ("ades_wrn28_10", 36.48e6, 0.1e6),
        ("ades_preact_resnet18", 11.17e6, 0.05e6),
    ],
)
def test_parameter_counts_match_the_literature(name, expected, tolerance):
    count = sum(p.numel() for p in _model(name).parameters())
    assert abs(count - expected) <= tolerance, f"{name}: {count} parameters"


def test_wrn_drop_rate_is_inside_the_blocks():
    model = timm.create_model("ades_wrn16_4", drop_rate=0.3).train()
    block = model.block1[0]
    assert block.drop_rate == 0.3
    features = model.forward_features(_images())
    pre_logits = model.forward_head(features, pre_logits=True)
    # no dropout in the head: pre-logits through the classifier give the logits
    torch.testing.assert_close(model.forward_head(features), model.get_classifier()(pre_logits))


def test_cnn_small_has_dropout_before_the_classifier():
    model = timm.create_model("ades_cnn_small")
    dropouts = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    assert len(dropouts) == 1 and dropouts[0].p == pytest.approx(0.3)
    assert model.num_features == 256
    assert model.get_classifier().in_features == 256


def test_cnn_small_width_and_wrong_input_size():
    model = timm.create_model("ades_cnn_small", width=8)
    assert model.features[0].out_channels == 8
    with pytest.raises(ValueError, match="32x32"):
        model(torch.rand(1, 3, 28, 28))


def test_normalized_classifier_normalises_inputs_in_unit_range():
    backbone = _model("ades_wrn16_4").eval()
    model = NormalizedClassifier(backbone, CIFAR10_MEAN, CIFAR10_STD).eval()
    assert model.mean.shape == (1, 3, 1, 1) and model.mean.dtype == torch.float32
    assert model.std.shape == (1, 3, 1, 1) and model.std.dtype == torch.float32
    assert {"mean", "std"} <= set(model.state_dict())
    assert model.backbone is backbone and model.num_classes == 10
    x = _images()
    mean, std = torch.tensor(CIFAR10_MEAN), torch.tensor(CIFAR10_STD)
    normalised = (x - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
    with torch.no_grad():
        expected = backbone(normalised)
        torch.testing.assert_close(model(x), expected)
        features = model.forward_features(x)
        torch.testing.assert_close(features, backbone.forward_features(normalised))
        torch.testing.assert_close(model.forward_head(features), expected)
        pre = model.forward_head(features, pre_logits=True)
        torch.testing.assert_close(model.get_classifier()(pre), expected)


@pytest.mark.parametrize(
    ("mean", "std", "match"),
    [
        ((0.5, 0.5), (0.2, 0.2, 0.2), "one value per channel"),
        ((0.5, 0.5, 0.5), (0.2, 0.0, 0.2), "std must be > 0"),
        ((), (), "one float per channel"),
    ],
)
def test_normalized_classifier_rejects_bad_statistics(mean, std, match):
    with pytest.raises(ValueError, match=match):
        NormalizedClassifier(nn.Identity(), mean, std)


def test_create_classifier_wraps_a_plain_timm_model():
    model = create_classifier("resnet18", num_classes=10, mean=CIFAR10_MEAN, std=CIFAR10_STD)
    assert isinstance(model, NormalizedClassifier)
    assert model.num_classes == 10
    with torch.no_grad():
        assert model.eval()(_images()).shape == (2, 10)


def test_create_classifier_passes_kwargs_to_ades_models():
    model = create_classifier(
        "ades_cnn_small", num_classes=7, mean=CIFAR10_MEAN, std=CIFAR10_STD, width=8, drop_rate=0.1
    )
    assert model.num_classes == 7 and model.backbone.features[0].out_channels == 8
    assert model.backbone.head_drop.p == pytest.approx(0.1)
    assert model(_images()).shape == (2, 7)


def test_unknown_backbone_raises_registry_error_listing_ades_names():
    with pytest.raises(RegistryError) as info:
        create_classifier("foo", num_classes=10, mean=CIFAR10_MEAN, std=CIFAR10_STD)
    message = str(info.value)
    assert "'foo'" in message and "ades_cnn_small" in message and "timm" in message
    assert "\n" not in message


@pytest.mark.parametrize("name", ["ades_cnn_small", "resnet18"])
def test_bad_kwarg_raises_value_error_naming_the_backbone(name):
    with pytest.raises(ValueError) as info:
        create_classifier(name, num_classes=10, mean=CIFAR10_MEAN, std=CIFAR10_STD, bogus=1)
    message = str(info.value)
    assert name in message and "bogus" in message and "\n" not in message
    assert not isinstance(info.value, RegistryError)


def test_mean_std_must_match_input_channels():
    with pytest.raises(ValueError, match="in_chans"):
        create_classifier("ades_cnn_small", num_classes=10, mean=(0.5,), std=(0.2,))


def test_backbone_descriptions_are_one_line():
    for name in ades_backbone_names():
        description = backbone_description(name)
        assert description and "\n" not in description
    assert backbone_description("resnet18")
    with pytest.raises(RegistryError, match="ades_cnn_small"):
        backbone_description("foo")


def test_package_exports():
    assert {"create_classifier", "NormalizedClassifier", "ades_backbone_names"} <= set(backbones.__all__)
