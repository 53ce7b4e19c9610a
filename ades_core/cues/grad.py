"""The ``grad`` cue: L2 norm of the input gradient of the cross-entropy loss."""

from __future__ import annotations

from torch import Tensor

from ades_core.config import CueOptions
from ades_core.protocols import CueContext
from ades_core.registries import CUES


class InputGradNorm:
    """``g(x) = || d CE(f(x), y) / d x ||_2`` per sample, ``(B,)``, in logit-loss units per pixel.

    Uses the context's shared clean forward/backward (eval mode), so ``grad``
    and ``entropy`` together cost one forward and one input-gradient backward.
    """

    name = "grad"

    def __call__(self, ctx: CueContext) -> Tensor:
        return ctx.input_grad.flatten(1).norm(p=2, dim=1)


@CUES.register("grad", description="L2 norm of the input gradient of the cross-entropy loss")
def grad_cue(options: CueOptions) -> InputGradNorm:
    return InputGradNorm()
