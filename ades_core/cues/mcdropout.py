"""The ``mcdropout`` cue: MC-dropout uncertainty.

``u(x) = mean_k Var_t[ softmax(f_t(x))_k ]`` over ``T`` stochastic passes
``f_1..f_T`` (population variance, ``correction=0``), a value in
``[0, 0.25]``. Two ways to make the passes stochastic:

* ``modules``: the model's own ``nn.Dropout*`` layers are switched to train
  mode (everything else, BN included, stays in eval), and ``T`` full forward
  passes are run. This is the paper's definition.
* ``features``: for models without dropout layers (most CIFAR ResNets and
  WideResNets), dropout with rate ``p`` is applied to the penultimate features
  ``forward_head(forward_features(x), pre_logits=True)`` and only the
  classifier ``get_classifier()`` is run ``T`` times. This is MC-dropout on the
  last layer ("last-layer dropout"): the backbone runs once, and the cue stays
  meaningful for a model that has no dropout of its own.

``auto`` picks ``modules`` when the model has at least one dropout layer,
``features`` otherwise.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ades_core.config import CueOptions
from ades_core.model_mode import autocast_for, eval_mode
from ades_core.protocols import CueContext
from ades_core.registries import CUES

_DROPOUT_TYPES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)


def dropout_layers(model: nn.Module) -> list[nn.Module]:
    """The ``nn.Dropout*`` submodules of ``model``."""
    return [m for m in model.modules() if isinstance(m, _DROPOUT_TYPES)]


def probability_variance(probs: Tensor) -> Tensor:
    """``(T, B, K)`` softmax probabilities -> ``(B,)`` mean over classes of the variance over T."""
    return probs.var(dim=0, correction=0).mean(dim=1)


class MCDropoutUncertainty:
    """Mean over classes of the variance of softmax probabilities over ``samples`` passes."""

    name = "mcdropout"

    def __init__(self, *, samples: int = 3, p: float = 0.3, mode: str = "auto") -> None:
        if samples < 2:
            raise ValueError(f"mcdropout needs at least 2 samples, got {samples}")
        if mode not in ("auto", "modules", "features"):
            raise ValueError(f"mcdropout mode {mode!r} is not one of: auto, modules, features")
        self.samples = samples
        self.p = p
        self.mode = mode

    def resolved_mode(self, model: nn.Module) -> str:
        if self.mode != "auto":
            return self.mode
        return "modules" if dropout_layers(model) else "features"

    @torch.no_grad()
    def __call__(self, ctx: CueContext) -> Tensor:
        model, x = ctx.model, ctx.x
        mode = self.resolved_mode(model)
        with eval_mode(model), autocast_for(x, ctx.autocast_dtype):
            if mode == "modules":
                layers = dropout_layers(model)
                if not layers:
                    raise ValueError(
                        "mcdropout mode 'modules' needs a model with nn.Dropout layers; "
                        "use mode 'features' or 'auto'"
                    )
                for layer in layers:
                    layer.train(True)
                logits = torch.stack([model(x) for _ in range(self.samples)])
            else:
                for method in ("forward_features", "forward_head", "get_classifier"):
                    if not hasattr(model, method):
                        raise ValueError(
                            f"mcdropout mode 'features' needs a timm-style model with {method}(); "
                            f"{type(model).__name__} has none"
                        )
                features = model.forward_head(model.forward_features(x), pre_logits=True)
                head = model.get_classifier()
                logits = torch.stack(
                    [
                        head(nn.functional.dropout(features, self.p, training=True))
                        for _ in range(self.samples)
                    ]
                )
        return probability_variance(torch.softmax(logits.float(), dim=-1))


@CUES.register(
    "mcdropout",
    description="MC-dropout uncertainty: mean class variance of softmax over T passes",
)
def mcdropout_cue(options: CueOptions) -> MCDropoutUncertainty:
    return MCDropoutUncertainty(
        samples=options.mc_samples, p=options.mc_dropout_p, mode=options.mc_mode
    )
