"""The ``mcdropout`` cue: MC-dropout uncertainty.

``u(x) = mean_k Var_t[ softmax(f_t(x))_k ]`` over ``T`` stochastic passes
``f_1..f_T`` (population variance, ``correction=0``), a value in
``[0, 0.25]``. Three ways to make the passes stochastic (``mode``):

* ``modules``: the model's own ``nn.Dropout*`` layers are switched to train
  mode (everything else, BN included, stays in eval), and ``T`` full forward
  passes are run. This is the paper's definition; it costs ``T`` forwards.
* ``head``: the same dropout layers, but only ``forward_head`` is run ``T``
  times, on the backbone features that the shared cue pass already computed
  (``CueContext.features``). When every dropout layer of the model sits in
  its head (``ades_cnn_small``; timm models whose ``drop_rate`` is the head's
  dropout), this has exactly the distribution of ``modules`` (the same random
  masks, drawn in the same order, give the same values: tested) at the cost of
  ``T`` head passes. Dropout inside the backbone is not sampled in this mode.
* ``features``: for models without dropout layers (most CIFAR ResNets and
  WideResNets), dropout with rate ``p`` is applied to the penultimate features
  ``forward_head(features, pre_logits=True)`` and only the classifier
  ``get_classifier()`` is run ``T`` times: last-layer MC-dropout. The cue stays
  meaningful for a model that has no dropout of its own.

``auto`` picks ``head`` when the model has dropout layers and a timm-style
head, ``modules`` when it has dropout layers but no such head, and ``features``
when it has no dropout layers. Only layers with a rate ``p > 0`` count: a
model trained with ``--drop-rate 0`` (the default) has none, whatever its
architecture holds.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ades_core.config import CueOptions
from ades_core.errors import InputError
from ades_core.model_mode import autocast_for, eval_mode
from ades_core.cue_context import CueContext
from ades_core.registries import CUES

MODES = ("auto", "modules", "head", "features")
_DROPOUT_TYPES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)


def dropout_layers(model: nn.Module) -> list[nn.Module]:
    """The ``nn.Dropout*`` submodules of ``model`` that drop anything (rate ``p > 0``).

    A layer built with ``p = 0`` (``ades_cnn_small`` and timm models trained
    with ``--drop-rate 0``, the default) is the identity in train mode too:
    sampling it would give ``T`` identical passes and a cue that is 0 for every
    sample, so such layers do not count as dropout.
    """
    return [m for m in model.modules() if isinstance(m, _DROPOUT_TYPES) and float(m.p) > 0]


def probability_variance(probs: Tensor) -> Tensor:
    """``(T, B, K)`` softmax probabilities -> ``(B,)`` mean over classes of the variance over T."""
    return probs.var(dim=0, correction=0).mean(dim=1)


class MCDropoutUncertainty:
    """Mean over classes of the variance of softmax probabilities over ``samples`` passes."""

    name = "mcdropout"

    def __init__(self, *, samples: int = 3, p: float = 0.3, mode: str = "auto") -> None:
        if samples < 2:
            raise ValueError(f"mcdropout needs at least 2 samples, got {samples}")
        if mode not in MODES:
            raise ValueError(f"mcdropout mode {mode!r} is not one of: {', '.join(MODES)}")
        self.samples = samples
        self.p = p
        self.mode = mode

    def resolved_mode(self, model: nn.Module) -> str:
        if self.mode != "auto":
            return self.mode
        if not dropout_layers(model):
            return "features"
        has_head = hasattr(model, "forward_features") and hasattr(model, "forward_head")
        return "head" if has_head else "modules"

    @torch.no_grad()
    def __call__(self, ctx: CueContext) -> Tensor:
        model = ctx.model
        mode = self.resolved_mode(model)
        if mode in ("modules", "head") and not dropout_layers(model):
            raise InputError(
                f"mcdropout mode {mode!r} needs a model with nn.Dropout layers of rate p > 0 "
                "(train it with --drop-rate > 0); use mode 'features' or 'auto'"
            )
        if mode == "features" and not hasattr(model, "get_classifier"):
            raise InputError(
                f"mcdropout mode 'features' needs a timm-style model with get_classifier(); "
                f"{type(model).__name__} has none"
            )
        features = ctx.features if mode != "modules" else None  # the shared pass, before eval mode
        with eval_mode(model), autocast_for(ctx.x, ctx.autocast_dtype):
            if mode == "features":
                pre_logits = model.forward_head(features, pre_logits=True)
                head = model.get_classifier()
                passes = [head(F.dropout(pre_logits, self.p, training=True)) for _ in range(self.samples)]
            else:
                for layer in dropout_layers(model):
                    layer.train(True)
                if mode == "head":
                    passes = [model.forward_head(features) for _ in range(self.samples)]
                else:
                    passes = [model(ctx.x) for _ in range(self.samples)]
        return probability_variance(torch.softmax(torch.stack(passes).float(), dim=-1))


@CUES.register(
    "mcdropout",
    description="MC-dropout uncertainty: mean class variance of softmax over T passes",
)
def mcdropout_cue(options: CueOptions) -> MCDropoutUncertainty:
    return MCDropoutUncertainty(
        samples=options.mc_samples, p=options.mc_dropout_p, mode=options.mc_mode
    )
